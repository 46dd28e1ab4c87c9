"""The local backend passes tools and sessions through: tool definitions reach the model's
prompt, its DSML calls come out as the backends' tool-call events, and a session's next turn
continues from its state in RAM. A real tiny random model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ds4router.backends import engine_port
from ds4router.backends.base import BackendRequest
from ds4router.backends.local import LocalBackend, app_event
from ds4router.events import (
    Done,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    ToolCallDone,
    ToolCallInvalid,
    ToolCallStart,
)
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.runtime.chat import render_prompt
from local_engine.runtime.dsml import ToolCall, render_tool_calls
from local_engine.runtime.dsml_parser import ToolCallParser
from local_engine.runtime.tokenizer import Tokenizer

MODEL = "local/deepseek-v4-flash"
TOOL = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "What is in notes.txt?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("tools"), preset="tiny", seed=5)


async def collect(backend: LocalBackend, request: BackendRequest) -> list[Any]:
    return [event async for event in backend.stream(request)]


def test_engine_tool_events_become_backend_events() -> None:
    text = "Let me look." + render_tool_calls([ToolCall("read_file", '{"path": "notes.txt"}')])
    parser = ToolCallParser("p")
    items = parser.feed(text) + parser.close()
    events = [app_event(item, engine_port) for item in items if not isinstance(item, str)]
    assert events[0] == ToolCallStart(0, "call_p_0", "read_file")
    assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == (
        '{"path": "notes.txt"}'
    )
    assert events[-1] == ToolCallDone(0, "call_p_0", "read_file", '{"path": "notes.txt"}')
    broken = ToolCallParser("p")
    bad = [*broken.feed("<｜DSML｜tool_calls><｜DSML｜invoke name=oops"), *broken.close()]
    (invalid,) = [app_event(i, engine_port) for i in bad if not isinstance(i, str)]
    assert isinstance(invalid, ToolCallInvalid) and "expected" in invalid.message


async def test_tools_reach_the_local_prompt(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    request = BackendRequest(
        messages=ASK, model=MODEL, max_tokens=3, tools=(TOOL,), request_id="with-tools"
    )
    events = await collect(backend, request)
    assert isinstance(events[-1], Done)
    stats = backend.stats_for("with-tools")
    assert stats is not None
    expected = len(Tokenizer.load(tiny).encode(render_prompt(ASK, tools=[TOOL])))
    assert stats.prompt_tokens == expected
    plain = len(Tokenizer.load(tiny).encode(render_prompt(ASK)))
    assert expected > plain + 100  # the tools section is in the prompt


async def test_a_session_id_reuses_the_previous_turn(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    first = BackendRequest(
        messages=ASK,
        model=MODEL,
        max_tokens=3,
        temperature=0.0,
        tools=(TOOL,),
        session_id="agent-7",
        request_id="turn-1",
    )
    events = await collect(backend, first)
    assert isinstance(events[-1], Done) and any(isinstance(e, TokenUsage) for e in events)
    reply = "".join(e.text for e in events if isinstance(e, TextDelta))
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "read_file", "arguments": '{"path": "notes.txt"}'},
    }
    turn_2 = [
        *ASK,
        {"role": "assistant", "content": reply, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "buy milk"},
    ]
    second = BackendRequest(
        messages=turn_2,
        model=MODEL,
        max_tokens=3,
        temperature=0.0,
        tools=(TOOL,),
        session_id="agent-7",
        request_id="turn-2",
    )
    assert isinstance((await collect(backend, second))[-1], Done)
    one, two = backend.stats_for("turn-1"), backend.stats_for("turn-2")
    assert one is not None and two is not None
    assert two.cached_prompt_tokens >= one.prompt_tokens
