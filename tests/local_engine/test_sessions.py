"""Several live sessions: fair interleaving on one model, decode states kept in RAM per
session (LRU within a budget) and spilled to the disk cache, tool calls out of the stream.

A real tiny random model, real threads, a real cache directory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_engine.cache.sessions import LiveSessions
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.runtime.dsml import ToolCall, render_tool_calls
from local_engine.runtime.dsml_parser import ToolCallDelta, ToolCallEnd, ToolCallStart
from local_engine.runtime.engine import Engine
from local_engine.runtime.events import Done, TextDelta
from local_engine.runtime.generate import GenerationParams
from local_engine.runtime.scheduler import Scheduler
from local_engine.runtime.token_events import TokenEvents

GREEDY = GenerationParams(temperature=0.0, max_tokens=8)
TURN_1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(write_random_checkpoint(tmp_path_factory.mktemp("sess"), preset="tiny"))


@pytest.fixture(autouse=True)
def fresh_sessions(engine: Engine) -> Iterator[None]:
    engine._sessions = None
    yield
    engine.use_kv_cache(None)
    engine._sessions = None


def done_of(events: Any) -> Done:
    *_, last = list(events)
    assert isinstance(last, Done)
    return last


def test_the_scheduler_takes_one_step_of_each_generation_in_turn() -> None:
    scheduler = Scheduler()
    order: list[str] = []
    b_may_start = threading.Event()

    def job(name: str, steps: int) -> Any:
        def start(cancel: Any) -> Iterator[str | None]:
            for i in range(steps):
                order.append(name)
                if name == "long" and i == 0:
                    b_may_start.wait(timeout=30)  # hold the long one until the short one queued
                yield f"{name}{i}"

        return start

    long_events: list[Any] = []
    reader = threading.Thread(target=lambda: long_events.extend(scheduler.run(job("long", 50))))
    reader.start()
    short = scheduler.run(job("short", 3))
    first = next(short)  # queues the short generation behind the long one's first step
    b_may_start.set()
    rest = list(short)
    reader.join(timeout=30)
    assert [first, *rest] == ["short0", "short1", "short2"]
    assert len(long_events) == 50
    # Round robin: the short one finished within its first four turns, not after 50.
    assert order[:7] == ["long", "short", "long", "short", "long", "short", "long"]


def test_a_failing_generation_raises_to_its_reader_and_the_scheduler_goes_on() -> None:
    scheduler = Scheduler()

    def bad(cancel: Any) -> Iterator[None]:
        raise ValueError("no such prompt")
        yield None

    with pytest.raises(ValueError, match="no such prompt"):
        list(scheduler.run(bad))
    assert list(scheduler.run(lambda cancel: iter(["ok"]))) == ["ok"]


def test_interleaved_generations_give_what_each_gives_alone(engine: Engine) -> None:
    alone = [done_of(engine.generate([{"role": "user", "content": q}], GREEDY)) for q in "ab"]
    results: dict[str, Done] = {}

    def ask(q: str) -> None:
        results[q] = done_of(engine.generate([{"role": "user", "content": q}], GREEDY))

    threads = [threading.Thread(target=ask, args=(q,)) for q in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[q].token_ids for q in "ab"] == [d.token_ids for d in alone]


def test_a_session_continues_from_its_state_in_ram(engine: Engine) -> None:
    first = done_of(engine.generate(TURN_1, GREEDY, session="agent-1"))
    assert first.stats.cached_prompt_tokens == 0
    reply = engine.tokenizer.decode(list(first.token_ids)).replace("<｜end▁of▁sentence｜>", "")
    turn_2 = [*TURN_1, {"role": "assistant", "content": reply}, {"role": "user", "content": "and?"}]
    second = done_of(engine.generate(turn_2, GREEDY, session="agent-1"))
    # No disk cache is configured: the prefix came from the session's state in RAM.
    assert engine.prefix_cache is None
    assert second.stats.cached_prompt_tokens >= first.stats.prompt_tokens
    cold = done_of(engine.generate(turn_2, GREEDY))
    assert cold.stats.cached_prompt_tokens == 0
    assert second.token_ids == cold.token_ids
    # Another session does not see agent-1's states.
    other = done_of(engine.generate(turn_2, GREEDY, session="agent-2"))
    assert other.stats.cached_prompt_tokens == 0


def test_sessions_beyond_the_ram_budget_spill_to_disk_and_come_back(
    engine: Engine, tmp_path: Path
) -> None:
    engine.use_kv_cache(tmp_path / "kv", ram_bytes=None)
    done_of(engine.generate(TURN_1, GREEDY, session="a"))
    one_session = engine.sessions.resident_bytes
    assert one_session > 0
    engine.kv_ram_bytes = one_session  # room for about one session's snapshots
    sessions: LiveSessions = engine.sessions
    done_of(engine.generate([{"role": "user", "content": "other"}], GREEDY, session="b"))
    assert sessions.sessions()[-1] == "b" and sessions.resident_bytes <= one_session
    assert sessions.spilled > 0
    assert engine.flush_kv_cache(timeout=60)
    sessions.forget("a", spill=False)  # whatever of "a" was still in RAM is gone now
    again = done_of(engine.generate([*TURN_1], GREEDY, session="a"))
    assert again.stats.cached_prompt_tokens > 0  # restored from the disk store


def test_tool_calls_stream_out_of_generated_tokens(engine: Engine) -> None:
    tok = engine.tokenizer
    text = "Checking." + render_tool_calls([ToolCall("read", '{"path": "a.txt", "n": 2}')])
    layer = TokenEvents(tok, thinking=False, tools=True, call_id_prefix="x")
    events = [e for token in tok.encode(text) for e in layer.token(token)] + layer.finish()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Checking."
    assert [e for e in events if isinstance(e, ToolCallStart)] == [
        ToolCallStart(0, "read", "call_x_0")
    ]
    deltas = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    (end,) = [e for e in events if isinstance(e, ToolCallEnd)]
    assert deltas == end.call.arguments == '{"path": "a.txt", "n": 2}'
    assert layer.completed_calls == 1


def test_request_tools_reach_the_prompt(engine: Engine) -> None:
    tool = {"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}
    plain = engine.encode_messages(TURN_1, GREEDY)
    with_tools = engine.encode_messages(TURN_1, GenerationParams(tools=(tool,)))
    dsml = engine.tokenizer.encode("｜DSML｜")
    assert len(dsml) == 1 and dsml[0] in with_tools and dsml[0] not in plain
    done = done_of(engine.generate(TURN_1, GenerationParams(tools=(tool,), max_tokens=3)))
    assert done.stats.prompt_tokens == len(with_tools)


def test_a_thinking_turn_re_rendered_without_its_reasoning_reuses_the_prompt(
    engine: Engine,
) -> None:
    thinking = GenerationParams(temperature=0.0, max_tokens=6, thinking=True)
    first = done_of(engine.generate(TURN_1, thinking, session="t"))
    # The client sends the answer back; the encoding drops its reasoning and re-renders the
    # closing <think> of the first prompt as </think>: everything before it is reused.
    turn_2 = [
        *TURN_1,
        {"role": "assistant", "content": "hi", "reasoning_content": "they greet me"},
        {"role": "user", "content": "again"},
    ]
    second = done_of(engine.generate(turn_2, thinking, session="t"))
    assert second.stats.cached_prompt_tokens == first.stats.prompt_tokens - 1
