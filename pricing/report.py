"""The monthly cost report: totals and breakdowns of one month of the ledger.

:func:`build_report` reads the ledger's monthly cube (``ledger_cube``: the
rows summed in SQL by project x route x model x task x day x reference model,
kept current by triggers, see :mod:`pricing.ledger`), a few thousand cells
however many rows the month holds, and folds the cells into the breakdowns.
:func:`build_report_from_rows` does the same from ``LedgerRow`` objects (pure,
for tests and callers without a database); both produce the same
:class:`MonthReport`. Rendering lives in :mod:`pricing.report_render`.

Money: ``cost_usd`` sums priced rows only; unpriced rows are counted apart
(``unpriced_requests``), never as $0. ``savings_usd`` is, over rows priced both
ways, the reference model's cost minus the actual cost (what routing saved).

Outcomes: ``ok`` counts answered requests only; ``refused`` ones (the router sent nothing;
their rows say status ok, route refused) are counted apart, like errors and cancellations.

Savings: ``compared_requests`` are the requests priced both ways (their own price and the
reference model's are known); ``compared_reference_usd`` and ``compared_cost_usd`` are those
requests' two costs, whose difference is ``savings_usd``. Reports state a saving only over
them, never against a reference cost that includes requests without a price of their own.
These four figures are derived per cube cell (one model, reference model and day: its
requests are priced, or not, alike), not stored.

Interrupted work: ``interrupted`` counts requests whose process died mid-way
(their usage is what was known then, estimated) and ``started`` those still
running; both are apart from ``ok``/``errors``/``cancelled``.

Estimates: ``estimated_requests`` counts rows whose token counts were estimated
(no usage reported), so a group's tokens and reference cost include estimates
when it is above 0; ``estimated_cloud_requests`` counts the cloud ones among
them, whose cost was priced from those estimates (local cost comes from energy
and time). Renderers mark such figures (:mod:`pricing.report_render`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pricing.budget import BudgetState
from pricing.ledger import CUBE_MEASURES_ALL, Ledger, LedgerRow, check_month

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
    estimated_requests: int = 0
    estimated_cloud_requests: int = 0
    # Write-ahead rows: still running, or left by a process that died (see pricing.recovery).
    started: int = 0
    interrupted: int = 0
    # Derived from the cells, not cube measures (see the module docstring).
    refused: int = 0
    compared_requests: int = 0
    compared_reference_usd: float = 0.0
    compared_cost_usd: float = 0.0

    @property
    def failed(self) -> int:
        """Requests that ran but gave no complete answer (error, cancelled, interrupted)."""
        return self.errors + self.cancelled + self.interrupted

    def outcomes(self) -> str:
        """``12 ok, 1 refused, 2 error, 1 cancelled, 1 interrupted, 1 running``: each
        outcome apart (zeros left out, but ok)."""
        parts = [f"{self.ok:,} ok"]
        for count, label in (
            (self.refused, "refused"),
            (self.errors, "error"),
            (self.cancelled, "cancelled"),
            (self.interrupted, "interrupted"),
            (self.started, "running"),
        ):
            if count:
                parts.append(f"{count:,} {label}")
        return ", ".join(parts)

    @property
    def saving_known(self) -> bool:
        """Some requests were priced both ways, so a saving can be stated."""
        return self.compared_requests > 0

    @property
    def tokens_estimated(self) -> bool:
        """Its token counts (and the reference cost priced from them) include estimates."""
        return self.estimated_requests > 0

    @property
    def cost_estimated(self) -> bool:
        """Its cost includes cloud requests priced from estimated token counts."""
        return self.estimated_cloud_requests > 0

    def as_dict(self) -> dict[str, int | float]:
        return {f: getattr(self, f) for f in _BUCKET_FIELDS}


_BUCKET_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Bucket))
_FLOAT_FIELDS = frozenset(f.name for f in fields(Bucket) if f.type in ("float", float))


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

_CUBE_SQL = (
    "SELECT project, route, model, task, day, reference_model, "
    + ", ".join(name for name, _, _ in CUBE_MEASURES_ALL)
    + " FROM ledger_cube WHERE {where} AND requests != 0"
)
_DERIVED = ("refused", "compared_requests", "compared_reference_usd", "compared_cost_usd")
_CUBE_FIELDS = tuple(name for name, _, _ in CUBE_MEASURES_ALL)
if (*_CUBE_FIELDS, *_DERIVED) != _BUCKET_FIELDS:  # pragma: no cover
    raise ImportError("pricing.report: Bucket fields and the ledger cube's measures disagree")


def build_report(
    source: Ledger | sqlite3.Connection,
    month: str,
    project: str | None = None,
    *,
    budget: BudgetState | None = None,
    budget_project: str | None = None,
    now: dt.datetime | None = None,
) -> MonthReport:
    """The report of ``month`` (``YYYY-MM``, UTC), read from the ledger's monthly cube."""
    check_month(month)
    conn = source.conn if isinstance(source, Ledger) else source
    where = "month = ?" if project is None else "month = ? AND project = ?"
    params: tuple[Any, ...] = (month,) if project is None else (month, project)
    acc = _Accumulator()
    for record in conn.execute(_CUBE_SQL.format(where=where), params):
        acc.add((record[0], record[1], record[2], record[3], record[4]), record[5], record[6:])
    return acc.finish(month, project, budget, budget_project, now)


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
    acc = _Accumulator()
    for row in rows:
        if row.month != month or (project is not None and row.project != project):
            continue
        key: CubeKey = (row.project, row.route, row.model or "", row.task or "", row.day)
        acc.add(key, row.reference_model or "", _measures_of(row))
    return acc.finish(month, project, budget, budget_project, now)


