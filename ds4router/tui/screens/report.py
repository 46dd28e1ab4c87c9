"""The Report screen: this month by model, route, task and day, a daily chart, and export.

The report is built by ``pricing.report`` in a worker thread; export renders
it with ``pricing.report_render`` (csv, json, md, html) to a file whose
relative path is taken from the project directory.

Figures that include estimated token counts (requests that reported no usage) carry
the text report's mark (``~``), and the tables gain its ``estimated`` column, only in
a month that has such requests: a month without them looks as it always did.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Input,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from ds4router.tui.clock import steady_cursors
from ds4router.tui.format import column_chart, count, money, short_model
from ds4router.tui.threads import ui_call
from pricing.report_render import ESTIMATE_MARK, marked, share

if TYPE_CHECKING:
    from pricing.report import Bucket, MonthReport

EXPORT_FORMATS = ("csv", "json", "md", "html")
CHART_HEIGHT = 6
TABLES = ("model", "route", "task", "day")
FIGURE_COLUMNS = ("requests", "in tok", "out tok", "cost", "saved")
ESTIMATED_COLUMN = "estimated"


def shift_month(month: str, delta: int) -> str:
    year, mon = (int(p) for p in month.split("-"))
    index = year * 12 + (mon - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def build_month_report(
    db_path: Path, month: str, project: str, cap: float | None, warn_at: Any, now: dt.datetime
) -> MonthReport:
    """The project's report of ``month``, without creating a database that is not there."""
    from pricing.budget import budget_for_month
    from pricing.ledger import Ledger
    from pricing.report import build_report, build_report_from_rows

    if db_path.is_file():
        with Ledger(db_path) as ledger:
            spent = ledger.spent(month, project)
            budget = budget_for_month(cap, spent, warn_at, month, now)
            return build_report(
                ledger, month, project, budget=budget, budget_project=project, now=now
            )
    budget = budget_for_month(cap, 0.0, warn_at, month, now)
    return build_report_from_rows(
        [], month, project, budget=budget, budget_project=project, now=now
    )


def chart_text(report: MonthReport, height: int = CHART_HEIGHT) -> Text:
    """Daily spend as paired columns (cloud, local) a day, with a day axis."""
    cloud = [d.cloud_usd for d in report.daily]
    local = [d.local_usd for d in report.daily]
    values: list[float] = []
    for c, lo in zip(cloud, local, strict=True):
        values += [c, lo, 0.0]
    rows = column_chart(values, height)
    top = max(values, default=0.0)
    text = Text()
    text.append("Daily spend  ", style="bold")
    text.append("█ cloud", style="cyan")
    text.append("  ")
    text.append("█ local", style="green")
    text.append(f"   max/day {money(top) if top else '$0.00'}\n")
    for row in rows:
        for x, ch in enumerate(row):
            text.append(ch, style=("cyan", "green", "")[x % 3])
        text.append("\n")
    axis = "".join(
        f"{int(d.day[-2:]):<3d}" if int(d.day[-2:]) in (1, 5, 10, 15, 20, 25) else "   "
        for d in report.daily
    )
    text.append(axis.rstrip())
    return text


def totals_text(report: MonthReport) -> Text:
    total = report.total
    cloud_estimated = report.route("cloud").cost_estimated
    text = Text()
    text.append(f"cloud {marked(money(report.cloud_usd), cloud_estimated)}", style="bold cyan")
    text.append(" · ")
    text.append(f"local {money(report.local_usd)}", style="bold green")
    ref = ", ".join(short_model(m) for m in report.reference_models)
    saved = marked(money(total.savings_usd), total.tokens_estimated)
    if not total.saving_known:
        saved = "-"  # nothing was priced both ways
    text.append(f" · saved {saved}" + (f" vs {ref}" if ref else ""))
    text.append(f" · {total.requests} requests")
    if total.failed:
        text.append(f" · {total.failed} failed", style="yellow")
    if total.unpriced_requests:
        text.append(f" · {total.unpriced_requests} unpriced", style="yellow")
    if total.tokens_estimated:
        text.append(f" · {total.estimated_requests} estimated ({ESTIMATE_MARK})", style="yellow")
    budget = report.budget
    if budget is not None and budget.monthly_usd is not None:
        share = f" ({budget.fraction * 100:.0f}%)" if budget.fraction is not None else ""
        style = "bold red" if budget.over_budget else ""
        text.append(f" · budget {money(budget.monthly_usd)}{share}", style=style)
    return text


