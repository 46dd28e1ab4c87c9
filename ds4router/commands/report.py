"""``ds4router report``: a month of the cost ledger as table, csv, json, md or html."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ds4router.commands.common import write_output
from ds4router.errors import Ds4RouterError

if TYPE_CHECKING:
    from ds4router.config.loader import LoadedConfig
    from pricing.budget import BudgetState
    from pricing.clients import ClientTotals
    from pricing.ledger import Ledger
    from pricing.report import MonthReport

FORMATS = ("table", "csv", "json", "md", "html")


@click.command("report")
@click.option("--month", default=None, metavar="YYYY-MM", help="Month (UTC); default: this month.")
@click.option(
    "--project",
    "project_name",
    default=None,
    metavar="P",
    help="Only this project's requests (default: all projects).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE instead of standard output.",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="AGENT[:DIR]",
    help="First add an agent's logged requests to the ledger as imported rows: claude-code "
    "(~/.claude/projects) or codex (~/.codex/sessions), optionally :DIR. Repeatable.",
)
@click.pass_context
def command(
    ctx: click.Context,
    month: str | None,
    project_name: str | None,
    fmt: str,
    output: Path | None,
    imports: tuple[str, ...],
) -> None:
    """Monthly cost report: totals, breakdowns, savings, budget, unpriced requests."""
    from ds4router import paths
    from ds4router.config import load_config
    from pricing.budget import budget_for_month
    from pricing.clients import client_totals
    from pricing.errors import PricingError
    from pricing.ledger import Ledger, check_month
    from pricing.report import build_report_from_rows, render

    now = dt.datetime.now(dt.UTC)
    month = month or now.strftime("%Y-%m")
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    loaded = load_config(obj.get("project"))
    budget_cfg = loaded.config.budget
    budget_project = project_name or loaded.project_name
    db_path = paths.database_path()
    try:
        check_month(month)
        if imports:
            _import(imports, db_path, loaded)
        if db_path.exists():
            with Ledger(db_path) as ledger:
                spent = ledger.spent(month, budget_project)
                budget = budget_for_month(
                    budget_cfg.monthly_usd, spent, budget_cfg.warn_at, month, now
                )
                report = _month_report(ledger, month, project_name, budget, budget_project, now)
                clients = client_totals(ledger.conn, month, project_name)
        else:
            # No ledger yet: an empty report, without creating the database.
            budget = budget_for_month(budget_cfg.monthly_usd, 0.0, budget_cfg.warn_at, month, now)
            report = build_report_from_rows(
                [], month, project_name, budget=budget, budget_project=budget_project, now=now
            )
            clients = ()
        text = _with_clients(render(report, fmt), clients, fmt)
    except PricingError as exc:
        raise Ds4RouterError(str(exc)) from None
    write_output(text, output, f"the {month} report ({fmt})")


def _with_clients(text: str, clients: tuple[ClientTotals, ...], fmt: str) -> str:
    """The report with its by-client breakdown (agents through ``ds4router serve``)."""
    from pricing.clients import render_clients

    if not clients:
        return text
    if fmt == "json":
        data = json.loads(text)
        data["by_client"] = [c.as_dict() for c in clients]
        return json.dumps(data, indent=2)
    if fmt in ("table", "md"):
        return text.rstrip("\n") + "\n\n" + render_clients(clients, fmt)
    return text


def _month_report(
    ledger: Ledger,
    month: str,
    project_name: str | None,
    budget: BudgetState,
    budget_project: str,
    now: dt.datetime,
) -> MonthReport:
    """The month from the summary table, or from the rows when the two disagree."""
    from pricing.repair import cube_disagreements
    from pricing.report import build_report, build_report_from_rows

    disagree = cube_disagreements(ledger.conn, month)
    if not disagree:
        return build_report(
            ledger, month, project_name, budget=budget, budget_project=budget_project, now=now
        )
    # The summary is a cache of the rows: when it is wrong, the rows win.
    click.echo(
        f"warning: the summary table disagrees with the ledger rows ({'; '.join(disagree)}); "
        "this report is summed from the rows; `ds4router db repair` rebuilds the summary",
        err=True,
    )
    rows = ledger.iter_month(month, project_name)
    return build_report_from_rows(
        rows, month, project_name, budget=budget, budget_project=budget_project, now=now
    )


def _import(imports: tuple[str, ...], db_path: Path, loaded: LoadedConfig) -> None:
    """Add each ``AGENT[:DIR]``'s logs to the ledger; a line on stderr says what was added."""
    from ds4router.sessions.turn_costs import price_catalog
    from pricing.agent_import import import_log
    from pricing.agent_logs import DEFAULT_DIRS, read_agent_log
    from pricing.ledger import Ledger

    catalog = price_catalog(loaded)
    for spec in imports:
        origin, _, directory = spec.partition(":")
        if origin not in DEFAULT_DIRS:
            raise Ds4RouterError(
                f"--import {spec}: unknown agent {origin!r}; use claude-code[:DIR] or codex[:DIR]"
            )
        log = read_agent_log(origin, directory or None)
        with Ledger(db_path) as ledger:
            done = import_log(ledger, log, catalog, loaded.config.pricing.reference_model)
        click.echo(done.describe(), err=True)
