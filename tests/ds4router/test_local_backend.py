"""``LocalBackend`` on a real tiny random checkpoint: events, cancellation, health states.

Each test that needs a model in a particular load state gets its own copy of the
checkpoint (a new path is a new load: the engine caches one engine per directory).
Holding the engine thread with a job that waits on an event makes "loading" last as long
as a test needs, without sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from load_support import fresh_copy

from ds4router.backends import local
from ds4router.backends.base import Backend, BackendRequest
from ds4router.backends.local import LocalBackend
from ds4router.events import Done, Failed, Notice, ReasoningDelta, TextDelta, TokenUsage
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.runtime.chat import render_prompt
from local_engine.runtime.tokenizer import Tokenizer

MODEL = "local/deepseek-v4-flash"
HI = [{"role": "user", "content": "Say hi in three words."}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("lb-tiny"), preset="tiny", seed=0)


@pytest.fixture
def fresh(tiny: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the checkpoint at a path no engine of this process has loaded."""
    yield from fresh_copy(tiny, tmp_path)


@pytest.fixture
def hold_engine_thread() -> Iterator[threading.Event]:
    """Blocks the engine thread until the event is set (always set at teardown)."""
    gate = threading.Event()
    local._ENGINE_THREAD.submit(lambda: gate.wait(60))
    yield gate
    gate.set()


def request(**kwargs: Any) -> BackendRequest:
    kwargs.setdefault("messages", HI)
    kwargs.setdefault("model", MODEL)
    return BackendRequest(**kwargs)


async def collect(backend: LocalBackend, req: BackendRequest) -> list[Any]:
    return [event async for event in backend.stream(req)]


def prompt_tokens(model_dir: Path, messages: list[dict[str, str]], thinking: bool = False) -> int:
    return len(Tokenizer.load(model_dir).encode(render_prompt(messages, thinking=thinking)))


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


