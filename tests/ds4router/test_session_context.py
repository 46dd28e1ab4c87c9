"""Sessions fit long conversations into the target's context window, and mark estimated usage.

Real router, real LiteLLM to the loopback server (``openai/gpt-4``: LiteLLM's map
gives it an 8,192-token window and a 4,096-token output limit), real SQLite. The
local side is the scripted backend, whose window is the one in the ``config.json``
of ``local.engine.model_path``.

Message sizes are chosen with the conservative count in mind: ``"note"`` is one
token and a single space none, so ``words(n)`` is ``n`` tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import run
from openai_server import OpenAIServer, Reply, ok
from scripted import ScriptedBackend
from session_support import collect, factory, ledger_rows

from ds4router import cli, paths
from ds4router.config.loader import LoadedConfig, deep_merge, load_config
from ds4router.events import Failed, FallbackTaken, Notice, Priced, Routed, TextDelta
from ds4router.routing.levels import PrivacyLevel
from ds4router.sessions.context_window import conservative_tokens, prompt_budget
from ds4router.sessions.history import History
from ds4router.sessions.session import Session
from ds4router.targets import (
    CloudModel,
    LocalEngine,
)
from ds4router.token_count import count
from local_engine.checkpoint.random_weights import official_config

KEY_ENV = "DS4_CONTEXT_TEST_KEY"
MODEL = "openai/gpt-4"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-context-test-0000")
    monkeypatch.setitem(cli.SUBCOMMANDS, "ask", ("ds4router.commands.ask", "Ask."))


def words(n: int, tag: str = "") -> str:
    return (f"{tag} " if tag else "") + " ".join(["note"] * n)


def config_data(api_base: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "project": "acme",
        "default": f"cloud:{MODEL}",
        "fallback": {"cloud_unavailable": None, "local_unavailable": None},
        "cloud": {
            "models": [{"name": MODEL, "api_base": api_base, "api_key_env": KEY_ENV}],
            "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 20},
            "retries": 0,
        },
        "local": {"power": {"watts": 90, "source": "configured"}},
    }
    return deep_merge(data, overrides or {})


def project_dir(tmp_path: Path, api_base: str, overrides: dict[str, Any] | None = None) -> Path:
    directory = tmp_path / "acme"
    directory.mkdir(exist_ok=True)
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(config_data(api_base, overrides)))
    return directory


def project(tmp_path: Path, api_base: str, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    return load_config(project_dir(tmp_path, api_base, overrides))


def local_model(tmp_path: Path, window: int) -> Path:
    """A checkpoint directory whose config.json says the local model holds ``window``."""
    directory = tmp_path / "ds4-small-window"
    directory.mkdir(exist_ok=True)
    config = official_config("tiny", max_position_embeddings=window)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def sent_text(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


# --- fitting the cloud window -------------------------------------------------------------------


async def test_a_long_conversation_leaves_out_its_oldest_turns_for_the_cloud_window(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(None))
    # Each question is 903 tokens (+8 per message), each answer "Hello, world!" 4 (+8):
    # gpt-4 leaves 8192 - 4096 (answer) - 256 (margin) = 3840 for the prompt, i.e. the
    # newest question and three earlier turns (911 + 3 x 923 = 3680; four: 4603).
    assert prompt_budget(8192, 4096) == 3840
    assert conservative_tokens(words(900, "q1:")) == 903
    questions = [words(900, f"q{i}:") for i in range(1, 7)]
    notices: list[list[Notice]] = []
    cid: str | None = None
    for question in questions:
        events = await collect(session, question, conversation_id=cid)
        cid = session.conversation_id
        notices.append([e for e in events if isinstance(e, Notice)])
        assert isinstance(events[-1], Priced) and events[-1].status == "ok"

    # Nothing left out while the conversation fit; then the oldest turns, one by one.
    assert [len(n) for n in notices] == [0, 0, 0, 0, 1, 1]
    assert [n[0].dropped_turns for n in notices[4:]] == [1, 2]
    last = notices[-1][0]
    assert last.kind == "context_trimmed" and last.window == 8192 and last.model == MODEL
    assert last.message == "2 earlier turns left out to fit openai/gpt-4's 8,192-token context"

    # The server got the newest question after the three most recent whole turns.
    body = openai_server.requests[-1].body
    assert body is not None
    expected: list[str] = []
    for question in questions[2:5]:
        expected += [question, "Hello, world!"]
    assert sent_text(body["messages"]) == [*expected, questions[5]]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 3 + ["user"]
    # History keeps the whole conversation.
    with History(paths.database_path()) as history:
        kept = history.messages(cid or "")
    assert [m.text for m in kept if m.role == "user"] == questions
    assert [r.status for r in ledger_rows()] == ["ok"] * 6


async def test_a_message_too_long_for_the_window_is_refused_and_nothing_is_sent(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(None))
    events = await collect(session, words(5000))

    assert openai_server.count == 0
    failure = events[-2]
    assert isinstance(failure, Failed) and failure.kind == "context_window"
    assert not failure.after_tokens
    # Counted by gpt-4's own tokenizer (LiteLLM's), not estimated.
    exact = count(CloudModel("openai/gpt-4"), [{"role": "user", "content": words(5000)}])
    assert exact.exact and exact.method == "litellm"
    assert "nothing was sent" in failure.message and f"{exact.tokens:,} tokens" in failure.message
    assert "8,192 tokens" in failure.message and "4,096 kept for the answer" in failure.message
    priced = events[-1]
    assert isinstance(priced, Priced) and priced.status == "error"
    (row,) = ledger_rows()
    assert (row.route, row.model, row.status, row.error_kind) == (
        "cloud",
        MODEL,
        "error",
        "context_window",
    )
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (0, 0, 0.0)


async def test_a_fallback_with_room_answers_what_the_first_window_cannot_hold(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    loaded = project(tmp_path, openai_server.base_url, {"fallback": {"cloud_unavailable": "local"}})
    local = ScriptedBackend()
    session = Session(loaded, backend_factory=factory(local))
    question = words(5000)
    events = await collect(session, question)

    assert openai_server.count == 0
    taken = [e for e in events if isinstance(e, FallbackTaken)]
    assert len(taken) == 1 and "context window" in taken[0].reason
    assert "".join(e.text for e in events if isinstance(e, TextDelta))
    # The local window is unknown here (no model configured): sent as it is, no notice.
    assert not [e for e in events if isinstance(e, Notice)]
    assert sent_text(local.requests[0].messages) == [question]
    (row,) = ledger_rows()
    assert (row.route, row.status, row.rule) == ("local", "ok", "fallback")


async def test_an_unknown_window_sends_everything_and_says_so(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    gateway = "openai/team-gateway"  # a name LiteLLM's map does not know
    loaded = project(
        tmp_path,
        openai_server.base_url,
        {
            "default": f"cloud:{gateway}",
            "cloud": {
                "models": [
                    {"name": gateway, "api_base": openai_server.base_url, "api_key_env": KEY_ENV}
                ]
            },
        },
    )
    session = Session(loaded, backend_factory=factory(None))
    first = await collect(session, "first question")
    assert not [e for e in first if isinstance(e, Notice)]  # nothing earlier to mention
    events = await collect(session, "second question", conversation_id=session.conversation_id)
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert notice.kind == "context_unknown" and notice.window is None
    assert notice.message.startswith("openai/team-gateway's context window is unknown")
    assert "1 earlier turn" in notice.message
    body = openai_server.requests[-1].body
    assert body is not None and len(body["messages"]) == 3
    # Said once per conversation, not under every answer; the whole conversation still goes.
    events = await collect(session, "third question", conversation_id=session.conversation_id)
    assert not [e for e in events if isinstance(e, Notice)]
    body = openai_server.requests[-1].body
    assert body is not None and len(body["messages"]) == 5


# --- privacy: classified on the whole conversation ----------------------------------------------


SAID = "[github_token: 40 chars redacted]"


async def test_leaving_turns_out_never_makes_a_request_look_less_private(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    """A secret said at the start of a conversation keeps it local, even after that turn no
    longer fits the local window and is left out of what the model is sent."""
    window = 2048  # local: 2048 - 256 (max_tokens) = 1792 for the prompt, counted exactly
    overrides = {
        "fallback": {"cloud_unavailable": "local"},
        "local": {"engine": {"model_path": str(local_model(tmp_path, window)), "max_tokens": 256}},
    }
    local = ScriptedBackend()
    loaded = project(tmp_path, openai_server.base_url, overrides)
    session = Session(loaded, backend_factory=factory(local))
    events = await collect(session, f"is {GH} still a valid token?")
    assert events[0].decision.target == LocalEngine()
    cid = session.conversation_id
    routed: list[Routed] = []
    for i in range(4):
        events = await collect(session, words(500, f"q{i}:"), conversation_id=cid)
        routed.append(events[0])
        notices = [e for e in events if isinstance(e, Notice)]
        # History keeps the redacted text: the earlier turn reaches the model as its preview.
        assert all(GH not in m["content"] for m in local.requests[-1].messages)
        if any(SAID in m["content"] for m in local.requests[-1].messages):
            assert not notices
        else:
            assert notices and notices[0].kind == "context_trimmed"

    # The secret turn was left out of the last requests the model saw...
    assert all(SAID not in m["content"] for m in local.requests[-1].messages)
    assert any(SAID in m["content"] for m in local.requests[1].messages)
    # ...yet every follow-up was classified on the whole conversation: secret, local.
    for event in routed:
        assert event.decision.target == LocalEngine()
        assert event.request.privacy.level == PrivacyLevel.SECRET
        assert event.decision.privacy == PrivacyLevel.SECRET
    assert openai_server.count == 0
    assert [r.privacy for r in ledger_rows()] == ["secret"] * 5
    assert session.preview("and one more", [])[1].target == LocalEngine()


# --- estimated usage ----------------------------------------------------------------------------


async def test_a_stream_without_usage_is_recorded_as_estimated(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(ok("Measured", " answer"), Reply(text=("No", " usage"), usage=None))
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(None))
    measured = await collect(session, "first")
    guessed = await collect(session, "second")

    assert isinstance(measured[-1], Priced) and not measured[-1].usage_estimated
    assert isinstance(guessed[-1], Priced) and guessed[-1].usage_estimated
    first, second = ledger_rows()
    assert (first.usage_estimated, second.usage_estimated) == (False, True)
    assert first.input_tokens == 11  # what the server reported
    assert second.input_tokens > 0 and second.output_tokens > 0  # counted here
    assert second.cost_usd is not None and second.cost_usd > 0


def test_ask_prints_notices_and_marks_estimated_tokens(
    tmp_path: Path, openai_server: OpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = project_dir(tmp_path, openai_server.base_url)
    openai_server.script(*[ok("Hello, world!")] * 5, Reply(text=("No", " usage"), usage=None))
    cid = ""
    for i in range(5):
        extra = ["--conversation", cid] if cid else []
        code, out, err = run(
            capsys, "ask", words(900, f"q{i}:"), "--project", str(directory), "--json", *extra
        )
        assert code == 0, err
        cid = json.loads(out)["conversation_id"]
    data = json.loads(out)
    assert data["notices"] == [
        {
            "kind": "context_trimmed",
            "message": "1 earlier turn left out to fit openai/gpt-4's 8,192-token context",
        }
    ]
    assert data["usage_estimated"] is False

    code, out, err = run(
        capsys, "ask", words(900, "q5:"), "--project", str(directory), "--conversation", cid
    )
    assert code == 0, err
    assert out.strip() == "No usage"
    assert "2 earlier turns left out to fit openai/gpt-4's 8,192-token context" in err
    (footer,) = [line for line in err.splitlines() if line.startswith("── ")]
    assert " in / ~" in footer and "· ~" in footer  # both counts marked as estimates
    assert ledger_rows()[-1].usage_estimated


def test_ask_explains_a_message_too_long_for_the_model(
    tmp_path: Path, openai_server: OpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = project_dir(tmp_path, openai_server.base_url)
    code, out, err = run(capsys, "ask", words(5000), "--project", str(directory))
    assert code == 1 and out == ""
    exact = count(CloudModel("openai/gpt-4"), [{"role": "user", "content": words(5000)}]).tokens
    assert "context_window" in err and f"{exact:,} tokens" in err and "8,192 tokens" in err
    assert "Traceback" not in err
    assert openai_server.count == 0
