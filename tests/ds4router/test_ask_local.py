"""``ds4router ask`` routed local, answered by a real tiny random model, priced in the ledger.

Nothing is scripted here: the session's default backend factory imports
``ds4router.backends.local``, which loads the checkpoint named in the project's
``local.engine.model_path`` and generates with it. The local cost is configured watts x
the metered seconds (electricity) plus hardware amortization over the same seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import run

from ds4router import cli, paths
from ds4router.backends import local
from ds4router.config.loader import load_config
from ds4router.events import Failed, Priced, Routed, TextDelta, TokenUsage
from ds4router.sessions.session import Session
from ds4router.targets import (
    LocalEngine,
)
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.runtime.chat import render_prompt
from local_engine.runtime.tokenizer import Tokenizer
from pricing.ledger import Ledger, LedgerRow

WATTS = 90.0
USD_PER_KWH = 0.2
HARDWARE = {"price_usd": 4800.0, "lifetime_years": 3.0, "hours_per_day": 8.0}
ASK = ("ds4router.commands.ask", "Ask once.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ask-tiny"), preset="tiny", seed=0)


@pytest.fixture(autouse=True)
def ask_command(monkeypatch: pytest.MonkeyPatch) -> None:
    if "ask" not in cli.SUBCOMMANDS:
        monkeypatch.setitem(cli.SUBCOMMANDS, "ask", ASK)


@pytest.fixture
def short_answers() -> int:
    """A random model never says end-of-sentence: `project` caps its answers at this."""
    return SHORT


SHORT = 8


def project(tmp_path: Path, model_path: Path, max_tokens: int = SHORT, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "project": "acme",
        "default": "local",
        "fallback": {"local_unavailable": None},
        "local": {
            "engine": {"model_path": str(model_path), "max_tokens": max_tokens},
            "power": {"watts": WATTS, "source": "configured"},
            "electricity_usd_per_kwh": USD_PER_KWH,
            "hardware": HARDWARE,
        },
        **overrides,
    }
    directory = tmp_path / "acme"
    directory.mkdir(exist_ok=True)
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return directory


def ledger_rows() -> list[LedgerRow]:
    with Ledger(paths.database_path()) as ledger:
        return ledger.month_rows(dt.datetime.now(dt.UTC).strftime("%Y-%m"))


def prompt_tokens(model: Path, text: str) -> int:
    prompt = render_prompt([{"role": "user", "content": text}])
    return len(Tokenizer.load(model).encode(prompt))


def amortization_per_s() -> float:
    return HARDWARE["price_usd"] / (
        HARDWARE["lifetime_years"] * 365 * HARDWARE["hours_per_day"] * 3600
    )


def test_ask_routed_local_is_answered_by_the_model_and_priced_locally(
    tiny: Path, tmp_path: Path, short_answers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = project(tmp_path, tiny)
    question = "hello, how are you?"
    code, out, err = run(capsys, "ask", question, "--project", str(directory), "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["status"] == "ok" and answer["route"] == "local" and answer["target"] == "local"
    assert answer["model"] == "local/deepseek-v4-flash"
    assert answer["text"] and answer["finish_reason"] == "length"
    assert answer["input_tokens"] == prompt_tokens(tiny, question)
    assert answer["output_tokens"] == short_answers
    assert answer["cost_usd"] > 0 and "configured" in answer["cost_detail"]

    [row] = ledger_rows()
    assert (row.route, row.status, row.project) == ("local", "ok", "acme")
    assert (row.input_tokens, row.output_tokens) == (answer["input_tokens"], short_answers)
    assert row.energy_source == "configured"
    seconds = row.duration_s
    assert seconds is not None and seconds > 0
    assert row.energy_j == pytest.approx(WATTS * seconds, rel=1e-6)
    assert row.cost_electricity_usd == pytest.approx(
        WATTS * seconds / 3.6e6 * USD_PER_KWH, rel=1e-6
    )
    assert row.cost_amortization_usd == pytest.approx(amortization_per_s() * seconds, rel=1e-6)
    assert row.cost_usd == pytest.approx(
        row.cost_electricity_usd + row.cost_amortization_usd, rel=1e-9
    )
    assert row.cost_usd == pytest.approx(answer["cost_usd"], rel=1e-9)
    # What the same tokens would have cost on the reference cloud model.
    assert row.reference_model == "anthropic/claude-opus-4-7"
    assert row.counterfactual_usd is not None and row.counterfactual_usd > 0


def test_ask_streams_the_answer_to_stdout_and_the_footer_to_stderr(
    tiny: Path, tmp_path: Path, short_answers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = project(tmp_path, tiny)
    code, out, err = run(capsys, "ask", "hi there", "--project", str(directory))
    assert code == 0, err
    [row] = ledger_rows()
    assert out.strip()
    assert "── local · local/deepseek-v4-flash" in err
    assert f"{row.input_tokens} in / {short_answers} out tok" in err


def test_a_local_model_that_fails_to_load_is_an_error_row_naming_the_tensor(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = Path(shutil.copytree(tiny, tmp_path / "broken"))
    config = json.loads((broken / "config.json").read_text())
    config["moe_intermediate_size"] = 96  # the shards hold 64: every expert is the wrong shape
    (broken / "config.json").write_text(json.dumps(config))
    directory = project(tmp_path, broken)
    try:
        code, out, err = run(capsys, "ask", "hello #secret", "--project", str(directory))
    finally:
        local.forget_load(broken)
    assert code == 1 and out == ""
    assert "failed to load" in err and "expected [96, 128]" in err
    [row] = ledger_rows()
    assert (row.route, row.status, row.error_kind) == ("local", "error", "unavailable")
    assert row.output_tokens == 0


async def test_cancelling_a_local_answer_records_the_partial_usage(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Session(load_config(project(tmp_path, tiny, max_tokens=5000)))
    events: list[Any] = []
    try:
        async for event in session.send("tell me a long story"):
            events.append(event)
            if sum(isinstance(e, TextDelta) for e in events) == 3:
                session.cancel()
    finally:
        session.close()
    assert isinstance(events[0], Routed) and events[0].decision.target == LocalEngine()
    failure = next(e for e in events if isinstance(e, Failed))
    assert failure.kind == "cancelled" and failure.after_tokens
    usage = next(e for e in events if isinstance(e, TokenUsage))
    priced = events[-1]
    assert isinstance(priced, Priced) and priced.status == "cancelled"
    assert 3 <= usage.output_tokens < 50 and priced.output_tokens == usage.output_tokens
    assert priced.cost_usd is not None and priced.cost_usd > 0
    [row] = ledger_rows()
    assert (row.route, row.status, row.output_tokens) == ("local", "cancelled", usage.output_tokens)
