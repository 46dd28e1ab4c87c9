"""A newcomer's command line: an unknown --model stops with close names (exit 2), and a
refusal only proposes changes that can work with this config."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run

from ds4router.config import Config, load_config
from ds4router.routing.classify import classify
from ds4router.routing.request import Request
from ds4router.routing.router import RouterState, decide
from ds4router.targets import Refuse


@pytest.fixture
def fresh_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = tmp_path / "fresh"
    project.mkdir()
    monkeypatch.chdir(project)
    return project


def test_an_unknown_model_exits_2_with_close_names(
    fresh_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "ask", "--model", "openai/gpt-41", "hello")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "unknown model" in err and "did you mean openai/gpt-4.1" in err
    code, _out, err = run(capsys, "ask", "--model", "local:ollama", "hello")
    assert code == 2 and "local.servers" in err


def test_with_nothing_configured_the_advice_is_to_get_a_local_model(
    fresh_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(capsys, "ask", "hello")
    assert code == 1 and "Refused: nothing was sent." in err
    assert "ds4router models pull demo" in err
    assert "fallback.local_unavailable" not in err  # no cloud model to fall back on


def _decide(config: Config, state: RouterState):  # type: ignore[no-untyped-def]
    return decide(classify(Request("hello"), config), config, state)


def test_a_cloud_fallback_is_proposed_only_with_a_cloud_model_that_can_answer(
    fresh_dir: Path,
) -> None:
    (fresh_dir / ".ds4router.yaml").write_text(
        "cloud: {models: [{name: openai/gpt-4.1, api_key_env: OPENAI_API_KEY}]}\n",
        encoding="utf-8",
    )
    config = load_config(cwd=fresh_dir).config
    down = RouterState(local_available=False, cloud_available=True)
    decision = _decide(config, down)
    assert isinstance(decision.target, Refuse) and decision.fix is not None
    assert "fallback.local_unavailable: 'cloud:openai/gpt-4.1'" in decision.fix
    both_down = RouterState(local_available=False, cloud_available=False)
    decision = _decide(config, both_down)
    assert decision.fix is not None and "fallback.local_unavailable" not in decision.fix
