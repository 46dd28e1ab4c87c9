"""Estimated usage: ledger rows say when their token counts were not reported, reports show it.

Covers migration v4 (``usage_estimated`` on rows and its counts in the monthly
cube) from a v3 database that already holds rows, the cube's triggers after the
migration, and the marker and counts in every report format.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pricing.cost import price_request
from pricing.db import apply_migrations, connect, schema_version
from pricing.errors import PricingError
from pricing.ledger import LEDGER_MIGRATIONS, Ledger, LedgerRow
from pricing.local_cost import LocalCostModel
from pricing.rates import Rates
from pricing.report import build_report, build_report_from_rows, render
from pricing.usage import TokenUsage

MONTH = "2026-11"
NOW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.UTC)
GPT = Rates("openai/gpt-4.1", input=2.0, output=8.0, cached_input=0.5)
OPUS = Rates("anthropic/claude-opus-4-7", input=5.0, output=25.0, cached_input=0.5)
LOCAL = LocalCostModel(watts=90, electricity_usd_per_kwh=0.17, hardware_price_usd=4800)


def cloud(usage: TokenUsage, when: dt.datetime = T0, **extra: object) -> LedgerRow:
    return LedgerRow.for_cloud(
        time=when,
        project="acme",
        provider="openai",
        cost=price_request(usage, GPT, model="openai/gpt-4.1"),
        counterfactual=price_request(usage, OPUS, model="anthropic/claude-opus-4-7"),
        task="explain",
        **extra,  # type: ignore[arg-type]
    )


def local(usage: TokenUsage, when: dt.datetime = T0) -> LedgerRow:
    return LedgerRow.for_local(
        time=when,
        project="acme",
        usage=usage,
        cost=LOCAL.local_cost(2.0),
        counterfactual=price_request(usage, OPUS, model="anthropic/claude-opus-4-7"),
        task="tests",
    )


def cube_estimates(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT TOTAL(estimated_requests), TOTAL(estimated_cloud_requests) FROM ledger_cube"
    ).fetchone()
    return int(row[0]), int(row[1])


# --- usage and rows -------------------------------------------------------------------------


def test_an_estimate_added_to_a_measured_usage_is_an_estimate() -> None:
    measured = TokenUsage(100, output_tokens=10)
    guessed = TokenUsage(50, output_tokens=5, estimated=True)
    assert not (measured + measured).estimated
    assert (measured + guessed).estimated and (guessed + measured).estimated
    assert (measured + guessed).input_tokens == 150
    with pytest.raises(PricingError, match="estimated"):
        TokenUsage(1, estimated=1)  # type: ignore[arg-type]


def test_rows_take_the_flag_from_their_usage_and_keep_it_in_the_database(
    tmp_path: Path,
) -> None:
    guessed = TokenUsage(1_200, output_tokens=300, estimated=True)
    measured = TokenUsage(1_200, output_tokens=300)
    rows = [cloud(guessed), cloud(measured), local(guessed), local(measured)]
    assert [r.usage_estimated for r in rows] == [True, False, True, False]
    with Ledger(tmp_path / "db") as ledger:
        ledger.record_many(rows)
        back = ledger.month_rows(MONTH)
        assert [r.usage_estimated for r in back] == [True, False, True, False]
        assert all(type(r.usage_estimated) is bool for r in back)
        assert back[0].usage == guessed and back[1].usage == measured
        assert cube_estimates(ledger.conn) == (2, 1)
        requests, total = ledger.usage_totals(MONTH)
        assert requests == 4 and total.estimated and total.input_tokens == 4_800
    with pytest.raises(PricingError, match="usage_estimated"):
        LedgerRow(time=T0, project="p", route="local", usage_estimated="yes")  # type: ignore[arg-type]


def test_the_database_refuses_a_flag_other_than_0_or_1(tmp_path: Path) -> None:
    with Ledger(tmp_path / "db") as ledger, pytest.raises(sqlite3.IntegrityError):
        ledger.conn.execute(
            "INSERT INTO ledger (time, month, day, project, route, status, usage_estimated) "
            "VALUES ('2026-11-03T09:30:00.000000Z', '2026-11', '2026-11-03', 'p', 'local', "
            "'ok', 2)"
        )


# --- migration v4 -----------------------------------------------------------------------------


def test_migrating_a_v3_ledger_with_rows_keeps_them_measured_and_the_cube_current(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v3.sqlite3"
    old = connect(path)
    assert apply_migrations(old, "ledger", LEDGER_MIGRATIONS[:3], mirror_user_version=True) == 3
    # Rows as a v3 ds4router wrote them: no usage_estimated column exists yet.
    old.executemany(
        "INSERT INTO ledger (time, month, day, project, route, model, task, input_tokens, "
        "output_tokens, cost_usd, counterfactual_usd, reference_model, status) "
        "VALUES (?, '2026-11', ?, 'acme', ?, ?, 'explain', ?, ?, ?, ?, "
        "'anthropic/claude-opus-4-7', 'ok')",
        [
            (
                "2026-11-02T10:00:00.000000Z",
                "2026-11-02",
                "cloud",
                "openai/gpt-4.1",
                1000,
                100,
                0.0028,
                0.0075,
            ),
            (
                "2026-11-02T11:00:00.000000Z",
                "2026-11-02",
                "local",
                "local",
                5000,
                400,
                0.0011,
                0.035,
            ),
            (
                "2026-11-05T08:00:00.000000Z",
                "2026-11-05",
                "cloud",
                "openai/gpt-4.1",
                2000,
                50,
                0.0044,
                0.01125,
            ),
        ],
    )
    old.close()

    with Ledger(path) as ledger:
        assert ledger.version == len(LEDGER_MIGRATIONS)
        assert schema_version(ledger.conn, "ledger") == len(LEDGER_MIGRATIONS)
        assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == len(LEDGER_MIGRATIONS)
        rows = ledger.month_rows(MONTH)
        assert [r.usage_estimated for r in rows] == [False, False, False]
        assert [r.input_tokens for r in rows] == [1000, 5000, 2000]
        assert cube_estimates(ledger.conn) == (0, 0)
        before = build_report(ledger, MONTH, now=NOW)
        assert before.total.requests == 3 and before.total.estimated_requests == 0
        assert before.cloud_usd == pytest.approx(0.0028 + 0.0044)

        # The redone triggers count the new measures, and still the old ones.
        new_id = ledger.record(cloud(TokenUsage(700, output_tokens=70, estimated=True)))
        after = build_report(ledger, MONTH, now=NOW)
        assert (after.total.requests, after.total.estimated_requests) == (4, 1)
        assert after.route("cloud").estimated_cloud_requests == 1
        assert after.route("local").estimated_requests == 0
        assert after.total.input_tokens == 1000 + 5000 + 2000 + 700
        # Updates and deletes move the counts too.
        ledger.conn.execute("UPDATE ledger SET usage_estimated = 0 WHERE id = ?", (new_id,))
        assert cube_estimates(ledger.conn) == (0, 0)
        ledger.conn.execute("UPDATE ledger SET usage_estimated = 1 WHERE route = 'local'")
        assert cube_estimates(ledger.conn) == (1, 0)
        ledger.conn.execute("DELETE FROM ledger WHERE route = 'local'")
        assert cube_estimates(ledger.conn) == (0, 0)
        assert build_report(ledger, MONTH, now=NOW).total.requests == 3
        # Opening again runs nothing more.
    with Ledger(path) as again:
        assert again.version == len(LEDGER_MIGRATIONS) and again.count() == 3


def estimated_rows(seed: int, count: int) -> list[LedgerRow]:
    rng = random.Random(seed)
    rows: list[LedgerRow] = []
    for _ in range(count):
        when = dt.datetime(2026, 11, rng.randint(1, 28), rng.randint(0, 23), tzinfo=dt.UTC)
        usage = TokenUsage(
            rng.randint(0, 20_000),
            output_tokens=rng.randint(0, 2_000),
            estimated=rng.random() < 0.3,
        )
        rows.append(cloud(usage, when) if rng.random() < 0.6 else local(usage, when))
    return rows


def test_sql_and_in_memory_reports_count_the_same_estimates(tmp_path: Path) -> None:
    rows = estimated_rows(3, 300)
    with Ledger(tmp_path / "db") as ledger:
        ledger.record_many(rows)
        sql = build_report(ledger, MONTH, now=NOW)
    mem = build_report_from_rows(rows, MONTH, now=NOW)
    expected = sum(r.usage_estimated for r in rows)
    expected_cloud = sum(r.usage_estimated and r.route == "cloud" for r in rows)
    assert 0 < expected_cloud < expected < len(rows)
    for report in (sql, mem):
        assert report.total.estimated_requests == expected
        assert report.total.estimated_cloud_requests == expected_cloud
        for group in (report.by_route, report.by_day, report.by_task):
            assert sum(b.estimated_requests for _, b in group) == expected
    assert [(k, b.estimated_requests) for k, b in sql.by_day] == [
        (k, b.estimated_requests) for k, b in mem.by_day
    ]


# --- rendering ---------------------------------------------------------------------------------


@pytest.fixture
def mixed() -> list[LedgerRow]:
    """Cloud on one task with an estimated row; local on another, estimated; a clean task."""
    return [
        cloud(TokenUsage(1_000, output_tokens=100), T0),
        cloud(TokenUsage(3_000, output_tokens=300, estimated=True), T0),
        local(TokenUsage(2_000, output_tokens=200, estimated=True), T0),
        LedgerRow.for_refused(time=T0, project="acme", task="review"),
    ]


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("by ", start + len(title))
    return text[start : end if end != -1 else None]


def line_of(block: str, key: str) -> str:
    (line,) = [ln for ln in block.splitlines() if ln.strip().startswith(key + " ")]
    return line


def test_table_marks_only_figures_that_include_estimates(mixed: list[LedgerRow]) -> None:
    report = build_report_from_rows(mixed, MONTH, now=NOW)
    text = render(report, "table")
    assert "estimated usage" in text and "2 of 4 requests (50%)" in text
    by_route = section(text, "by route")
    cloud_line = line_of(by_route, "cloud")
    local_line = line_of(by_route, "local")
    refused_line = line_of(by_route, "refused")
    # Cloud: tokens, cost, reference and saving include the estimate.
    assert len(re.findall(r"~", cloud_line)) == 6  # in, cached, out, cost, reference, saved
    assert "~$" in cloud_line
    # Local: tokens and the reference cost are estimates, the cost (energy x time) is not.
    assert re.search(r"~[\d.,]+k? +~[\d.,]+k? +~[\d.,]+k? +\$", local_line)
    assert local_line.count("~$") == 2  # reference and saved; cost stays unmarked
    assert "~" not in refused_line
    by_task = section(text, "by task")
    assert "~" not in line_of(by_task, "review")
    # The summary marks totals that include estimates.
    assert re.search(r"total cost +~\$", text) and re.search(r"tokens +~", text)


def test_no_estimates_no_marks(mixed: list[LedgerRow]) -> None:
    clean = [r for r in mixed if not r.usage_estimated]
    report = build_report_from_rows(clean, MONTH, now=NOW)
    for fmt in ("table", "md", "html"):
        out = render(report, fmt)
        assert "~" not in out, fmt
        # No column of zeros either: a report without estimates reads as before.
        assert "estimated" not in out.split("</style>")[-1], fmt


def test_markdown_and_html_carry_the_marker_and_the_count(mixed: list[LedgerRow]) -> None:
    report = build_report_from_rows(mixed, MONTH, now=NOW)
    md = render(report, "md")
    assert "| route | requests | in | cached | out | cost | unpriced | estimated |" in md
    (cloud_row,) = [ln for ln in md.splitlines() if ln.startswith("| cloud |")]
    cells = [c.strip() for c in cloud_row.strip("|").split("|")]
    assert cells[1] == "2" and cells[7] == "1"  # requests, estimated
    assert cells[5].startswith("~$")
    assert "- **estimated usage**: 2 of 4 requests" in md

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.marked: list[tuple[str | None, str]] = []
            self._open: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "td" and "estimated" in (found.get("class") or ""):
                self._open = found.get("title")

        def handle_data(self, data: str) -> None:
            if self._open is not None:
                self.marked.append((self._open, data))
                self._open = None

    page = Cells()
    page.feed(render(report, "html"))
    assert page.marked, "no estimated cell in the HTML"
    assert all(text.startswith("~") for _, text in page.marked)
    assert all(tip and "estimated token counts" in tip for tip, _ in page.marked)


def test_csv_and_json_keep_numbers_and_carry_the_counts(mixed: list[LedgerRow]) -> None:
    report = build_report_from_rows(mixed, MONTH, now=NOW)
    table = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    total = [r for r in table if r["section"] == "total"][0]
    assert int(total["estimated_requests"]) == 2
    assert int(total["estimated_cloud_requests"]) == 1
    assert float(total["cost_usd"]) == pytest.approx(report.total.cost_usd)
    assert "~" not in render(report, "csv")
    data = json.loads(render(report, "json"))
    assert data["totals"]["estimated_requests"] == 2
    routes = {g["key"]: g for g in data["by_route"]}
    assert routes["local"]["estimated_requests"] == 1
    assert routes["local"]["estimated_cloud_requests"] == 0
    assert isinstance(routes["cloud"]["input_tokens"], int)
