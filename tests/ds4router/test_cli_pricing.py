"""``ds4router report`` and ``ds4router estimate`` through the real CLI group."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_support import run

from ds4router import cli, paths
from pricing.cost import price_request
from pricing.ledger import Ledger, LedgerRow
from pricing.rates import Rates
from pricing.usage import TokenUsage

NOW = dt.datetime.now(dt.UTC)
MONTH = NOW.strftime("%Y-%m")
FLASH = Rates("deepseek/deepseek-v4-flash", input=0.30, output=1.20, cached_input=0.006)
OPUS = Rates("anthropic/claude-opus-4-7", input=5.0, output=25.0, cached_input=0.5)


@pytest.fixture(autouse=True)
def pricing_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug the two commands in as the lead will in ``SUBCOMMANDS``."""
    monkeypatch.setitem(cli.SUBCOMMANDS, "report", ("ds4router.commands.report", "Cost report."))
    monkeypatch.setitem(cli.SUBCOMMANDS, "estimate", ("ds4router.commands.estimate", "Estimate."))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "acme"
    directory.mkdir()
    (directory / ".ds4router.yaml").write_text(
        "project: acme\nbudget: {monthly_usd: 0.01, warn_at: [0.5, 1.0]}\n"
    )
    return directory


def fill_ledger() -> list[LedgerRow]:
    usage = TokenUsage(input_tokens=20_000, cached_input_tokens=15_000, output_tokens=1_000)
    rows = [
        LedgerRow.for_cloud(
            time=NOW.replace(day=1, hour=h),
            project="acme",
            provider="deepseek",
            cost=price_request(usage, FLASH),
            counterfactual=price_request(usage, OPUS),
            task="explain",
        )
        for h in range(3)
    ]
    rows.append(
        LedgerRow.for_cloud(
            time=NOW.replace(day=1),
            project="beta",
            cost=price_request(usage, None, model="acme/unknown"),
        )
    )
    with Ledger(paths.database_path()) as ledger:
        ledger.record_many(rows)
    return rows


def test_report_html_writes_a_self_contained_page_with_the_chart(
    capsys: pytest.CaptureFixture[str], project: Path, tmp_path: Path
) -> None:
    fill_ledger()
    out_file = tmp_path / "r.html"
    code, out, err = run(
        capsys, "--project", str(project), "report", "--format", "html", "-o", str(out_file)
    )
    assert code == 0, err
    assert str(out_file) in out
    page = out_file.read_text()

    found: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append(tag)

    Tags().feed(page)
    assert found.count("svg") == 1 and "rect" in found
    assert "script" not in found and "link" not in found


def test_report_json_counts_unpriced_and_shows_the_project_budget(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    rows = fill_ledger()
    code, out, err = run(capsys, "--project", str(project), "report", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["totals"]["requests"] == len(rows)
    assert data["totals"]["unpriced_requests"] == 1
    assert data["totals"]["cost_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in rows))
    spent = sum(r.cost_usd or 0 for r in rows if r.project == "acme")
    assert data["budget"]["project"] == "acme"
    assert data["budget"]["spent_usd"] == pytest.approx(spent)
    assert data["budget"]["over_budget"] is (spent >= 0.01)


def test_report_of_one_project_in_a_table(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    fill_ledger()
    code, out, _ = run(capsys, "--project", str(project), "report", "--project", "beta")
    assert code == 0
    assert "project beta" in out
    assert "acme/unknown" in out and "deepseek/deepseek-v4-flash" not in out


def test_report_without_a_ledger_is_empty_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    code, out, _ = run(capsys, "--project", str(project), "report", "--format", "md")
    assert code == 0
    assert "**requests**: 0 (0 ok" in out
    assert not paths.database_path().exists()


def test_a_bad_month_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, err = run(capsys, "--project", str(project), "report", "--month", "2026-13")
    assert code == 2
    assert err.strip().count("\n") == 0 and "2026-11" in err and "Traceback" not in err


def test_estimate_lists_40_models_and_the_local_profile_with_crossovers(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    code, out, err = run(
        capsys,
        "--project",
        str(project),
        "estimate",
        "--output-tokens",
        "2000000",
        "--format",
        "json",
    )
    assert code == 0, err
    rows = json.loads(out)["rows"]
    cloud = [r for r in rows if r["kind"] == "cloud"]
    local = [r for r in rows if r["kind"] == "local"]
    assert len(cloud) >= 40 and len(local) == 1
    assert local[0]["model"] == "local:m3-max-q2"
    assert all(r["monthly_usd"] is not None for r in cloud)
    assert any(r["crossover_tokens_per_month"] for r in cloud)
    costs = [r["monthly_usd"] for r in rows]
    assert costs == sorted(costs)
    # The table says the same, with a crossover column.
    code, table, _ = run(
        capsys, "--project", str(project), "estimate", "--output-tokens", "2000000"
    )
    assert code == 0 and "local wins above" in table and "local:m3-max-q2" in table
    assert "never" in table


def test_estimate_suggests_close_names_for_an_unknown_model(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    code, out, err = run(
        capsys,
        "--project",
        str(project),
        "estimate",
        "--output-tokens",
        "1000",
        "--models",
        "gpt5,deepseek-v4-flash",
        "--format",
        "csv",
    )
    assert code == 0
    assert "no price for 'gpt5'" in err and "openai/gpt-5" in err
    lines = out.splitlines()
    assert any(line.startswith("gpt5,cloud,,") for line in lines)  # unpriced: empty, not 0
    assert any(line.startswith("deepseek/deepseek-v4-flash,cloud,") for line in lines)


def test_project_price_overrides_reach_the_estimate(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    (project / ".ds4router.yaml").write_text(
        "project: acme\npricing:\n  overrides:\n    team/gateway-model: {input: 1.0, output: 2.0}\n"
    )
    code, out, err = run(
        capsys,
        "--project",
        str(project),
        "estimate",
        "--output-tokens",
        "1000000",
        "--models",
        "team/gateway-model",
        "--format",
        "json",
    )
    assert code == 0, err
    row = [r for r in json.loads(out)["rows"] if r["kind"] == "cloud"][0]
    assert row["monthly_usd"] == pytest.approx(2.0)


def test_estimate_from_the_ledger_reprices_a_real_month(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    rows = fill_ledger()
    code, out, err = run(
        capsys,
        "--project",
        str(project),
        "estimate",
        "--from-ledger",
        "--month",
        MONTH,
        "--models",
        "deepseek/deepseek-v4-flash",
        "--format",
        "json",
    )
    assert code == 0, err
    data = json.loads(out)
    used = data["assumptions"]["usage_per_month"]
    assert used["output_tokens"] == sum(r.output_tokens for r in rows)
    assert used["cached_input_tokens"] == sum(r.cached_input_tokens for r in rows)
    flash = [r for r in data["rows"] if r["model"] == "deepseek/deepseek-v4-flash"][0]
    # The 2026-11 sheet's Flash rates: 0.30 input, 0.006 cached, 1.20 output.
    plain = used["input_tokens"] - used["cached_input_tokens"]
    expected = (
        plain * 0.30 + used["cached_input_tokens"] * 0.006 + used["output_tokens"] * 1.2
    ) / 1e6
    assert flash["monthly_usd"] == pytest.approx(expected)


def test_estimate_needs_a_volume(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "--project", str(project), "estimate")
    assert code == 2 and "--output-tokens" in err
    code, _, err = run(capsys, "--project", str(project), "estimate", "--from-ledger")
    assert code == 2 and "no ledger" in err
