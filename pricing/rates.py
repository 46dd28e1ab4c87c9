"""Rates: the prices of one model, in USD per 1M tokens, and where they came from."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pricing.errors import PricingError

RATE_KEYS: tuple[str, ...] = ("input", "output", "cached_input", "cache_write", "reasoning")


@dataclass(frozen=True)
class Rates:
    """USD per 1M tokens for one model.

    ``cached_input``, ``cache_write`` and ``reasoning`` are None when the source
    names no separate rate: cached reads and cache writes are then billed at
    ``input`` and reasoning at ``output`` (what providers without a separate
    rate charge). ``sheet`` and ``as_of`` name the source of the *last* layer
    that set any of these numbers, so a ledger row can say which prices it used.
    """

    model: str
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    sheet: str = ""
    as_of: str | None = None

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
    def effective_reasoning(self) -> float:
        return self.output if self.reasoning is None else self.reasoning

    def as_dict(self) -> dict[str, float | None]:
        return {key: getattr(self, key) for key in RATE_KEYS}

    def updated(self, values: Mapping[str, Any], *, sheet: str, as_of: str | None) -> Rates:
        """These rates with some replaced (a later layer that sets only some keys)."""
        changes: dict[str, Any] = {key: values[key] for key in RATE_KEYS if key in values}
        return replace(self, **changes, sheet=sheet, as_of=as_of)


def rates_from_mapping(
    model: str, values: Mapping[str, Any], *, sheet: str, as_of: str | None, where: str
) -> dict[str, float | None]:
    """Check a ``{input, output, cached_input, ...}`` mapping from a sheet or override.

    Returns only the keys present, as floats; ``where`` names the file or config
    key for the error message.
    """
    unknown = sorted(set(values) - set(RATE_KEYS) - {"note", "source", "verified"})
    if unknown:
        raise PricingError(
            f"{where}: {model}: unknown price key {unknown[0]!r}; "
            f"use {', '.join(RATE_KEYS)} (USD per 1M tokens)"
        )
    out: dict[str, float | None] = {}
    for key in RATE_KEYS:
        if key not in values:
            continue
        raw = values[key]
        if raw is None and key not in ("input", "output"):
            out[key] = None
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise PricingError(
                f"{where}: {model}.{key}: {raw!r} is not a number (USD per 1M tokens)"
            )
        if not math.isfinite(raw) or raw < 0:
            raise PricingError(f"{where}: {model}.{key}: must be >= 0 USD per 1M tokens")
        out[key] = float(raw)
    return out
