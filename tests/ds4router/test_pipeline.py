"""The pipeline's three steps as a gateway drives them: a whole conversation in, events out.

``plan`` is pure (no network, no database): what it decides follows from the exchange,
the config and the routing state alone. ``Session.answer`` sends a conversation given
whole (system prompt, earlier messages with roles, tool definitions) and records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from scripted import ScriptedBackend, reply
from session_support import factory, ledger_rows

from ds4router.config.loader import load_config
from ds4router.events import Priced, Refused, Routed, TextDelta
from ds4router.routing.router import RouterState
from ds4router.sessions.plan import Exchange, plan
from ds4router.sessions.session import Session
from ds4router.targets import CloudModel, LocalEngine, Refuse

MODEL = "openai/gpt-4.1"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
TOOLS = ({"type": "function", "function": {"name": "read_file", "parameters": {}}},)


def project(tmp_path: Path, default: str = "local") -> Any:
    data = {
        "project": "gate",
        "default": default,
        "fallback": {"cloud_unavailable": "local", "local_unavailable": None},
        "local": {"power": {"watts": 90, "source": "configured"}},
    }
    directory = tmp_path / "gate"
    directory.mkdir(exist_ok=True)
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return load_config(directory)


def test_plan_scans_every_given_message_and_keeps_a_secret_one_local(tmp_path: Path) -> None:
    config = project(tmp_path, default=f"cloud:{MODEL}").config
    clean = Exchange("and now?", messages=({"role": "user", "content": "hello"},))
    assert plan(clean, config, RouterState()).decision.target == CloudModel(MODEL)
    leaked = Exchange(
        "and now?",
        messages=(
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": f"use {GH}"},
        ),
    )
    planned = plan(leaked, config, RouterState())
    assert planned.decision.target == LocalEngine() and planned.decision.rule == "privacy"
    assert not any(isinstance(t, CloudModel) for t in planned.decision.fallbacks)
    down = plan(leaked, config, RouterState(local_available=False))
    assert down.refused and down.decision.target == Refuse() and down.decision.fix


def test_plan_lays_out_the_conversation_with_the_newest_message_last(tmp_path: Path) -> None:
    config = project(tmp_path).config
    exchange = Exchange(
        "/task tests write one",
        system="be brief",
        messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}),
        tools=TOOLS,
    )
    planned = plan(exchange, config, RouterState())
    assert [m["role"] for m in planned.messages] == ["system", "user", "assistant", "user"]
    assert planned.messages[0]["content"] == "be brief"
    assert planned.messages[-1]["content"] == "write one"  # the inline tag is not sent
    assert planned.decision.task == "tests" and planned.earlier == 2
    assert planned.tools == TOOLS


async def test_answer_sends_the_whole_conversation_and_records_it(tmp_path: Path) -> None:
    local = ScriptedBackend(reply("Done."))
    session = Session(project(tmp_path), backend_factory=factory(local))
    exchange = Exchange(
        "and the tests?",
        system="be brief",
        messages=({"role": "user", "content": "fix it"}, {"role": "assistant", "content": "ok"}),
        tools=TOOLS,
    )
    events = [event async for event in session.answer(exchange)]
    session.close()
    assert isinstance(events[0], Routed) and isinstance(events[-1], Priced)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Done."
    (request,) = local.requests
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[-1]["content"] == "and the tests?"
    assert request.tools == tuple(dict(t) for t in TOOLS)
    # The conversation id travels as the session id (the local engine's state key).
    assert request.session_id == events[-1].conversation_id
    (row,) = ledger_rows()
    assert (row.route, row.status) == ("local", "ok")
    assert row.conversation_id == events[-1].conversation_id and row.conversation_id


async def test_answer_refuses_a_secret_conversation_with_nowhere_local_to_go(
    tmp_path: Path,
) -> None:
    session = Session(project(tmp_path, default=f"cloud:{MODEL}"), backend_factory=factory(None))
    exchange = Exchange("go on", messages=({"role": "user", "content": f"my token {GH}"},))
    events = [event async for event in session.answer(exchange)]
    session.close()
    assert isinstance(events[0], Refused) and isinstance(events[-1], Priced)
    assert [type(e) for e in events] == [Refused, Priced]
    (row,) = ledger_rows()
    assert row.route == "refused"
