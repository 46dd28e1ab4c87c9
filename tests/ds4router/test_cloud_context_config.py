"""A context window for cloud models LiteLLM's map does not know: ``cloud.models`` keys.

``context_window`` and ``max_output_tokens`` on a ``cloud.models`` entry are validated
with the rest of the config (errors name file, line and key), win over LiteLLM's map key
by key, and make a gateway model's long conversation lose its oldest turns instead of
being sent whole. The session runs against the loopback OpenAI-compatible server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import run
from openai_server import OpenAIServer
from session_support import collect, factory, ledger_rows

from ds4router.config.loader import load_config
from ds4router.config.schema import CloudModel
from ds4router.errors import ConfigError
from ds4router.events import Notice, Priced
from ds4router.sessions.context_window import (
    CONFIG_SOURCE,
    MAP_SOURCE,
    cloud_limits,
    conservative_tokens,
    prompt_budget,
)
from ds4router.sessions.session import Session
from pricing.catalog import PriceCatalog

KEY_ENV = "DS4_GATEWAY_TEST_KEY"
GATEWAY = "openai/team-gateway"  # a name LiteLLM's map does not know


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-gateway-test-0000")


def words(n: int, tag: str) -> str:
    return f"{tag} " + " ".join(["note"] * n)


def write_project(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "acme"
    directory.mkdir(exist_ok=True)
    (directory / ".ds4router.yaml").write_text(text)
    return directory


def gateway_project(tmp_path: Path, api_base: str, **limits: int) -> Path:
    data: dict[str, Any] = {
        "project": "acme",
        "default": f"cloud:{GATEWAY}",
        "fallback": {"cloud_unavailable": None, "local_unavailable": None},
        "cloud": {
            "models": [{"name": GATEWAY, "api_base": api_base, "api_key_env": KEY_ENV, **limits}],
            "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 20},
            "retries": 0,
        },
        "local": {"power": {"watts": 90, "source": "configured"}},
    }
    return write_project(tmp_path, yaml.safe_dump(data, sort_keys=False))


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "line", "key", "problem"),
    [
        ('"8k"', 5, "context_window", "valid integer"),
        ("true", 5, "context_window", "valid integer"),
        ("8192.5", 5, "context_window", "valid integer"),
        ("-4096", 5, "context_window", "greater than 0"),
        ("0", 6, "max_output_tokens", "greater than 0"),
        ('"lots"', 6, "max_output_tokens", "valid integer"),
    ],
)
def test_bad_window_values_are_config_errors_with_file_line_and_key(
    tmp_path: Path, value: str, line: int, key: str, problem: str
) -> None:
    good = {"context_window": "32768", "max_output_tokens": "4096"}
    good[key] = value
    directory = write_project(
        tmp_path,
        "project: acme\n"
        "cloud:\n"
        "  models:\n"
        f"    - name: {GATEWAY}\n"
        f"      context_window: {good['context_window']}\n"
        f"      max_output_tokens: {good['max_output_tokens']}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    message = str(caught.value)
    where = f"{directory / '.ds4router.yaml'}:{line}: cloud.models[0].{key}: "
    assert message.startswith(where), message
    assert problem in message


def test_a_typo_in_the_new_keys_suggests_the_right_one(tmp_path: Path) -> None:
    directory = write_project(
        tmp_path, f"cloud:\n  models:\n    - {{name: {GATEWAY}, context_windows: 8192}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    assert str(caught.value).endswith(
        ".ds4router.yaml:3: cloud.models[0].context_windows: unknown key 'context_windows'; "
        "did you mean 'context_window'?"
    )


def test_the_cli_says_what_is_wrong_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_project(
        tmp_path, f"cloud:\n  models:\n    - {{name: {GATEWAY}, max_output_tokens: -1}}\n"
    )
    code, out, err = run(capsys, "config", "validate", str(path / ".ds4router.yaml"))
    assert code == 2 and out == ""
    assert ":3: cloud.models[0].max_output_tokens: Input should be greater than 0" in err
    assert "Traceback" not in err


# --- which window applies -----------------------------------------------------------------------


def test_the_configured_window_comes_first_then_the_map_key_by_key() -> None:
    catalog = PriceCatalog({})
    gpt4 = catalog.context_limits("openai/gpt-4")
    assert gpt4 == (8192, 4096)  # what LiteLLM's map says; the cases below lean on it

    both = cloud_limits(
        GATEWAY, catalog, [CloudModel(name=GATEWAY, context_window=6000, max_output_tokens=500)]
    )
    assert both is not None and (both.window, both.reserve, both.source) == (
        6000,
        500,
        CONFIG_SOURCE,
    )
    # A window alone: the default answer reserve, capped at half the window.
    alone = cloud_limits(
        f"cloud:{GATEWAY}", catalog, [CloudModel(name=GATEWAY, context_window=6000)]
    )
    assert alone is not None and (alone.window, alone.reserve) == (6000, 3000)
    # A known model: the configured window wins, the map still gives the output limit...
    smaller = cloud_limits(
        "openai/gpt-4", catalog, [CloudModel(name="openai/gpt-4", context_window=16000)]
    )
    assert smaller is not None and (smaller.window, smaller.reserve) == (16000, 4096)
    assert smaller.source == CONFIG_SOURCE
    # ...and a configured output limit alone takes the map's window.
    reserve = cloud_limits(
        "openai/gpt-4", catalog, [CloudModel(name="openai/gpt-4", max_output_tokens=1000)]
    )
    assert reserve is not None and (reserve.window, reserve.reserve) == (8192, 1000)
    assert reserve.source == MAP_SOURCE
    # An output limit is no window: unknown stays unknown.
    assert cloud_limits(GATEWAY, catalog, [CloudModel(name=GATEWAY, max_output_tokens=9)]) is None
    # Entries match by exact name, as the cloud backend matches them.
    other = [CloudModel(name="openai/other-gateway", context_window=6000)]
    assert cloud_limits(GATEWAY, catalog, other) is None
    assert cloud_limits(GATEWAY, catalog) is None


# --- a session against a loopback gateway ------------------------------------------------------


async def test_a_gateway_model_with_a_configured_window_leaves_out_old_turns(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    directory = gateway_project(
        tmp_path, openai_server.base_url, context_window=2048, max_output_tokens=256
    )
    session = Session(load_config(directory), backend_factory=factory(None))
    # 2048 - 256 (answer) - 256 (margin) = 1536 for the prompt. A question is 503 tokens
    # (+8 a message), an answer "Hello, world!" 4 (+8): the newest question and one
    # earlier turn fit (511 + 523 = 1034), two earlier turns do not (1557).
    assert prompt_budget(2048, 256) == 1536
    assert conservative_tokens(words(500, "q1:")) == 503
    questions = [words(500, f"q{i}:") for i in range(1, 5)]
    notices: list[list[Notice]] = []
    for question in questions:
        events = await collect(session, question, conversation_id=session.conversation_id)
        notices.append([e for e in events if isinstance(e, Notice)])
        assert isinstance(events[-1], Priced) and events[-1].status == "ok"

    assert [len(n) for n in notices] == [0, 0, 1, 1]
    (last,) = notices[-1]
    assert (last.kind, last.model, last.window, last.dropped_turns) == (
        "context_trimmed",
        GATEWAY,
        2048,
        2,
    )
    assert last.message == f"2 earlier turns left out to fit {GATEWAY}'s 2,048-token context"
    # The gateway got the newest question after the one most recent whole turn.
    body = openai_server.requests[-1].body
    assert body is not None
    assert [m["content"] for m in body["messages"]] == [
        questions[2],
        "Hello, world!",
        questions[3],
    ]
    assert [r.status for r in ledger_rows()] == ["ok"] * 4


async def test_without_a_configured_window_the_gateway_still_gets_everything(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    """The same conversation, no ``context_window``: the window is unknown, so nothing is
    left out (the case the new keys are for)."""
    directory = gateway_project(tmp_path, openai_server.base_url, max_output_tokens=256)
    session = Session(load_config(directory), backend_factory=factory(None))
    kinds: list[str] = []
    for i in range(1, 5):
        events = await collect(
            session, words(500, f"q{i}:"), conversation_id=session.conversation_id
        )
        kinds += [e.kind for e in events if isinstance(e, Notice)]
    assert kinds == ["context_unknown"]
    body = openai_server.requests[-1].body
    assert body is not None and len(body["messages"]) == 7


# --- config show --------------------------------------------------------------------------------


def test_config_show_lists_the_window_with_the_file_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = gateway_project(
        tmp_path, "http://127.0.0.1:9/v1", context_window=2048, max_output_tokens=256
    )
    project_file = str(directory.resolve() / ".ds4router.yaml")
    code, out, err = run(capsys, "config", "show", "--json", "--project", str(directory))
    assert code == 0, err
    data = json.loads(out)
    (entry,) = data["config"]["cloud"]["models"]
    assert (entry["context_window"], entry["max_output_tokens"]) == (2048, 256)
    assert data["sources"]["cloud.models"] == project_file

    monkeypatch.setenv("COLUMNS", "400")  # one line a row, so the row can be read whole
    code, out, err = run(capsys, "config", "show", "--project", str(directory))
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if "cloud.models" in line]
    assert '"context_window": 2048' in row and '"max_output_tokens": 256' in row
    assert row.rstrip(" │").endswith(project_file)
