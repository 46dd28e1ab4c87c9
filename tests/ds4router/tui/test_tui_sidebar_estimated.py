"""The sidebar marks month figures that include estimated token counts, as the reports do.

A cloud request priced from estimated tokens makes the cloud spend an estimate (``~``);
any estimated request (local too) makes the savings one; a line counts them, and the
tooltip says what the mark means in the text report's words. Local cost comes from
energy and time, so it is never marked. A month without estimates shows none of this.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from textual.widgets import Static
from tui_support import SIZE, record, settle, write_project

from ds4router.tui.app import Ds4RouterApp
from pricing.ledger import LedgerRow
from pricing.report import build_report_from_rows
from pricing.report_render import render_table

MakeApp = Callable[..., Ds4RouterApp]
REFERENCE = "anthropic/claude-opus-4-7"
PROJECT = "project: acme\nbudget: {monthly_usd: 40, warn_at: [0.5, 0.8, 1.0]}\n"


def at(day: int) -> dt.datetime:
    return dt.datetime(2026, 5, day, 10, tzinfo=dt.UTC)


def cloud(day: int, cost: float, reference: float, estimated: bool = False) -> LedgerRow:
    return LedgerRow(time=at(day), project="acme", route="cloud", model="openai/gpt-4.1",
                     task="debug", input_tokens=3_000, output_tokens=700, cost_usd=cost,
                     counterfactual_usd=reference, reference_model=REFERENCE,
                     usage_estimated=estimated)  # fmt: skip


def local(day: int, estimated: bool = False) -> LedgerRow:
    return LedgerRow(time=at(day), project="acme", route="local",
                     model="local/deepseek-v4-flash", task="refactor", input_tokens=8_000,
                     output_tokens=900, cost_usd=0.0021, counterfactual_usd=0.1075,
                     reference_model=REFERENCE, energy_j=3000.0,
                     usage_estimated=estimated)  # fmt: skip


def shown(app: Ds4RouterApp, selector: str) -> tuple[str, object]:
    widget = app.screen.query_one(selector, Static)
    return str(widget.render()), widget.tooltip


async def sidebar_of(tmp_path: Path, make_app: MakeApp) -> dict[str, tuple[str, object]]:
    app = make_app(write_project(tmp_path, PROJECT), check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: "Month" in shown(app, "#month")[0])
        await settle(pilot, app)
        return {name: shown(app, f"#{name}") for name in ("spend", "savings")}


async def test_cloud_spend_priced_from_estimates_is_marked(
    tmp_path: Path, make_app: MakeApp
) -> None:
    rows = [cloud(2, 0.0384, 0.225), cloud(3, 0.0116, 0.0325, estimated=True), local(4)]
    record(rows)
    shown = await sidebar_of(tmp_path, make_app)

    spend, spend_tip = shown["spend"]
    savings, savings_tip = shown["savings"]
    assert spend == "cloud ~$0.0500 of $40.00"  # 0.0384 + 0.0116
    # saved: (0.225 + 0.0325 + 0.1075) - (0.0384 + 0.0116 + 0.0021)
    assert savings.splitlines() == [
        "saved ~$0.3129 vs claude-opus-4-7",
        "local $0.002100 · 1 req",  # what ran locally; the cloud ones are not local
        "1 estimated (~)",
    ]
    words = (
        "1 of 3 requests (33%) reported no token usage; their counts were estimated, "
        "and figures marked ~ include them"
    )
    assert spend_tip == savings_tip == words
    # The same month in the text report: the same marks, the same words.
    text = " ".join(render_table(build_report_from_rows(rows, "2026-05", "acme")).split())
    assert "cloud ~$0.0500" in text and "saved vs reference ~$0.3129" in text and words in text


async def test_a_local_estimate_marks_the_savings_but_not_the_spend(
    tmp_path: Path, make_app: MakeApp
) -> None:
    record([cloud(2, 0.0384, 0.225), local(4, estimated=True), local(5, estimated=True)])
    shown = await sidebar_of(tmp_path, make_app)

    spend, spend_tip = shown["spend"]
    savings, savings_tip = shown["savings"]
    assert spend == "cloud $0.0384 of $40.00" and spend_tip is None
    assert savings.splitlines() == [
        "saved ~$0.3974 vs claude-opus-4-7",
        "local $0.004200 · 2 req",
        "2 estimated (~)",
    ]
    assert isinstance(savings_tip, str) and savings_tip.startswith("2 of 3 requests (67%)")


async def test_a_month_without_estimates_has_no_mark(tmp_path: Path, make_app: MakeApp) -> None:
    record([cloud(2, 0.0384, 0.225), local(4)])
    shown = await sidebar_of(tmp_path, make_app)

    assert shown["spend"] == ("cloud $0.0384 of $40.00", None)
    savings, tip = shown["savings"]
    assert "~" not in savings and "estimated" not in savings and tip is None
