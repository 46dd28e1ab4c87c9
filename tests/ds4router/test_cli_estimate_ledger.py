"""``ds4router estimate --from-ledger`` says how many of the month's requests had estimated usage.

A real ledger in the test's DS4ROUTER_HOME: measured and estimated rows, a refusal
(sent nothing: not part of the usage), another project, another month.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cli_support import run

from ds4router import cli, paths
from pricing.ledger import Ledger, LedgerRow

MONTH = "2026-03"
MODEL = "deepseek/deepseek-v4-flash"


@pytest.fixture(autouse=True)
def estimate_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "estimate", ("ds4router.commands.estimate", "Estimate."))


def row(day: int, project: str = "acme", estimated: bool = False, **kwargs: object) -> LedgerRow:
    values: dict[str, object] = {
        "route": "cloud",
        "model": MODEL,
        "input_tokens": 1_000,
        "output_tokens": 200,
        "cost_usd": 0.001,
    }
    values.update(kwargs)
    return LedgerRow(
        time=dt.datetime(2026, 3, day, 12, tzinfo=dt.UTC),
        project=project,
        usage_estimated=estimated,
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
def ledger() -> list[LedgerRow]:
    rows = [
        row(1),
        row(2),
        row(3, estimated=True, output_tokens=350),
        row(4, estimated=True, route="local", model="local/deepseek-v4-flash", cost_usd=0.0002),
        row(5, route="refused", model=None, input_tokens=0, output_tokens=0, cost_usd=0.0),
        row(6, project="beta", estimated=True),
        row(7, project="beta"),
        LedgerRow(
            time=dt.datetime(2026, 4, 1, tzinfo=dt.UTC),
            project="acme",
            route="cloud",
            model=MODEL,
            output_tokens=50,
            cost_usd=0.001,
            usage_estimated=True,
        ),
    ]
    db = paths.database_path()
    db.parent.mkdir(parents=True, exist_ok=True)
    with Ledger(db) as book:
        book.record_many(rows)
    return rows


def estimate(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, str]:
    code, out, err = run(
        capsys, "estimate", "--from-ledger", "--month", MONTH, "--models", MODEL, *extra
    )
    assert code == 0, err
    return out, err


def test_the_table_says_how_many_requests_had_estimated_usage(
    capsys: pytest.CaptureFixture[str], ledger: list[LedgerRow]
) -> None:
    out, _ = estimate(capsys)
    lines = out.splitlines()
    # Six requests answered in March across both projects, three of them estimated; the
    # refusal and April are not part of the usage.
    assert lines[0] == (
        "Ledger 2026-03, all projects: 6 requests, "
        "3 of them with estimated token counts (no usage reported)"
    )
    assert lines[1].startswith("Usage a month: 1,350 output tokens")  # 5 x 200 + 350


def test_json_carries_the_count_with_the_scope(
    capsys: pytest.CaptureFixture[str], ledger: list[LedgerRow]
) -> None:
    out, _ = estimate(capsys, "--format", "json")
    data = json.loads(out)
    assert data["assumptions"]["ledger"] == {
        "month": MONTH,
        "project": None,
        "requests": 6,
        "estimated_requests": 3,
    }
    out, _ = estimate(capsys, "--format", "json", "--project", "acme")
    scoped = json.loads(out)["assumptions"]
    assert scoped["ledger"] == {
        "month": MONTH,
        "project": "acme",
        "requests": 4,
        "estimated_requests": 2,
    }
    assert scoped["usage_per_month"]["output_tokens"] == 200 + 200 + 350 + 200


def test_md_and_csv_say_it_too_and_csv_stays_data(
    capsys: pytest.CaptureFixture[str], ledger: list[LedgerRow]
) -> None:
    out, _ = estimate(capsys, "--format", "md", "--project", "beta")
    assert out.splitlines()[0] == (
        "- Ledger 2026-03, project beta: 2 requests, "
        "1 of them with estimated token counts (no usage reported)"
    )
    out, err = estimate(capsys, "--format", "csv", "--project", "beta")
    assert out.splitlines()[0].startswith("model,kind,monthly_usd")
    assert "Ledger 2026-03, project beta: 2 requests, 1 of them" in err


def test_a_month_without_estimates_says_none(capsys: pytest.CaptureFixture[str]) -> None:
    db = paths.database_path()
    db.parent.mkdir(parents=True, exist_ok=True)
    with Ledger(db) as book:
        book.record_many([row(1)])
    out, _ = estimate(capsys)
    assert out.splitlines()[0] == (
        "Ledger 2026-03, all projects: 1 request, none with estimated token counts"
    )
    out, _ = estimate(capsys, "--format", "json")
    assert json.loads(out)["assumptions"]["ledger"]["estimated_requests"] == 0


def test_without_the_ledger_there_is_no_ledger_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "estimate", "--output-tokens", "1000000", "--models", MODEL, "--format", "json"
    )
    assert code == 0, err
    assert "ledger" not in json.loads(out)["assumptions"]
    code, out, err = run(capsys, "estimate", "--output-tokens", "1000000", "--models", MODEL)
    assert code == 0, err
    assert out.startswith("Usage a month: 1.0M output tokens")
