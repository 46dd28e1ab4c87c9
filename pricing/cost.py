"""The cost of one cloud request: token counts times the rates, each part kept.

With ``u = TokenUsage`` and rates in USD per 1M tokens::

    input      = u.uncached_input_tokens  x input
    cached     = u.cached_input_tokens    x (cached_input or input)
    cache_write= (u.cache_write_tokens - u.cache_write_1h_tokens) x (cache_write or input)
               + u.cache_write_1h_tokens x (cache_write_1h or cache_write or input)
    output     = u.visible_output_tokens  x output
    reasoning  = u.reasoning_tokens       x (reasoning or output)
    total      = the sum / 1e6

Cached tokens are part of ``input_tokens`` and are priced once, at the cached
rate; reasoning tokens are part of ``output_tokens`` and are priced once (see
:mod:`pricing.usage`). Without rates the cost is **unpriced**: every amount is
None, never 0.

The rates are those the request paid (:meth:`pricing.rates.Rates.for_request`): the
time window its start fell in and the prompt-size tier of its whole prompt. A month
summed from many requests (``one_request=False``) cannot be tiered (a tier is a
property of one prompt) and is priced at the base rates; re-price such a month
request by request where the requests are known (imported agent logs are).
"""

from __future__ import annotations

import datetime as dt
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

    @property
    def tier(self) -> str | None:
        """The prompt-size tier that applied (None: the base rates)."""
        return None if self.rates is None else self.rates.tier

    @property
    def window(self) -> str | None:
        """The time-of-day window that applied (None: the base rates)."""
        return None if self.rates is None else self.rates.window


def price_request(
    usage: TokenUsage,
    rates: Rates | None,
    *,
    model: str | None = None,
    at: dt.datetime | None = None,
    one_request: bool = True,
) -> CloudCost:
    """Price one request's usage (started at ``at``, UTC); ``rates`` None gives an
    unpriced cost. ``one_request`` False: ``usage`` is a sum, priced untiered."""
    name = model if model is not None else (rates.model if rates is not None else "")
    if rates is None:
        return CloudCost(name, usage, None, None, None, None, None, None, None)
    rates = rates.for_request(usage.input_tokens if one_request else None, at)
    input_usd = usage.uncached_input_tokens * rates.input / _PER_M
    cached_usd = usage.cached_input_tokens * rates.effective_cached_input / _PER_M
    short_writes = usage.cache_write_tokens - usage.cache_write_1h_tokens
    write_usd = (
        short_writes * rates.effective_cache_write
        + usage.cache_write_1h_tokens * rates.effective_cache_write_1h
    ) / _PER_M
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