async def test_a_reply_streams_text_then_usage_then_done(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    assert isinstance(backend, Backend)
    events = await collect(backend, request(max_tokens=6, temperature=0, request_id="r-1"))

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert deltas and all(e.text for e in deltas)
    assert isinstance(events[-2], TokenUsage) and isinstance(events[-1], Done)
    usage, done = events[-2], events[-1]
    assert usage.input_tokens == prompt_tokens(tiny, HI)
    assert usage.output_tokens == 6 and usage.reasoning_tokens == 0 and not usage.estimated
    assert done.finish_reason == "length"

    stats = backend.stats_for("r-1")
    assert stats is not None and stats is backend.last_stats
    assert (stats.prompt_tokens, stats.generated_tokens) == (usage.input_tokens, 6)
    assert stats.finish_reason == "length"
    assert 0 < stats.ttft_s <= stats.generation_s <= stats.wall_s
    assert stats.decode_tok_s > 0 and stats.prefill_tok_s > 0 and stats.peak_memory_bytes > 0

    # Greedy decoding is a function of the prompt: a second run says the same.
    again = await collect(backend, request(max_tokens=6, temperature=0))
    assert [e.text for e in again if isinstance(e, TextDelta)] == [e.text for e in deltas]


async def test_sampling_knobs_travel_from_the_request(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    seeded = request(max_tokens=5, temperature=1.0, extra={"seed": 7, "top_k": 50})
    first = await collect(backend, seeded)
    second = await collect(backend, seeded)
    other = await collect(backend, request(max_tokens=5, extra={"seed": 8, "top_k": 50}))

    def text(events: list[Any]) -> str:
        return "".join(e.text for e in events if isinstance(e, TextDelta))

    assert text(first) == text(second)
    assert text(first) != text(other)


async def test_thinking_mode_streams_reasoning_counted_in_output(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    events = await collect(backend, request(max_tokens=6, temperature=0, extra={"thinking": True}))
    reasoning = [e for e in events if isinstance(e, ReasoningDelta)]
    answer = [e for e in events if isinstance(e, TextDelta)]
    usage = next(e for e in events if isinstance(e, TokenUsage))
    assert reasoning, events
    assert usage.input_tokens == prompt_tokens(tiny, HI, thinking=True)
    assert usage.output_tokens == 6
    assert 0 < usage.reasoning_tokens <= usage.output_tokens
    if not answer:  # a random model rarely closes its thinking: all of it was reasoning
        assert usage.reasoning_tokens == usage.output_tokens


async def test_cancel_mid_decode_ends_with_usage_and_cancelled(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    events: list[Any] = []
    cancelled_at = None
    async for event in backend.stream(request(max_tokens=5000, request_id="long")):
        events.append(event)
        if len([e for e in events if not isinstance(e, Notice)]) == 3 and cancelled_at is None:
            cancelled_at = time.monotonic()
            backend.cancel()
    assert cancelled_at is not None
    # A random-weight checkpoint says so with its first words (ask and the TUI show it).
    assert isinstance(events[0], Notice) and events[0].kind == "random_weights"
    assert "noise" in events[0].message
    ended_in = time.monotonic() - cancelled_at
    usage, last = events[-2], events[-1]
    assert isinstance(last, Failed) and last.kind == "cancelled" and last.after_tokens
    assert isinstance(usage, TokenUsage) and 3 <= usage.output_tokens < 20
    assert ended_in < 5.0  # 5000 tokens at this CPU's ~50 tok/s would take minutes
    stats = backend.stats_for("long")
    assert stats is not None and stats.finish_reason == "cancelled"

    # The engine is free again for the next request.
    after = await collect(backend, request(max_tokens=3))
    assert isinstance(after[-1], Done)


async def test_a_consumer_that_stops_listening_frees_the_engine(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    stream = backend.stream(request(max_tokens=5000))
    seen = 0
    async for event in stream:
        seen += isinstance(event, TextDelta)
        if seen == 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    started = time.monotonic()
    after = await collect(backend, request(max_tokens=3))
    assert isinstance(after[-1], Done)
    assert time.monotonic() - started < 10.0  # not queued behind 5000 abandoned tokens


async def test_bad_requests_fail_before_any_token(tiny: Path) -> None:
    backend = LocalBackend(tiny)
    events = await collect(backend, request(temperature=-1.0))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].kind == "bad_request" and not events[0].after_tokens

    tool_call = [
        {"role": "user", "content": "what time is it?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "user", "content": "well?"},
    ]
    events = await collect(backend, request(messages=tool_call))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].kind == "bad_request" and "tool" in events[0].message.lower()


def test_health_without_a_model_path_is_not_configured() -> None:
    backend = LocalBackend(None)
    health = backend.health()
    assert health.status == "not_configured"
    assert "local.engine.model_path" in health.detail
    events = asyncio.run(collect(backend, request()))
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].kind == "unavailable"


def test_health_of_a_directory_that_is_not_a_model_says_why(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    health = LocalBackend(empty).health()
    assert health.status == local.FAILED_STATUS and not health.usable
    assert "config.json" in health.detail
    assert LocalBackend(tmp_path / "absent").health().detail.startswith("failed: no model")


async def test_health_goes_from_not_loaded_to_loading_to_ready(
    fresh: Path, hold_engine_thread: threading.Event
) -> None:
    backend = LocalBackend(fresh)
    idle = backend.health()
    assert idle.status == "ready" and "not loaded yet" in idle.detail

    backend.start_loading()
    loading = backend.health()
    assert loading.status == "loading" and not loading.usable
    assert str(fresh) in loading.detail and "s so far" in loading.detail
    # Another backend for the same directory (another session) shares that load.
    assert LocalBackend(fresh).health().status == "loading"

    # A request made while loading waits for the load, then answers.
    pending = asyncio.ensure_future(collect(backend, request(max_tokens=2)))
    await asyncio.sleep(0.05)
    assert not pending.done()
    hold_engine_thread.set()
    events = await asyncio.wait_for(pending, 60)
    assert isinstance(events[-1], Done)
    ready = backend.health()
    assert ready.status == "ready"
    assert "GiB of weights in memory" in ready.detail and "random weights" in ready.detail


async def test_a_model_loaded_elsewhere_in_the_process_is_ready_at_once(fresh: Path) -> None:
    from local_engine.runtime.engine import Engine

    Engine.load(fresh)  # as the TUI's loader or an `engine` command would, on this thread
    backend = LocalBackend(fresh)
    health = backend.health()
    assert health.status == "ready" and "GiB of weights in memory" in health.detail
    # Served from the engine thread although another thread loaded it.
    events = await collect(backend, request(max_tokens=3))
    assert isinstance(events[-1], Done), events[-1]


async def test_cancel_while_loading_ends_at_once(
    fresh: Path, hold_engine_thread: threading.Event
) -> None:
    backend = LocalBackend(fresh)
    pending = asyncio.ensure_future(collect(backend, request(max_tokens=2)))
    await asyncio.sleep(0.05)
    assert backend.load_state == "loading"
    backend.cancel()
    events = await asyncio.wait_for(pending, 5)
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].kind == "cancelled" and "loading" in events[0].message
    hold_engine_thread.set()
    wait_for(lambda: backend.load_state == "ready")  # the load itself went on


async def test_a_model_that_cannot_fit_fails_and_health_says_so(fresh: Path) -> None:
    small = LocalBackend(fresh, available_memory_bytes=1024)
    events = await collect(small, request(max_tokens=2))
    assert len(events) == 1 and isinstance(events[0], Failed)
    failure = events[0]
    assert failure.kind == "unavailable" and failure.retryable and not failure.after_tokens
    assert "needs about" in failure.message

    health = LocalBackend(fresh).health()  # remembered per process, for every backend
    assert health.status == local.FAILED_STATUS and not health.usable
    assert health.detail.startswith(f"failed to load {fresh}") and "needs about" in health.detail

    roomy = LocalBackend(fresh)
    roomy.start_loading(retry=True)
    wait_for(lambda: roomy.load_state != "loading")
    assert roomy.health().status == "ready"


def test_importing_the_backend_loads_neither_mlx_nor_the_engine() -> None:
    code = (
        "import sys, ds4router.backends.local, local_engine\n"
        "assert sorted(local_engine._LAZY) == local_engine.__all__\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlx', 'local_engine', 'numpy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # cpu_blas is ctypes only: it readies the BLAS that mlx will use, without mlx; worker
    # is the engine thread's job queue (threading and queue only).
    assert out.stdout.split() == [
        "local_engine",
        "local_engine.cpu_blas",
        "local_engine.runtime",
        "local_engine.runtime.worker",
    ]


def test_every_local_engine_export_resolves() -> None:
    import local_engine

    for name in local_engine.__all__:
        assert getattr(local_engine, name) is not None, name
    assert local_engine.Engine.__name__ == "Engine"
    assert local_engine.TextDelta.__module__ == "local_engine.runtime.events"


def test_the_engine_port_resolves_every_name_it_lists_from_its_module() -> None:
    import importlib

    from ds4router.backends import engine_port

    lazy = set(engine_port._NAMES)
    assert lazy | {"kv_activity"} == set(engine_port.__all__)
    for name, module in engine_port._NAMES.items():
        assert getattr(engine_port, name) is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError, match="no_such_engine_name"):
        engine_port.no_such_engine_name  # noqa: B018


def test_the_engine_port_sees_a_replaced_engine_function(monkeypatch: pytest.MonkeyPatch) -> None:
    # Names are looked up on their module at each access: a test double put there is seen.
    import local_engine.checkpoint.convert as convert_module
    from ds4router.backends import engine_port

    def replaced(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(convert_module, "convert", replaced)
    assert engine_port.convert is replaced
