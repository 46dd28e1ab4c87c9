"""The cost of one cloud request: token counts times the rates, each part kept.

With ``u = TokenUsage`` and rates in USD per 1M tokens::

    input      = u.uncached_input_tokens  x input
    cached     = u.cached_input_tokens    x (cached_input or input)
    cache_write= u.cache_write_tokens     x (cache_write or input)
    output     = u.visible_output_tokens  x output
    reasoning  = u.reasoning_tokens       x (reasoning or output)
    total      = the sum / 1e6

Cached tokens are part of ``input_tokens`` and are priced once, at the cached
rate; reasoning tokens are part of ``output_tokens`` and are priced once (see
:mod:`pricing.usage`). Without rates the cost is **unpriced**: every amount is
None, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from pricing.rates import Rates
from pricing.usage import TokenUsage

_PER_M = 1_000_000


@dataclass(frozen=True)
class CloudCost:
    """What a request cost on a cloud model (None everywhere when unpriced)."""

    model: str
    usage: TokenUsage
    total_usd: float | None
    input_usd: float | None
    cached_input_usd: float | None
    cache_write_usd: float | None
    output_usd: float | None
    reasoning_usd: float | None
    rates: Rates | None

    @property
    def priced(self) -> bool:
        return self.total_usd is not None

    @property
    def sheet(self) -> str | None:
        return None if self.rates is None else self.rates.sheet

    @property
    def as_of(self) -> str | None:
        return None if self.rates is None else self.rates.as_of


def price_request(usage: TokenUsage, rates: Rates | None, *, model: str | None = None) -> CloudCost:
    """Price one request's usage; ``rates`` None gives an unpriced cost."""
    name = model if model is not None else (rates.model if rates is not None else "")
    if rates is None:
        return CloudCost(name, usage, None, None, None, None, None, None, None)
    input_usd = usage.uncached_input_tokens * rates.input / _PER_M
    cached_usd = usage.cached_input_tokens * rates.effective_cached_input / _PER_M
    write_usd = usage.cache_write_tokens * rates.effective_cache_write / _PER_M
    output_usd = usage.visible_output_tokens * rates.output / _PER_M
    reasoning_usd = usage.reasoning_tokens * rates.effective_reasoning / _PER_M
    total = input_usd + cached_usd + write_usd + output_usd + reasoning_usd
    return CloudCost(
        model=name,
        usage=usage,
        total_usd=total,
        input_usd=input_usd,
        cached_input_usd=cached_usd,
        cache_write_usd=write_usd,
        output_usd=output_usd,
        reasoning_usd=reasoning_usd,
        rates=rates,
    )