def _measures_of(row: LedgerRow) -> tuple[int | float, ...]:
    """One row's contribution, exactly as the cube's triggers compute it."""
    savings = (
        row.counterfactual_usd - row.cost_usd
        if row.counterfactual_usd is not None and row.cost_usd is not None
        else 0.0
    )
    return (
        1,
        int(row.status == "ok"),
        int(row.status == "error"),
        int(row.status == "cancelled"),
        row.input_tokens,
        row.cached_input_tokens,
        row.cache_write_tokens,
        row.output_tokens,
        row.reasoning_tokens,
        row.cost_usd or 0.0,
        int(row.cost_usd is None and row.route != "refused"),
        row.cost_electricity_usd or 0.0,
        row.cost_amortization_usd or 0.0,
        row.counterfactual_usd or 0.0,
        savings,
        row.energy_j or 0.0,
        row.duration_s or 0.0,
        int(row.usage_estimated),
        int(row.usage_estimated and row.route == "cloud"),
        int(row.status == "started"),
        int(row.status == "interrupted"),
    )


class _Accumulator:
    """Folds cube cells into the five breakdowns with plain lists (fast for 10^4 cells)."""

    def __init__(self) -> None:
        self.groups: list[dict[str, list[float]]] = [{} for _ in range(5)]
        self.total = [0.0] * len(_BUCKET_FIELDS)
        self.local_by_day: dict[str, float] = {}
        self.cloud_by_day: dict[str, float] = {}
        self.references: set[str] = set()

    def add(self, key: CubeKey, reference: str, measures: Sequence[int | float]) -> None:
        values = _with_derived(key[1], reference, measures)
        width = len(values)
        total = self.total
        for i in range(width):
            total[i] += values[i]
        for index, part in enumerate(key):
            group = self.groups[index]
            name = part or "(none)"
            sums = group.get(name)
            if sums is None:
                group[name] = list(values)
            else:
                for i in range(width):
                    sums[i] += values[i]
        cost = float(values[_COST])
        route, day = key[1], key[4]
        if route == "local":
            self.local_by_day[day] = self.local_by_day.get(day, 0.0) + cost
        elif route == "cloud":
            self.cloud_by_day[day] = self.cloud_by_day.get(day, 0.0) + cost
        if reference:
            self.references.add(reference)

    def finish(
        self,
        month: str,
        project: str | None,
        budget: BudgetState | None,
        budget_project: str | None,
        now: dt.datetime | None,
    ) -> MonthReport:
        buckets = [{k: _bucket(v) for k, v in group.items()} for group in self.groups]
        by_project, by_route, by_model, by_task, by_day = buckets

        def by_cost(group: dict[str, Bucket]) -> tuple[tuple[str, Bucket], ...]:
            return tuple(
                sorted(group.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].requests, kv[0]))
            )

        year, mon = (int(p) for p in month.split("-"))
        days = calendar.monthrange(year, mon)[1]
        daily = tuple(
            DaySpend(d, self.local_by_day.get(d, 0.0), self.cloud_by_day.get(d, 0.0))
            for d in (f"{month}-{i:02d}" for i in range(1, days + 1))
        )
        route_order = {"cloud": 0, "local": 1, "refused": 2}
        generated = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        return MonthReport(
            month=month,
            project=project,
            generated_at=generated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            total=_bucket(self.total),
            by_project=by_cost(by_project),
            by_model=by_cost(by_model),
            by_route=tuple(sorted(by_route.items(), key=lambda kv: route_order.get(kv[0], 9))),
            by_task=by_cost(by_task),
            by_day=tuple(sorted(by_day.items())),
            daily=daily,
            reference_models=tuple(sorted(self.references)),
            budget=budget,
            budget_project=budget_project,
        )


_COST = _BUCKET_FIELDS.index("cost_usd")
_AT = {name: _BUCKET_FIELDS.index(name) for name in _BUCKET_FIELDS}


def _with_derived(route: str, reference: str, measures: Sequence[int | float]) -> list[float]:
    """A cell's measures, ``ok`` without refusals, and the derived figures appended."""
    values = [float(v) for v in measures]
    at = _AT
    requests = values[at["requests"]]
    refused = requests if route == "refused" else 0.0
    if refused:
        values[at["ok"]] = 0.0
    tokens = values[at["input_tokens"]] + values[at["output_tokens"]]
    # Its reference price is known when it came to something (or there was nothing to price).
    reference_known = bool(reference) and (values[at["counterfactual_usd"]] > 0 or tokens == 0)
    compared = (
        requests
        if route != "refused" and reference_known and values[at["unpriced_requests"]] == 0
        else 0.0
    )
    if compared:
        return [*values, refused, compared, values[at["counterfactual_usd"]], values[_COST]]
    return [*values, refused, 0.0, 0.0, 0.0]


_INTEGER_FIELDS = frozenset(f for f in _BUCKET_FIELDS if f not in _FLOAT_FIELDS)


def _bucket(values: Sequence[int | float]) -> Bucket:
    typed: dict[str, Any] = {
        name: int(v) if name in _INTEGER_FIELDS else float(v)
        for name, v in zip(_BUCKET_FIELDS, values, strict=True)
    }
    return Bucket(**typed)


def render(report: MonthReport, fmt: str) -> str:
    """Render as ``table``, ``csv``, ``json``, ``md`` or ``html`` (:mod:`pricing.report_render`)."""
    from pricing.report_render import render as _render

    return _render(report, fmt)
