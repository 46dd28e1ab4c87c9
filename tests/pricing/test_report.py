"""Monthly reports: totals equal the rows, SQL and in-memory agree, every format holds up."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pricing.budget import budget_state
from pricing.ledger import Ledger, LedgerRow
from pricing.report import build_report, build_report_from_rows, render

MONTH = "2026-11"
NOW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def random_rows(seed: int, count: int) -> list[LedgerRow]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        route = rng.choice(["cloud", "cloud", "local", "refused"])
        when = dt.datetime(
            2026,
            rng.choice([10, 11, 11, 11]),
            rng.randint(1, 28),
            rng.randint(0, 23),
            tzinfo=dt.UTC,
        )
        inp = rng.randint(0, 50_000)
        cached = rng.randint(0, inp)
        out = rng.randint(0, 4_000)
        base = dict(
            time=when,
            project=rng.choice(["acme", "beta"]),
            route=route,
            task=rng.choice(["explain", "tests", None]),
            status=rng.choice(["ok", "ok", "ok", "error", "cancelled"]),
        )
        if route == "refused":
            # Nothing ran: a refused request is never "unpriced", whether or not the
            # writer filled in its zero cost.
            refused_cost = rng.choice([0.0, None])
            rows.append(LedgerRow(**base, cost_usd=refused_cost))  # type: ignore[arg-type]
            continue
        priced = rng.random() > 0.1
        cost = round(rng.uniform(0, 0.2), 6) if priced else None
        local = route == "local"
        rows.append(
            LedgerRow(
                **base,  # type: ignore[arg-type]
                model=rng.choice(["local"] if local else ["openai/gpt-4.1", "x/unpriced-thing"]),
                input_tokens=inp,
                cached_input_tokens=cached,
                output_tokens=out,
                reasoning_tokens=rng.randint(0, out),
                cost_usd=cost if not local else round(rng.uniform(0, 0.01), 6),
                cost_electricity_usd=0.001 if local else None,
                cost_amortization_usd=0.002 if local else None,
                counterfactual_usd=round(rng.uniform(0, 0.5), 6) if rng.random() > 0.2 else None,
                reference_model="anthropic/claude-opus-4-7",
                energy_j=rng.uniform(1, 900) if local else None,
                duration_s=rng.uniform(0.1, 30),
            )
        )
    return rows


@pytest.fixture(scope="module")
def rows() -> list[LedgerRow]:
    return random_rows(7, 600)


@pytest.fixture
def ledger(tmp_path: Path, rows: list[LedgerRow]) -> Ledger:
    led = Ledger(tmp_path / "ledger.sqlite3")
    led.record_many(rows)
    return led


def test_report_totals_equal_the_sum_of_the_rows(ledger: Ledger, rows: list[LedgerRow]) -> None:
    report = build_report(ledger, MONTH, now=NOW)
    month = [r for r in rows if r.month == MONTH]
    assert report.total.requests == len(month)
    assert report.total.input_tokens == sum(r.input_tokens for r in month)
    assert report.total.cached_input_tokens == sum(r.cached_input_tokens for r in month)
    assert report.total.output_tokens == sum(r.output_tokens for r in month)
    assert report.total.cost_usd == pytest.approx(sum(r.cost_usd or 0.0 for r in month))
    assert report.total.unpriced_requests == sum(
        1 for r in month if r.cost_usd is None and r.route != "refused"
    )
    assert report.total.unpriced_requests > 0
    assert report.cloud_usd == pytest.approx(
        sum(r.cost_usd or 0.0 for r in month if r.route == "cloud")
    )
    assert report.total.savings_usd == pytest.approx(
        sum(
            r.counterfactual_usd - r.cost_usd
            for r in month
            if r.counterfactual_usd is not None and r.cost_usd is not None
        )
    )
    # Every breakdown adds up to the same totals.
    for group in (
        report.by_project,
        report.by_model,
        report.by_route,
        report.by_task,
        report.by_day,
    ):
        assert sum(b.requests for _, b in group) == report.total.requests
        assert sum(b.cost_usd for _, b in group) == pytest.approx(report.total.cost_usd)
    assert sum(d.total_usd for d in report.daily) == pytest.approx(
        sum(r.cost_usd or 0.0 for r in month if r.route in ("local", "cloud"))
    )
    assert len(report.daily) == 30


def test_sql_and_in_memory_reports_agree(ledger: Ledger, rows: list[LedgerRow]) -> None:
    for project in (None, "beta"):
        sql = build_report(ledger, MONTH, project, now=NOW)
        mem = build_report_from_rows(rows, MONTH, project, now=NOW)
        assert [k for k, _ in sql.by_model] == [k for k, _ in mem.by_model]
        for (k1, b1), (k2, b2) in zip(sql.by_day, mem.by_day, strict=True):
            assert k1 == k2
            assert b1.requests == b2.requests
            assert b1.cost_usd == pytest.approx(b2.cost_usd)
        assert sql.total.requests == mem.total.requests
        assert sql.total.counterfactual_usd == pytest.approx(mem.total.counterfactual_usd)
    assert {k for k, _ in build_report(ledger, MONTH, "beta", now=NOW).by_project} == {"beta"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_one_self_contained_page_with_the_daily_chart(ledger: Ledger) -> None:
    report = build_report(ledger, MONTH, now=NOW)
    page = render(report, "html")
    parser = Page()
    parser.feed(page)
    parser.close()
    tags = [t for t, _ in parser.tags]
    assert tags.count("svg") == 1
    bars = [a for t, a in parser.tags if t == "rect" and a.get("data-day")]
    # One bar segment per day and route with spend; their amounts are the daily figures.
    expected = {
        (d.day, route): value
        for d in report.daily
        for route, value in (("local", d.local_usd), ("cloud", d.cloud_usd))
        if value > 0
    }
    assert {(a["data-day"], a["data-route"]): float(a["data-usd"] or 0) for a in bars} == (
        pytest.approx(expected)
    )
    assert expected
    # Nothing to fetch: no scripts, links, images or remote URLs.
    assert not {"script", "link", "img", "iframe"} & set(tags)
    assert not [a for _, a in parser.tags if "src" in a or "href" in a]
    assert "url(" not in page and "@import" not in page


def test_html_escapes_names_from_the_data(tmp_path: Path) -> None:
    row = LedgerRow(time=NOW, project="<script>alert(1)</script>", route="cloud", cost_usd=1.0)
    page = render(build_report_from_rows([row], MONTH, now=NOW), "html")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_json_numbers_are_numbers(ledger: Ledger) -> None:
    budget = budget_state(40.0, 12.5, (0.5, 0.8), elapsed_days=19, days_in_month=30)
    data = json.loads(
        render(build_report(ledger, MONTH, budget=budget, budget_project="acme", now=NOW), "json")
    )
    assert isinstance(data["totals"]["cost_usd"], float)
    assert isinstance(data["totals"]["requests"], int)
    assert isinstance(data["by_model"][0]["output_tokens"], int)
    assert data["budget"]["monthly_usd"] == 40.0 and data["budget"]["project"] == "acme"
    assert data["budget"]["remaining_usd"] == 27.5
    assert len(data["daily"]) == 30


def test_csv_rows_carry_plain_numbers_per_section(ledger: Ledger) -> None:
    report = build_report(ledger, MONTH, now=NOW)
    table = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    total = [r for r in table if r["section"] == "total"][0]
    assert float(total["cost_usd"]) == pytest.approx(report.total.cost_usd)
    days = [r for r in table if r["section"] == "day"]
    assert sum(int(r["requests"]) for r in days) == report.total.requests


def test_table_and_markdown_show_totals_and_unpriced(ledger: Ledger) -> None:
    report = build_report(ledger, MONTH, now=NOW)
    text = render(report, "table")
    assert f"{report.total.requests:,}" in text
    assert "unpriced requests" in text and "by model" in text
    md = render(report, "md")
    assert md.startswith("# ds4router cost report: 2026-11")
    assert "| model | requests |" in md


def test_an_empty_month_renders_in_every_format() -> None:
    report = build_report_from_rows([], "2026-02", now=NOW)
    assert report.total.requests == 0 and len(report.daily) == 28
    for fmt in ("table", "csv", "json", "md", "html"):
        assert render(report, fmt)
    assert "no spend this month" in render(report, "html")


def test_small_costs_never_read_as_zero() -> None:
    from pricing.report_render import usd

    assert usd(0.000038) == "$0.000038"
    assert usd(3.8e-7) == "$0.00000038"
    assert usd(0.0042) == "$0.0042"
    assert usd(1234.5) == "$1,234.50"
    assert usd(0) == "$0.00"
    assert usd(None) == "unpriced"
