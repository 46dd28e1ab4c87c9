"""The monthly cost report: totals and breakdowns of one month of the ledger.

:func:`build_report` aggregates in SQL (one ``GROUP BY`` over the month's rows
into a small cube of project x route x model x task x day cells), then folds
the cube into the breakdowns in Python: a million rows take one scan.
:func:`build_report_from_rows` does the same from ``LedgerRow`` objects (pure,
for tests and callers without a database); both produce the same
:class:`MonthReport`. Rendering lives in :mod:`pricing.report_render`.

Money: ``cost_usd`` sums priced rows only; unpriced rows are counted apart
(``unpriced_requests``), never as $0. ``savings_usd`` is, over rows priced both
ways, the reference model's cost minus the actual cost (what routing saved).
"""

from __future__ import annotations

import calendar
import datetime as dt
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pricing.budget import BudgetState
from pricing.ledger import Ledger, LedgerRow, check_month

CubeKey = tuple[str, str, str, str, str]  # project, route, model, task, day


@dataclass(frozen=True)
class Bucket:
    """Summed figures of a group of requests."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_requests: int = 0
    electricity_usd: float = 0.0
    amortization_usd: float = 0.0
    counterfactual_usd: float = 0.0
    savings_usd: float = 0.0
    energy_j: float = 0.0
    duration_s: float = 0.0

    def __add__(self, other: Bucket) -> Bucket:
        return Bucket(*(getattr(self, f) + getattr(other, f) for f in _BUCKET_FIELDS))

    def as_dict(self) -> dict[str, int | float]:
        return {f: getattr(self, f) for f in _BUCKET_FIELDS}


_BUCKET_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Bucket))


@dataclass(frozen=True)
class DaySpend:
    day: str
    local_usd: float
    cloud_usd: float

    @property
    def total_usd(self) -> float:
        return self.local_usd + self.cloud_usd


@dataclass(frozen=True)
class MonthReport:
    month: str
    project: str | None
    generated_at: str
    total: Bucket
    by_project: tuple[tuple[str, Bucket], ...]
    by_model: tuple[tuple[str, Bucket], ...]
    by_route: tuple[tuple[str, Bucket], ...]
    by_task: tuple[tuple[str, Bucket], ...]
    by_day: tuple[tuple[str, Bucket], ...]
    daily: tuple[DaySpend, ...]
    reference_models: tuple[str, ...]
    budget: BudgetState | None = None
    budget_project: str | None = None

    def route(self, name: str) -> Bucket:
        return dict(self.by_route).get(name, Bucket())

    @property
    def cloud_usd(self) -> float:
        return self.route("cloud").cost_usd

    @property
    def local_usd(self) -> float:
        return self.route("local").cost_usd

    def as_dict(self) -> dict[str, Any]:
        """Plain data (numbers stay numbers) for JSON."""

        def groups(items: tuple[tuple[str, Bucket], ...]) -> list[dict[str, Any]]:
            return [{"key": key, **bucket.as_dict()} for key, bucket in items]

        budget = None
        if self.budget is not None:
            b = self.budget
            budget = {
                "project": self.budget_project,
                "monthly_usd": b.monthly_usd,
                "spent_usd": b.spent_usd,
                "remaining_usd": b.remaining_usd,
                "fraction": b.fraction,
                "over_budget": b.over_budget,
                "warnings_crossed": list(b.warnings_crossed),
                "projected_month_end_usd": b.projected_month_end_usd,
            }
        return {
            "month": self.month,
            "project": self.project,
            "generated_at": self.generated_at,
            "totals": {
                **self.total.as_dict(),
                "cloud_usd": self.cloud_usd,
                "local_usd": self.local_usd,
            },
            "reference_models": list(self.reference_models),
            "budget": budget,
            "by_project": groups(self.by_project),
            "by_model": groups(self.by_model),
            "by_route": groups(self.by_route),
            "by_task": groups(self.by_task),
            "by_day": groups(self.by_day),
            "daily": [
                {"day": d.day, "local_usd": d.local_usd, "cloud_usd": d.cloud_usd}
                for d in self.daily
            ],
        }


# --- building ---------------------------------------------------------------------

_CUBE_SQL = """
SELECT project, route, COALESCE(model, ''), COALESCE(task, ''), day,
       COUNT(*),
       SUM(status = 'ok'), SUM(status = 'error'), SUM(status = 'cancelled'),
       SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens),
       SUM(output_tokens), SUM(reasoning_tokens),
       TOTAL(cost_usd),
       SUM(cost_usd IS NULL AND route != 'refused'),
       TOTAL(cost_electricity_usd), TOTAL(cost_amortization_usd),
       TOTAL(counterfactual_usd),
       TOTAL(CASE WHEN cost_usd IS NOT NULL THEN counterfactual_usd - cost_usd END),
       TOTAL(energy_j), TOTAL(duration_s)
