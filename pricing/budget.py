"""Monthly budget state, computed from numbers only (the router and the TUI read it).

``spent_usd`` is the month's priced cloud spend (:meth:`pricing.ledger.Ledger.spent`).
The projection assumes the rest of the month goes at the rate so far:
``spent / elapsed_days x days_in_month``, with at least one day elapsed so
the first hours of a month do not project absurd figures.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pricing.errors import PricingError


@dataclass(frozen=True)
class BudgetState:
    monthly_usd: float | None
    spent_usd: float
    remaining_usd: float | None
    fraction: float | None
    over_budget: bool
    warnings_crossed: list[float] = field(default_factory=list)
    projected_month_end_usd: float = 0.0

    @property
    def highest_warning(self) -> float | None:
        return max(self.warnings_crossed) if self.warnings_crossed else None


def budget_state(
    monthly_usd: float | None,
    spent_usd: float,
    warn_at: Sequence[float] = (0.5, 0.8, 1.0),
    *,
    elapsed_days: float,
    days_in_month: int,
) -> BudgetState:
    """The state for a cap (None: no cap), the spend so far and the month's progress."""
    if not math.isfinite(spent_usd) or spent_usd < 0:
        raise PricingError(f"spent must be a non-negative amount, got {spent_usd!r}")
    if monthly_usd is not None and (not math.isfinite(monthly_usd) or monthly_usd < 0):
        raise PricingError(f"the monthly budget must be >= 0 USD, got {monthly_usd!r}")
    if days_in_month <= 0:
        raise PricingError("days_in_month must be positive")
    elapsed = min(max(elapsed_days, 1.0), float(days_in_month))
    projected = spent_usd / elapsed * days_in_month
    if monthly_usd is None:
        return BudgetState(None, spent_usd, None, None, False, [], projected)
    remaining = max(monthly_usd - spent_usd, 0.0)
    if monthly_usd > 0:
        fraction: float | None = spent_usd / monthly_usd
    else:
        fraction = math.inf if spent_usd > 0 else None
    # A cap of 0 means "no cloud spend at all": it is reached from the start.
    crossed = sorted(t for t in warn_at if spent_usd >= t * monthly_usd)
    over = spent_usd >= monthly_usd
    return BudgetState(monthly_usd, spent_usd, remaining, fraction, over, crossed, projected)


def month_progress(month: str, now: dt.datetime) -> tuple[float, int]:
    """(elapsed days, days in month) of a ``YYYY-MM`` month at ``now`` (UTC).

    A past month is fully elapsed; a future one has not started (0 days).
    """
    year, mon = (int(part) for part in month.split("-"))
    days = calendar.monthrange(year, mon)[1]
    start = dt.datetime(year, mon, 1, tzinfo=dt.UTC)
    now_utc = now.astimezone(dt.UTC) if now.tzinfo else now.replace(tzinfo=dt.UTC)
    elapsed = (now_utc - start).total_seconds() / 86400.0
    return min(max(elapsed, 0.0), float(days)), days


def budget_for_month(
    monthly_usd: float | None,
    spent_usd: float,
    warn_at: Sequence[float],
    month: str,
    now: dt.datetime,
) -> BudgetState:
    elapsed, days = month_progress(month, now)
    return budget_state(monthly_usd, spent_usd, warn_at, elapsed_days=elapsed, days_in_month=days)