def totals_tooltip(report: MonthReport) -> str:
    """The requests by outcome (refusals and failures apart from ok), the saving's basis
    and what the estimate mark means."""
    total = report.total
    plural = "request" if total.requests == 1 else "requests"
    lines = [f"{total.requests:,} {plural}: {total.outcomes()}"]
    if total.saving_known:
        lines.append(
            f"saved over the {total.compared_requests:,} requests priced both ways "
            f"(reference {money(total.compared_reference_usd)} vs "
            f"{money(total.compared_cost_usd)})"
        )
    words = estimated_words(report)
    return "\n".join([*lines, words] if words else lines)


def estimated_words(report: MonthReport) -> str:
    """What the mark means, as the text report says it (the totals line's tooltip)."""
    total = report.total
    if not total.tokens_estimated:
        return ""
    return (
        f"{total.estimated_requests:,} of {total.requests:,} requests "
        f"({share(total.estimated_requests, total.requests)}) reported no token usage; "
        f"their counts were estimated, and figures marked {ESTIMATE_MARK} include them"
    )


def table_columns(report: MonthReport) -> tuple[str, ...]:
    """The breakdown tables' figure columns: ``estimated`` only in a month that has any."""
    if not report.total.tokens_estimated:
        return FIGURE_COLUMNS
    return (*FIGURE_COLUMNS[:-1], ESTIMATED_COLUMN, FIGURE_COLUMNS[-1])


def bucket_cells(key: str, bucket: Bucket, estimated_column: bool = False) -> tuple[str, ...]:
    """One table row; figures that include estimated token counts carry the mark."""
    tokens_estimated = bucket.tokens_estimated
    cost = marked(money(bucket.cost_usd), bucket.cost_estimated)
    if bucket.unpriced_requests:
        cost += f" + {bucket.unpriced_requests} unpriced"
    saved = marked(money(bucket.savings_usd), tokens_estimated or bucket.cost_estimated)
    estimated = (str(bucket.estimated_requests),) if estimated_column else ()
    return (
        key,
        str(bucket.requests),
        marked(count(bucket.input_tokens), tokens_estimated),
        marked(count(bucket.output_tokens), tokens_estimated),
        cost,
        *estimated,
        saved,
    )


