"""Claude Code and Codex logs re-priced: ``estimate --from-claude-code/--from-codex`` and
``report --import`` on logs the tests write in those agents' formats."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from agent_log_support import MONTH, write_claude_code, write_codex
from cli_support import run

from ds4router import cli, paths
from pricing.agent_logs import CLAUDE_CODE, CODEX, logged_month, read_agent_log
from pricing.catalog import PriceCatalog
from pricing.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "estimate", ("ds4router.commands.estimate", "Estimate."))
    monkeypatch.setitem(cli.SUBCOMMANDS, "report", ("ds4router.commands.report", "Report."))


def test_streamed_claude_code_lines_are_one_request(tmp_path: Path) -> None:
    log = read_agent_log(CLAUDE_CODE, write_claude_code(tmp_path / "claude"))
    month = logged_month(log, None)
    assert month.month == MONTH  # the latest month of the logs
    assert len(month.requests) == 3  # msg_01 (3 lines), msg_02, msg_03; not the synthetic one
    assert log.duplicates == 2
    first = month.requests[0]
    assert first.origin_id == "msg_01:req_01"
    assert first.project == "webshop"
    assert (first.usage.input_tokens, first.usage.cached_input_tokens) == (23_000, 20_000)
    assert first.usage.cache_write_tokens == 2_000
    assert month.requests[2].usage.cache_write_1h_tokens == 10_000
    assert month.usage.output_tokens == 200 + 4_000 + 1_000
    assert len(logged_month(log, "2026-10").requests) == 1


def test_codex_repeated_token_events_count_once(tmp_path: Path) -> None:
    log = read_agent_log(CODEX, write_codex(tmp_path / "codex"))
    (first, second) = log.requests
    assert (first.model, first.project) == ("gpt-5-codex", "webshop")
    assert log.duplicates == 1
    # Reasoning is part of output_tokens when total_tokens = input + output.
    assert (second.usage.input_tokens, second.usage.cached_input_tokens) == (12_000, 8_000)
    assert (second.usage.output_tokens, second.usage.reasoning_tokens) == (900, 500)


def test_each_logged_request_is_priced_at_its_own_tier(tmp_path: Path) -> None:
    """The 300k-token prompt pays Sonnet's long-context tier where the map has one;
    pricing the month's sum would not know the prompt sizes."""
    log = logged_month(read_agent_log(CLAUDE_CODE, write_claude_code(tmp_path / "c")), None)
    catalog = PriceCatalog.load(REPO / "configs" / "prices")
    model = "gemini/gemini-2.5-pro"  # tiered above 200k in LiteLLM's map
    one_by_one = sum(catalog.price(model, u, t).total_usd or 0 for t, u in log.timed)
    summed = catalog.price(model, log.usage, one_request=False).total_usd or 0
    assert one_by_one > summed


def test_estimate_from_claude_code_prints_the_month_and_the_crossover(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_claude_code(tmp_path / "claude")
    code, out, err = run(
        capsys,
        "estimate",
        "--from-claude-code",
        str(root),
        "--models",
        "deepseek-v4-flash,claude-sonnet-4-5",
    )
    assert code == 0, err
    first, *rest = out.splitlines()
    assert first.startswith(f"claude-code logs {root} (1 files), {MONTH}: 3 requests")
    assert "2 streamed or repeated entries folded" in first
    table = "\n".join(rest)
    assert "local wins above" in table and "if owned" in table
    assert "anthropic/claude-sonnet-4-5" in table and "local:m3-max-q2" in table
    # Every bundled local profile is priced; the crossovers are the chosen profile's.
    ultra = next(line for line in rest if "local:m3-ultra-q2" in line)
    assert "crossovers: m3-max-q2" in ultra
    sonnet = next(line for line in rest if "anthropic/claude-sonnet-4-5 " in line)
    crossover, if_owned = sonnet.split()[-2:]
    assert crossover == "never" or crossover.replace(",", "").isdigit()
    assert if_owned in ("always", "never")

    code, out, err = run(capsys, "estimate", "--from-claude-code", str(root), "--format", "json")
    assert code == 0, err
    data = json.loads(out.split("\n", 1)[1] if not out.startswith("{") else out)
    assert data["assumptions"]["agent_log"]["requests"] == 3
    assert data["assumptions"]["usage_per_month"]["output_tokens"] == 5_200
    models = [r["model"] for r in data["rows"]]
    assert models[0] != "" and any(m.startswith("anthropic/claude-sonnet-4-5") for m in models)


def test_estimate_from_codex_and_a_month_without_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_codex(tmp_path / "codex")
    code, out, err = run(capsys, "estimate", "--from-codex", str(root), "--top", "3")
    assert code == 0, err
    assert out.startswith(f"codex logs {root} (1 files), {MONTH}: 2 requests on gpt-5-codex")
    code, out, err = run(capsys, "estimate", "--from-codex", str(root), "--month", "2026-01")
    assert code == 2 and "no codex usage in 2026-01; the logs have 2026-11" in err
    code, out, err = run(capsys, "estimate", "--from-codex", str(tmp_path / "nowhere"))
    assert code == 2 and "no such directory" in err and "Traceback" not in err


def test_report_import_adds_imported_rows_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_claude_code(tmp_path / "claude")
    code, out, err = run(capsys, "report", "--import", f"claude-code:{root}", "--month", MONTH)
    assert code == 0, err
    assert "imported 4 claude-code requests (0 already in the ledger)" in err
    code, out, err = run(capsys, "report", "--import", f"claude-code:{root}", "--month", MONTH)
    assert "imported 0 claude-code requests (4 already in the ledger)" in err
    with Ledger(paths.database_path()) as ledger:
        rows = ledger.month_rows(MONTH)
    assert len(rows) == 3
    assert {r.origin for r in rows} == {"claude-code"} and {r.project for r in rows} == {
        "claude-code"
    }
    long = next(r for r in rows if r.input_tokens == 300_000)
    assert long.time == dt.datetime(2026, 11, 3, 20, tzinfo=dt.UTC)
    assert long.route == "cloud" and long.cost_usd is not None and long.cost_usd > 0
    assert "claude-code" in out  # the month's report shows the imported project
