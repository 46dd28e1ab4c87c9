"""The month at a glance for the sidebar: spend vs budget, savings, local cost.

Read from the ledger in a worker thread (one aggregate query); a missing
database means an empty month, and nothing is created just to look.

Estimates follow the report's rule (:class:`pricing.report.Bucket`): the cloud
spend is an estimate when some cloud requests were priced from estimated token
counts (``cloud_estimated``), the savings when any request's counts were estimated
(``estimated``); the sidebar marks such figures as the reports do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ds4router.config.loader import LoadedConfig


@dataclass(frozen=True)
class MonthFigures:
    month: str
    project: str
    spent_usd: float  # priced cloud spend: what the budget caps
    cap_usd: float | None
    warn_at: tuple[float, ...]
    savings_usd: float
    local_usd: float
    requests: int
    unpriced: int
    reference_models: tuple[str, ...]
    estimated: int = 0  # requests whose token counts were estimated (no usage reported)
    refused: int = 0  # counted apart from the answered ones
    failed: int = 0  # error, cancelled or interrupted
    cloud_estimated: int = 0  # the cloud ones among them: their cost is an estimate too
    local_requests: int = 0  # requests the local engine or a local server ran (not refused)

    @property
    def spent_estimated(self) -> bool:
        return self.cloud_estimated > 0

    @property
    def savings_estimated(self) -> bool:
        return self.estimated > 0


def month_figures(loaded: LoadedConfig, now: dt.datetime, db_path: Path) -> MonthFigures:
    from pricing.ledger import Ledger
    from pricing.report import build_report, build_report_from_rows

    month = now.astimezone(dt.UTC).strftime("%Y-%m")
    project = loaded.project_name
    if db_path.is_file():
        with Ledger(db_path) as ledger:
            report = build_report(ledger, month, project, now=now)
    else:
        report = build_report_from_rows([], month, project, now=now)
    budget = loaded.config.budget
    return MonthFigures(
        month=month,
        project=project,
        spent_usd=report.cloud_usd,
        cap_usd=budget.monthly_usd,
        warn_at=tuple(budget.warn_at),
        savings_usd=report.total.savings_usd,
        local_usd=report.local_usd,
        requests=report.total.requests,
        unpriced=report.total.unpriced_requests,
        reference_models=report.reference_models,
        estimated=report.total.estimated_requests,
        refused=report.total.refused,
        failed=report.total.failed,
        cloud_estimated=report.route("cloud").estimated_cloud_requests,
        local_requests=report.route("local").requests,
    )
