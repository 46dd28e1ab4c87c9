"""The Report screen marks figures that include estimated token counts, as the text report does.

A month with requests that reported no usage: their groups' token figures, the cloud
costs priced from them and the savings carry ``~``, each table gains an ``estimated``
column, and the totals line counts them. A month without any looks as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from textual.widgets import DataTable
from tui_support import SIZE, open_report, record, settle, write_project

from ds4router.tui.app import Ds4RouterApp
from pricing.ledger import LedgerRow
from pricing.report import build_report_from_rows
from pricing.report_render import render_table

MakeApp = Callable[..., Ds4RouterApp]
REFERENCE = "anthropic/claude-opus-4-7"


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 10, tzinfo=dt.UTC)


def seed_estimated() -> list[LedgerRow]:
    """May: gpt-4.1 once measured and once estimated, a local estimate, a measured Opus
    request; April: one measured request."""
    rows = [
        LedgerRow(time=at(5, 2), project="acme", route="cloud", model="openai/gpt-4.1",
                  task="debug", input_tokens=12_000, output_tokens=1_800, cost_usd=0.0384,
                  counterfactual_usd=0.225, reference_model=REFERENCE),
        LedgerRow(time=at(5, 3), project="acme", route="cloud", model="openai/gpt-4.1",
                  task="debug", input_tokens=3_000, output_tokens=700, cost_usd=0.0116,
                  counterfactual_usd=0.0325, reference_model=REFERENCE, usage_estimated=True),
        LedgerRow(time=at(5, 4), project="acme", route="local", model="local/deepseek-v4-flash",
                  task="refactor", input_tokens=8_000, output_tokens=900, cost_usd=0.0021,
                  counterfactual_usd=0.1075, reference_model=REFERENCE, energy_j=3000.0,
                  usage_estimated=True),
        LedgerRow(time=at(5, 6), project="acme", route="cloud", model=REFERENCE,
                  task="architecture", input_tokens=20_000, output_tokens=3_000,
                  cost_usd=0.175, counterfactual_usd=0.175, reference_model=REFERENCE),
        LedgerRow(time=at(4, 28), project="acme", route="cloud", model="openai/gpt-4.1",
                  task="debug", input_tokens=1000, output_tokens=100, cost_usd=0.9),
    ]  # fmt: skip
    record(rows)
    return rows


def text_of(app: Ds4RouterApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def table(app: Ds4RouterApp, name: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column labels, rows by their first cell) of one breakdown table."""
    widget = app.screen.query_one(f"#table-{name}", DataTable)
    labels = [str(column.label) for column in widget.columns.values()]
    rows = [[str(cell) for cell in widget.get_row_at(i)] for i in range(widget.row_count)]
    return labels, {row[0]: row[1:] for row in rows}


async def test_estimated_figures_are_marked_and_counted_like_the_text_report(
    tmp_path: Path, make_app: MakeApp
) -> None:
    rows = seed_estimated()
    project = write_project(tmp_path, "project: acme\n")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_report(pilot, app)

        totals = text_of(app, "#report-totals")
        # cloud 0.0384 + 0.0116 + 0.175, one of them priced from estimated tokens; saved:
        # (0.225 + 0.0325 + 0.1075 + 0.175) - (0.0384 + 0.0116 + 0.0021 + 0.175).
        assert "cloud ~$0.2250" in totals and "local $0.002100" in totals
        assert "saved ~$0.3129" in totals
        assert "4 requests" in totals and "2 estimated (~)" in totals
        tip = str(screen.query_one("#report-totals").tooltip)
        # The requests by outcome first, the saving's basis, then what the mark means.
        assert tip.startswith("4 requests: 4 ok\nsaved over the 4 requests priced both ways")
        assert tip.endswith(
            "\n2 of 4 requests (50%) reported no token usage; their counts were estimated, "
            "and figures marked ~ include them"
        )
        # The text report says the same of this month.
        text = render_table(build_report_from_rows(rows, "2026-05", "acme"))
        assert "2 of 4 requests (50%) reported no token usage" in text

        figures = ["requests", "in tok", "out tok", "cost", "estimated", "saved"]
        labels, by_model = table(app, "model")
        assert labels == ["model", *figures]
        assert by_model["openai/gpt-4.1"] == ["2", "~15.0k", "~2,500", "~$0.0500", "1", "~$0.2075"]
        assert by_model[REFERENCE] == ["1", "20.0k", "3,000", "$0.1750", "0", "$0.00"]
        # A local request's cost comes from energy and time, not tokens: not marked.
        local = by_model["local/deepseek-v4-flash"]
        assert local == ["1", "~8,000", "~900", "$0.002100", "1", "~$0.1054"]
        labels, by_route = table(app, "route")
        assert labels == ["route", *figures]
        assert by_route["cloud"][3:] == ["~$0.2250", "1", "~$0.2075"]
        assert by_route["local"][3:] == ["$0.002100", "1", "~$0.1054"]
        labels, by_task = table(app, "task")
        assert by_task["architecture"] == ["1", "20.0k", "3,000", "$0.1750", "0", "$0.00"]

        # April has no estimates: no marks, no count, the usual columns.
        await pilot.press("left_square_bracket")
        await settle(
            pilot, app, until=lambda: screen.report is not None and screen.report.month == "2026-04"
        )
        totals = text_of(app, "#report-totals")
        assert "~" not in totals and "estimated" not in totals
        april_tip = str(screen.query_one("#report-totals").tooltip)
        assert april_tip.startswith("1 request: 1 ok") and "estimated" not in april_tip
        labels, by_model = table(app, "model")
        assert labels == ["model", "requests", "in tok", "out tok", "cost", "saved"]
        assert by_model["openai/gpt-4.1"] == ["1", "1,000", "100", "$0.9000", "$0.00"]
        # And back: the column returns with the month that needs it.
        await pilot.press("right_square_bracket")
        await settle(
            pilot, app, until=lambda: screen.report is not None and screen.report.month == "2026-05"
        )
        labels, by_day = table(app, "day")
        assert labels == ["day", *figures]
        assert by_day["2026-05-03"] == ["1", "~3,000", "~700", "~$0.0116", "1", "~$0.0209"]
        assert by_day["2026-05-02"] == ["1", "12.0k", "1,800", "$0.0384", "0", "$0.1866"]
