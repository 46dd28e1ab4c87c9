"""Token counts of one request, in one convention whatever the provider reported.

The convention (OpenAI's, which LiteLLM also returns):

* ``input_tokens`` is the **whole prompt**: it *includes* ``cached_input_tokens``
  (read from the provider's prompt cache) and ``cache_write_tokens`` (written to
  it). The part billed at the plain input rate is
  ``input_tokens - cached_input_tokens - cache_write_tokens``
  (:attr:`TokenUsage.uncached_input_tokens`), so a cached token is priced once,
  at the cached rate, never also at the input rate.
* ``output_tokens`` is the **whole completion**: it *includes*
  ``reasoning_tokens``. Reasoning tokens are priced at the model's reasoning
  rate when it has one, else at the output rate; the visible part
  (:attr:`TokenUsage.visible_output_tokens`) at the output rate. They are
  never counted twice.

Providers that report differently (Anthropic's ``input_tokens`` excludes cache
reads and writes; some report reasoning apart from output) are converted by the
``from_*`` constructors below.

``estimated`` says the counts were not reported by whoever ran the request but
counted afterwards (a stream cut before its usage chunk, a proxy that drops it,
a local answer that failed mid-way): costs priced from them are estimates too,
and the ledger and reports say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pricing.errors import PricingError


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one request (see the module docstring for what includes what)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.estimated, bool):
            raise PricingError(f"estimated must be True or False, got {self.estimated!r}")
        for name in (
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cache_write_1h_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PricingError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise PricingError(
                f"cached_input_tokens ({self.cached_input_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed input_tokens ({self.input_tokens}); "
                "input_tokens must count the whole prompt, cached parts included"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise PricingError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed "
                f"cache_write_tokens ({self.cache_write_tokens}), which include them"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise PricingError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens "
                f"({self.output_tokens}); output_tokens must include the reasoning tokens"
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input rate."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens

    @property
    def visible_output_tokens(self) -> int:
        """Completion tokens that are not reasoning."""
        return self.output_tokens - self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            # A sum that includes an estimate is an estimate.
            estimated=self.estimated or other.estimated,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )

    @classmethod
    def from_openai(cls, usage: Any) -> TokenUsage:
        """From an OpenAI/LiteLLM ``usage`` mapping or object.

        Its ``prompt_tokens`` include cached reads and (LiteLLM's normalization of
        Anthropic) cache writes; ``completion_tokens`` include reasoning tokens.
        """
        prompt = _int(_get(usage, "prompt_tokens"))
        completion = _int(_get(usage, "completion_tokens"))
        prompt_details = _get(usage, "prompt_tokens_details") or {}
        completion_details = _get(usage, "completion_tokens_details") or {}
        cached = _int(_get(prompt_details, "cached_tokens"))
        written = _int(
            _get(usage, "cache_creation_input_tokens")
            or _get(prompt_details, "cache_creation_tokens")
        )
        reasoning = _int(_get(completion_details, "reasoning_tokens"))
        # Some gateways report cached reads or writes outside prompt_tokens; widen the
        # prompt rather than reject a real bill.
        prompt = max(prompt, cached + written)
        completion = max(completion, reasoning)
        return cls(prompt, cached, written, completion, reasoning)

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any]) -> TokenUsage:
        """From Anthropic's Messages API usage, whose ``input_tokens`` exclude cache reads
        and writes, and whose ``output_tokens`` already include thinking tokens."""
        plain = _int(usage.get("input_tokens"))
        read = _int(usage.get("cache_read_input_tokens"))
        written = _int(usage.get("cache_creation_input_tokens"))
        output = _int(usage.get("output_tokens"))
        # ``cache_creation`` splits the writes by how long they are kept.
        split = usage.get("cache_creation")
        hour = _int(_get(split, "ephemeral_1h_input_tokens")) if split else 0
        if split and not written:
            written = hour + _int(_get(split, "ephemeral_5m_input_tokens"))
        return cls(
            plain + read + written,
            read,
            written,
            output,
            0,
            cache_write_1h_tokens=min(hour, written),
        )

    @classmethod
    def separate_reasoning(
        cls,
        input_tokens: int,
        output_tokens: int,
        reasoning_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> TokenUsage:
        """For providers (and the local engine) that count reasoning apart from output."""
        return cls(
            input_tokens,
            cached_input_tokens,
            cache_write_tokens,
            output_tokens + reasoning_tokens,
            reasoning_tokens,
        )


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _int(value: Any) -> int:
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PricingError(f"token count {value!r} is not a number") from None
    return max(number, 0)
