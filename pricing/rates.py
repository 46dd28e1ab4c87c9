"""Rates: the prices of one model, in USD per 1M tokens, and where they came from.

A model's rates may depend on the request: on its prompt size (:class:`Tier`, LiteLLM's
``*_above_200k_tokens`` keys: the *whole* request is billed at the tier's rates once the
prompt passes the threshold, as the providers bill it) and on its UTC start time
(:class:`pricing.windows.Window`, peak/off-peak prices). :meth:`Rates.for_request` picks
the rates that applied; the result names its tier and window so a ledger row can say so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pricing.errors import PricingError

if TYPE_CHECKING:
    from pricing.windows import Window

RATE_KEYS: tuple[str, ...] = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
)
# Keys of a sheet's model entry that are not rates.
ENTRY_KEYS: frozenset[str] = frozenset({"note", "source", "verified", "tiers", "windows"})

RateValues = tuple[tuple[str, float | None], ...]


@dataclass(frozen=True)
class Tier:
    """The rates that replace the base ones when a request's prompt (all of it, cached
    parts included) is longer than ``above_tokens``; rates it does not name stay."""

    above_tokens: int
    values: RateValues

    @property
    def name(self) -> str:
        n = self.above_tokens
        label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        return f"above_{label}_tokens"


@dataclass(frozen=True)
class Rates:
    """USD per 1M tokens for one model.

    ``cached_input``, ``cache_write`` and ``reasoning`` are None when the source
    names no separate rate: cached reads and cache writes are then billed at
    ``input`` and reasoning at ``output`` (what providers without a separate
    rate charge); a 1-hour cache write without its own rate at ``cache_write``.
    ``sheet`` and ``as_of`` name the source of the *last* layer that set any of
    these numbers, so a ledger row can say which prices it used. ``tier`` and
    ``window`` name what :meth:`for_request` applied (None: the base rates).
    """

    model: str
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    sheet: str = ""
    as_of: str | None = None
    cache_write_1h: float | None = None
    tiers: tuple[Tier, ...] = ()
    windows: tuple[Window, ...] = ()
    tier: str | None = None
    window: str | None = None

    def __post_init__(self) -> None:
        for key in RATE_KEYS:
            value = getattr(self, key)
            if value is None and key in ("input", "output"):
                raise PricingError(f"{self.model}: the {key} rate is required")
            if value is not None and (not math.isfinite(value) or value < 0):
                raise PricingError(f"{self.model}: the {key} rate must be >= 0, got {value!r}")

    @property
    def effective_cached_input(self) -> float:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def effective_cache_write(self) -> float:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def effective_cache_write_1h(self) -> float:
        return self.effective_cache_write if self.cache_write_1h is None else self.cache_write_1h

    @property
    def effective_reasoning(self) -> float:
        return self.output if self.reasoning is None else self.reasoning

    def as_dict(self) -> dict[str, float | None]:
        return {key: getattr(self, key) for key in RATE_KEYS}

    def updated(self, values: Mapping[str, Any], *, sheet: str, as_of: str | None) -> Rates:
        """These rates with some replaced (a later layer that sets only some keys);
        ``tiers``/``windows`` given by the layer replace the earlier ones."""
        changes: dict[str, Any] = {key: values[key] for key in RATE_KEYS if key in values}
        for key in ("tiers", "windows"):
            if key in values:
                changes[key] = values[key]
        return replace(self, **changes, sheet=sheet, as_of=as_of)

    def for_request(self, prompt_tokens: int | None, at: dt.datetime | None) -> Rates:
        """The rates one request pays: the time window its UTC start ``at`` falls in (if
        any), then the highest tier its ``prompt_tokens`` pass. ``prompt_tokens`` None
        (a month summed, not one request) and ``at`` None keep the base rates."""
        rates = self
        if at is not None:
            for window in self.windows:
                if window.contains(at):
                    changes: dict[str, Any] = dict(window.values)
                    rates = replace(rates, **changes, window=window.name)
                    break
        if prompt_tokens is not None:
            passed = [t for t in self.tiers if prompt_tokens > t.above_tokens]
            if passed:
                top = max(passed, key=lambda t: t.above_tokens)
                tiered: dict[str, Any] = dict(top.values)
                rates = replace(rates, **tiered, tier=top.name)
        return rates


def rates_from_mapping(
    model: str, values: Mapping[str, Any], *, sheet: str, as_of: str | None, where: str
) -> dict[str, Any]:
    """Check a ``{input, output, cached_input, ..., tiers, windows}`` mapping from a sheet
    or override.

    Returns only the keys present: rates as floats, ``tiers`` as :class:`Tier` and
    ``windows`` as :class:`pricing.windows.Window` tuples; ``where`` names the file or
    config key for the error message.
    """
    unknown = sorted(set(values) - set(RATE_KEYS) - ENTRY_KEYS)
    if unknown:
        raise PricingError(
            f"{where}: {model}: unknown price key {unknown[0]!r}; "
            f"use {', '.join(RATE_KEYS)} (USD per 1M tokens), tiers or windows"
        )
    out: dict[str, Any] = dict(rate_values(model, values, where=where))
    if "tiers" in values:
        out["tiers"] = parse_tiers(model, values["tiers"], where=where)
    if "windows" in values:
        from pricing.windows import parse_windows

        out["windows"] = parse_windows(model, values["windows"], where=where)
    return out


def rate_values(model: str, values: Mapping[str, Any], *, where: str) -> RateValues:
    """The rate keys of ``values`` checked as USD per 1M tokens (others ignored)."""
    out: list[tuple[str, float | None]] = []
    for key in RATE_KEYS:
        if key not in values:
            continue
        raw = values[key]
        if raw is None and key not in ("input", "output"):
            out.append((key, None))
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise PricingError(
                f"{where}: {model}.{key}: {raw!r} is not a number (USD per 1M tokens)"
            )
        if not math.isfinite(raw) or raw < 0:
            raise PricingError(f"{where}: {model}.{key}: must be >= 0 USD per 1M tokens")
        out.append((key, float(raw)))
    return tuple(out)


def parse_tiers(model: str, raw: Any, *, where: str) -> tuple[Tier, ...]:
    """``tiers: [{above: 200000, input: 6, output: 22.5}, ...]`` (tokens of the prompt)."""
    if not isinstance(raw, list):
        raise PricingError(
            f"{where}: {model}.tiers: a list like [{{above: 200000, input: 6, output: 22.5}}]"
        )
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        key = f"{model}.tiers[{i}]"
        if not isinstance(item, dict):
            raise PricingError(f"{where}: {key}: a mapping with 'above' and rates")
        above = item.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
            raise PricingError(f"{where}: {key}.above: prompt tokens, a whole number > 0")
        extra = sorted(set(item) - set(RATE_KEYS) - {"above"})
        if extra:
            raise PricingError(f"{where}: {key}: unknown key {extra[0]!r}")
        tiers.append(Tier(above, rate_values(key, item, where=where)))
    if len({t.above_tokens for t in tiers}) != len(tiers):
        raise PricingError(f"{where}: {model}.tiers: two tiers start at the same size")
    return tuple(sorted(tiers, key=lambda t: t.above_tokens))