class ReportScreen(Screen[None]):
    """A month of the ledger for the project."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close", id="report.close"),
        Binding("left_square_bracket", "month(-1)", "Prev month", id="report.previous_month"),
        Binding("right_square_bracket", "month(1)", "Next month", id="report.next_month"),
        Binding("ctrl+e", "export", "Export", id="report.export"),
    ]

    def __init__(
        self,
        *,
        db_path: Path,
        project: str,
        project_dir: Path,
        cap: float | None,
        warn_at: Any,
        now: dt.datetime,
    ) -> None:
        super().__init__()
        self.db_path = db_path
        self.project = project
        self.project_dir = project_dir
        self.cap = cap
        self.warn_at = tuple(warn_at)
        self.now = now
        self.month = now.astimezone(dt.UTC).strftime("%Y-%m")
        self.report: MonthReport | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="report-body"):
            yield Static("", id="report-title", classes="screen-title")
            yield Static("", id="report-totals")
            yield Static("", id="report-chart")
            with TabbedContent(id="report-tabs"):
                for name in ("model", "route", "task", "day"):
                    with TabPane(f"By {name}", id=f"tab-{name}"):
                        yield DataTable(id=f"table-{name}", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="export-row"):
                yield Static("Export", classes="label")
                yield Select(
                    [(f, f) for f in EXPORT_FORMATS],
                    value="csv",
                    allow_blank=False,
                    id="export-format",
                )
                yield Input(self._default_path("csv"), id="export-path")
                yield Button("Export", id="export-button", variant="primary")
            yield Static("", id="export-result")
        yield Footer()

    def _default_path(self, fmt: str) -> str:
        return f"ds4router-report-{self.month}.{fmt}"

    def on_mount(self) -> None:
        steady_cursors(self)
        for name in TABLES:
            table = self.query_one(f"#table-{name}", DataTable)
            table.add_columns(name, *FIGURE_COLUMNS)
        self.load()

    def action_month(self, delta: int) -> None:
        self.month = shift_month(self.month, delta)
        self.query_one("#export-path", Input).value = self._default_path(self._format)
        self.load()

    @property
    def _format(self) -> str:
        value = self.query_one("#export-format", Select).value
        return str(value) if isinstance(value, str) else "csv"

    @work(thread=True, exclusive=True, group="report")
    def load(self) -> None:
        report = build_month_report(
            self.db_path, self.month, self.project, self.cap, self.warn_at, self.now
        )
        ui_call(self.app, self.show, report)

    def show(self, report: MonthReport) -> None:
        self.report = report
        self.query_one("#report-title", Static).update(
            Text.assemble(
                ("Report ", "bold"),
                (f"{report.month}", "bold"),
                f" · project {self.project}   ([ and ] change month · Esc closes)",
            )
        )
        totals = self.query_one("#report-totals", Static)
        totals.update(totals_text(report))
        totals.tooltip = totals_tooltip(report)
        self.query_one("#report-chart", Static).update(chart_text(report))
        groups = {
            "model": report.by_model,
            "route": report.by_route,
            "task": report.by_task,
            "day": report.by_day,
        }
        columns = table_columns(report)
        for name, items in groups.items():
            table = self.query_one(f"#table-{name}", DataTable)
            shown = tuple(str(column.label) for column in table.columns.values())[1:]
            if shown != columns:  # a month with estimates, or the first one after it
                table.clear(columns=True)
                table.add_columns(name, *columns)
            else:
                table.clear()
            for key, bucket in items:
                table.add_row(*bucket_cells(key, bucket, ESTIMATED_COLUMN in columns))

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "export-format" and isinstance(event.value, str):
            path_input = self.query_one("#export-path", Input)
            stem = (
                path_input.value.rsplit(".", 1)[0] if "." in path_input.value else path_input.value
            )
            path_input.value = f"{stem}.{event.value}"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-button":
            event.stop()
            self.action_export()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "export-path":
            self.action_export()

    def export_as(self, fmt: str) -> None:
        """Export in ``fmt`` to the default file name (from the command palette)."""
        self.query_one("#export-format", Select).value = fmt
        self.query_one("#export-path", Input).value = self._default_path(fmt)
        self.action_export()

    def action_export(self) -> None:
        raw = self.query_one("#export-path", Input).value.strip()
        if not raw:
            self._export_result("give a file name to export to", error=True)
            return
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.project_dir / path
        self.export(path, self._format)

    @work(thread=True, exclusive=True, group="export")
    def export(self, path: Path, fmt: str) -> None:
        from pricing.errors import PricingError
        from pricing.report import render

        report = self.report
        if report is None:
            ui_call(self.app, self._export_result, "the report is still loading", True)
            return
        try:
            text = render(report, fmt)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except (OSError, PricingError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            ui_call(self.app, self._export_result, f"cannot write {path}: {reason}", True)
            return
        ui_call(
            self.app,
            self._export_result,
            f"wrote the {report.month} report ({fmt}) to {path}",
            False,
        )

    def _export_result(self, message: str, error: bool = False) -> None:
        result = self.query_one("#export-result", Static)
        result.update(message)
        result.set_classes("-error" if error else "-ok")
        self.notify(message, severity="error" if error else "information")