FROM ledger
WHERE {where}
GROUP BY project, route, model, task, day
"""

_REFERENCE_SQL = "SELECT DISTINCT reference_model FROM ledger WHERE {where} AND reference_model IS NOT NULL"


def build_report(
    source: Ledger | sqlite3.Connection,
    month: str,
    project: str | None = None,
    *,
    budget: BudgetState | None = None,
    budget_project: str | None = None,
    now: dt.datetime | None = None,
) -> MonthReport:
    """The report of ``month`` (``YYYY-MM``, UTC), aggregated in SQL."""
    check_month(month)
    conn = source.conn if isinstance(source, Ledger) else source
    where = "month = ?" if project is None else "month = ? AND project = ?"
    params: tuple[Any, ...] = (month,) if project is None else (month, project)
    cube: dict[CubeKey, Bucket] = {}
    for record in conn.execute(_CUBE_SQL.format(where=where), params):
        key: CubeKey = (record[0], record[1], record[2], record[3], record[4])
        cube[key] = Bucket(*(v if v is not None else 0 for v in record[5:]))
    references = tuple(
        sorted(r[0] for r in conn.execute(_REFERENCE_SQL.format(where=where), params))
    )
    return _finish(cube, month, project, references, budget, budget_project, now)


def build_report_from_rows(
    rows: Iterable[LedgerRow],
    month: str,
    project: str | None = None,
    *,
    budget: BudgetState | None = None,
    budget_project: str | None = None,
    now: dt.datetime | None = None,
) -> MonthReport:
    """The same report from rows in memory (rows outside the month/project are skipped)."""
    check_month(month)
    cube: dict[CubeKey, Bucket] = {}
    references: set[str] = set()
    for row in rows:
        if row.month != month or (project is not None and row.project != project):
            continue
        key: CubeKey = (row.project, row.route, row.model or "", row.task or "", row.day)
        cube[key] = cube.get(key, Bucket()) + _bucket_of(row)
        if row.reference_model:
            references.add(row.reference_model)
    return _finish(cube, month, project, tuple(sorted(references)), budget, budget_project, now)


def _bucket_of(row: LedgerRow) -> Bucket:
    priced = row.cost_usd is not None
    return Bucket(
        requests=1,
        ok=int(row.status == "ok"),
        errors=int(row.status == "error"),
        cancelled=int(row.status == "cancelled"),
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        cache_write_tokens=row.cache_write_tokens,
        output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens,
        cost_usd=row.cost_usd or 0.0,
        unpriced_requests=int(not priced and row.route != "refused"),
        electricity_usd=row.cost_electricity_usd or 0.0,
        amortization_usd=row.cost_amortization_usd or 0.0,
        counterfactual_usd=row.counterfactual_usd or 0.0,
        savings_usd=(
            row.counterfactual_usd - row.cost_usd
            if priced and row.counterfactual_usd is not None and row.cost_usd is not None
            else 0.0
        ),
        energy_j=row.energy_j or 0.0,
        duration_s=row.duration_s or 0.0,
    )


def _finish(
    cube: Mapping[CubeKey, Bucket],
    month: str,
    project: str | None,
    references: tuple[str, ...],
    budget: BudgetState | None,
    budget_project: str | None,
    now: dt.datetime | None,
) -> MonthReport:
    groups: list[dict[str, Bucket]] = [{} for _ in range(5)]
    total = Bucket()
    for key, bucket in cube.items():
        total = total + bucket
        for index, part in enumerate(key):
            name = part or "(none)"
            group = groups[index]
            group[name] = group.get(name, Bucket()) + bucket
    by_project, by_route, by_model, by_task, by_day = groups

    def by_cost(group: dict[str, Bucket]) -> tuple[tuple[str, Bucket], ...]:
        return tuple(sorted(group.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].requests, kv[0])))

    local_by_day: dict[str, float] = {}
    cloud_by_day: dict[str, float] = {}
    for (_, route, _, _, day), bucket in cube.items():
        if route == "local":
            local_by_day[day] = local_by_day.get(day, 0.0) + bucket.cost_usd
        elif route == "cloud":
            cloud_by_day[day] = cloud_by_day.get(day, 0.0) + bucket.cost_usd
    year, mon = (int(p) for p in month.split("-"))
    days = calendar.monthrange(year, mon)[1]
    daily = tuple(
        DaySpend(d, local_by_day.get(d, 0.0), cloud_by_day.get(d, 0.0))
        for d in (f"{month}-{i:02d}" for i in range(1, days + 1))
    )
    route_order = {"cloud": 0, "local": 1, "refused": 2}
    generated = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return MonthReport(
        month=month,
        project=project,
        generated_at=generated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        total=total,
        by_project=by_cost(by_project),
        by_model=by_cost(by_model),
        by_route=tuple(sorted(by_route.items(), key=lambda kv: route_order.get(kv[0], 9))),
        by_task=by_cost(by_task),
        by_day=tuple(sorted(by_day.items())),
        daily=daily,
        reference_models=references,
        budget=budget,
        budget_project=budget_project,
    )


def render(report: MonthReport, fmt: str) -> str:
    """Render in ``table``, ``csv``, ``json``, ``md`` or ``html`` (see :mod:`pricing.report_render`)."""
    from pricing.report_render import render as _render

    return _render(report, fmt)
