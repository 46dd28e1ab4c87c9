"""CloudBackend through real LiteLLM to a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from typing import Any

import pytest
from openai_server import OpenAIServer, Reply, error, no_usage, ok

from ds4router.backends import Backend, BackendRequest
from ds4router.backends.cloud import KEYLESS_PLACEHOLDER, CloudBackend, load_litellm
from ds4router.config.schema import CloudConfig, CloudModel, CloudTimeouts
from ds4router.events import BackendEvent, Done, Failed, ReasoningDelta, TextDelta, TokenUsage

KEY_ENV = "DS4_TEST_GATEWAY_KEY"
KEY = "sk-test-4f9c2e7a1b0d83c6"
MODEL = "openai/gpt-4.1"
MESSAGES = [{"role": "user", "content": "Say hello to the world."}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def make_backend(
    server: OpenAIServer,
    *,
    retries: int = 2,
    first_token_s: float = 5.0,
    total_s: float = 20.0,
    connect_s: float = 2.0,
    key_env: str | None = KEY_ENV,
    api_base: str | None = None,
    **kwargs: Any,
) -> CloudBackend:
    config = CloudConfig(
        models=[CloudModel(name=MODEL, api_base=api_base or server.base_url, api_key_env=key_env)],
        timeouts=CloudTimeouts(connect_s=connect_s, first_token_s=first_token_s, total_s=total_s),
        retries=retries,
    )
    fast: dict[str, Any] = {
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "jitter_s": 0.01,
        "retry_after_max_s": 0.05,
    }
    fast.update(kwargs)
    return CloudBackend(config, **fast)


async def collect(backend: CloudBackend, **request: Any) -> list[BackendEvent]:
    fields: dict[str, Any] = {"messages": MESSAGES, "model": MODEL}
    fields.update(request)
    return [event async for event in backend.stream(BackendRequest(**fields))]


def text_of(events: list[BackendEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def last_failure(events: list[BackendEvent]) -> Failed:
    assert isinstance(events[-1], Failed), events
    return events[-1]


# -- the happy path -------------------------------------------------------------


async def test_streams_text_reasoning_and_provider_usage(openai_server: OpenAIServer) -> None:
    openai_server.script(
        Reply(
            text=("Hello", ", ", "world", "!"),
            reasoning=("The user ", "wants a greeting."),
            usage={
                "prompt_tokens": 20,
                "completion_tokens": 9,
                "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 8},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        )
    )
    backend = make_backend(openai_server)
    assert isinstance(backend, Backend)

    events = await collect(backend, max_tokens=64, temperature=0.2)

    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta("The user "),
        ReasoningDelta("wants a greeting."),
    ]
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("Hello"),
        TextDelta(", "),
        TextDelta("world"),
        TextDelta("!"),
    ]
    assert events[-2:] == [
        TokenUsage(
            input_tokens=20,
            cached_input_tokens=8,
            cache_write_tokens=0,
            output_tokens=9,
            reasoning_tokens=3,
            estimated=False,
        ),
        Done("stop"),
    ]
    assert openai_server.count == 1
    sent = openai_server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body is not None
    assert sent.body["model"] == "gpt-4.1"
    assert sent.body["messages"] == MESSAGES
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_tokens"] == 64
    assert sent.body["temperature"] == 0.2
    assert sent.headers.get("authorization") == f"Bearer {KEY}"


async def test_finish_reason_is_passed_through(openai_server: OpenAIServer) -> None:
    openai_server.script(ok("cut", " short", finish_reason="length"))
    events = await collect(make_backend(openai_server))
    assert text_of(events) == "cut short"
    assert events[-1] == Done("length")


async def test_missing_usage_is_counted_locally_and_marked_estimated(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(no_usage("Hello", ", ", "world", "!"))
    events = await collect(make_backend(openai_server))

    usage = events[-2]
    assert isinstance(usage, TokenUsage)
    assert usage.estimated is True
    litellm = load_litellm()
    assert usage.input_tokens == litellm.token_counter(model=MODEL, messages=MESSAGES)
    assert usage.output_tokens == litellm.token_counter(model=MODEL, text="Hello, world!")
    assert usage.output_tokens > 0
    assert events[-1] == Done("stop")


# -- faults map to kinds ----------------------------------------------------------

FAULTS: list[tuple[str, Reply, str, bool]] = [
    ("401", error(401, "Incorrect API key provided", type_="invalid_request_error"), "auth", False),
    (
        "403",
        error(403, "Project does not have access", type_="invalid_request_error"),
        "auth",
        False,
    ),
    (
        "context",
        error(
            400,
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens.",
            type_="invalid_request_error",
            code="context_length_exceeded",
        ),
        "context_window",
        False,
    ),
    (
        "policy",
        error(
            400,
            "Your request was rejected as a result of our safety system.",
            type_="invalid_request_error",
            code="content_policy_violation",
        ),
        "content_policy",
        False,
    ),
    (
        "400",
        error(400, "'temperature' must be <= 2", type_="invalid_request_error"),
        "bad_request",
        False,
    ),
]


@pytest.mark.parametrize(("name", "reply", "kind", "retryable"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_client_errors_map_to_kinds_and_are_not_retried(
    openai_server: OpenAIServer, name: str, reply: Reply, kind: str, retryable: bool
) -> None:
    openai_server.script(reply)
    events = await collect(make_backend(openai_server, retries=3))

    assert len(events) == 1
    failure = last_failure(events)
    assert (failure.kind, failure.retryable, failure.after_tokens) == (kind, retryable, False)
    assert MODEL in failure.message
    assert "\n" not in failure.message
    assert openai_server.count == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (error(429, "Rate limit reached", type_="rate_limit_error", retry_after="0"), "rate_limit"),
        (error(500, "The server had an error"), "unavailable"),
        (error(502, "Bad gateway"), "unavailable"),
        (error(503, "The engine is currently overloaded"), "unavailable"),
    ],
    ids=["429", "500", "502", "503"],
)
async def test_provider_errors_are_retried_then_reported(
    openai_server: OpenAIServer, reply: Reply, kind: str
) -> None:
    openai_server.default = reply
    events = await collect(make_backend(openai_server, retries=2))

    failure = last_failure(events)
    assert (failure.kind, failure.retryable, failure.after_tokens) == (kind, True, False)
    assert "after 3 attempts" in failure.message
    assert openai_server.count == 3


async def test_retry_before_first_token_then_success(openai_server: OpenAIServer) -> None:
    openai_server.script(error(500), error(429, retry_after="0"), ok("fine"))
    events = await collect(make_backend(openai_server, retries=2))

    assert text_of(events) == "fine"
    assert isinstance(events[-1], Done)
    assert openai_server.count == 3


async def test_broken_stream_before_any_token_is_retried(openai_server: OpenAIServer) -> None:
    openai_server.script(Reply(disconnect_after=0), Reply(malformed_after=0), ok("third"))
    events = await collect(make_backend(openai_server, retries=2))

    assert text_of(events) == "third"
    assert isinstance(events[-1], Done)
    assert openai_server.count == 3


async def test_retry_after_header_sets_the_delay(openai_server: OpenAIServer) -> None:
    openai_server.script(error(429, retry_after="1"), ok("later"))
    # Retry-After 1 s, capped at 0.3 s; plain backoff would be 0.01 s.
    backend = make_backend(openai_server, retries=1, retry_after_max_s=0.3)
    events = await collect(backend)

    assert text_of(events) == "later"
    first, second = openai_server.requests
    assert 0.3 <= second.at - first.at < 0.9


async def test_retries_stop_at_the_configured_count(openai_server: OpenAIServer) -> None:
    openai_server.default = error(500)
    events = await collect(make_backend(openai_server, retries=0))
    assert last_failure(events).kind == "unavailable"
    assert openai_server.count == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(disconnect_after=2), "unavailable"),
        (Reply(malformed_after=2), "unavailable"),
        (Reply(hang_after=2, hang_s=10), "timeout"),
    ],
    ids=["disconnect", "malformed", "hang"],
)
async def test_failure_after_tokens_is_never_retried_and_keeps_usage(
    openai_server: OpenAIServer, reply: Reply, kind: str
) -> None:
    openai_server.script(reply)
    backend = make_backend(openai_server, retries=3, first_token_s=0.5)
    started = time.monotonic()
    events = await collect(backend)

    assert time.monotonic() - started < 3
    assert text_of(events) == "Hello, "
    usage = events[-2]
    assert isinstance(usage, TokenUsage) and usage.estimated and usage.output_tokens > 0
    failure = last_failure(events)
    assert (failure.kind, failure.after_tokens) == (kind, True)
    assert openai_server.count == 1


async def test_hang_before_first_byte_times_out_without_retry(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(Reply(hang_after=0, hang_s=10))
    backend = make_backend(openai_server, retries=3, first_token_s=0.5, total_s=30)
    started = time.monotonic()
    events = await collect(backend)
    elapsed = time.monotonic() - started

    failure = last_failure(events)
    assert (failure.kind, failure.retryable, failure.after_tokens) == ("timeout", True, False)
    assert "first_token_s" in failure.message
    assert 0.5 <= elapsed < 2.5
    assert openai_server.count == 1


async def test_total_timeout_ends_a_slow_stream(openai_server: OpenAIServer) -> None:
    openai_server.script(ok(*["tok"] * 50, chunk_delay_s=0.1))
    backend = make_backend(openai_server, first_token_s=5, total_s=1.0)
    started = time.monotonic()
    events = await collect(backend)

    assert time.monotonic() - started < 2.5
    failure = last_failure(events)
    assert (failure.kind, failure.after_tokens) == ("timeout", True)
    assert "total_s" in failure.message
    assert 0 < text_of(events).count("tok") < 50


async def test_connect_timeout_is_applied(openai_server: OpenAIServer) -> None:
    # A listener that never accepts, with its backlog full: the kernel drops
    # further SYNs, so a connect hangs until the client gives up.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        backend = make_backend(
            openai_server,
            retries=0,
            connect_s=0.3,
            first_token_s=10,
            api_base=f"http://127.0.0.1:{port}/v1",
        )
        started = time.monotonic()
        events = await collect(backend)
        elapsed = time.monotonic() - started
    finally:
        for filler in fillers:
            filler.close()
        listener.close()

    failure = last_failure(events)
    assert failure.kind in ("timeout", "unavailable")
    assert elapsed < 5, elapsed


# -- cancellation -----------------------------------------------------------------


async def test_cancel_mid_stream_stops_at_once(openai_server: OpenAIServer) -> None:
    openai_server.script(ok(*[f"w{i} " for i in range(40)], chunk_delay_s=0.1))
    backend = make_backend(openai_server)
    events: list[BackendEvent] = []
    started = time.monotonic()
    async for event in backend.stream(BackendRequest(messages=MESSAGES, model=MODEL)):
        events.append(event)
        if isinstance(event, TextDelta) and len(events) == 3:
            backend.cancel()
    elapsed = time.monotonic() - started

    assert elapsed < 1.5, elapsed
    failure = last_failure(events)
    assert (failure.kind, failure.retryable, failure.after_tokens) == ("cancelled", False, True)
    usage = events[-2]
    assert isinstance(usage, TokenUsage) and usage.estimated
    assert len([e for e in events if isinstance(e, TextDelta)]) < 10
    assert openai_server.count == 1


async def test_cancel_from_another_thread_before_first_token(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(Reply(hang_after=0, hang_s=10))
    backend = make_backend(openai_server, first_token_s=10, total_s=30, retries=3)
    timer = threading.Timer(0.3, backend.cancel)
    timer.start()
    started = time.monotonic()
    try:
        events = await collect(backend)
    finally:
        timer.cancel()

    assert time.monotonic() - started < 2
    assert events == [Failed("cancelled", f"{MODEL}: cancelled", False, False)]
    assert openai_server.count == 1


async def test_cancel_during_backoff_stops_retrying(openai_server: OpenAIServer) -> None:
    openai_server.default = error(500)
    backend = make_backend(openai_server, retries=5, backoff_base_s=5.0, backoff_max_s=5.0)

    async def cancel_soon() -> None:
        await asyncio.sleep(0.3)
        backend.cancel()

    canceller = asyncio.create_task(cancel_soon())
    started = time.monotonic()
    events = await collect(backend)
    await canceller

    assert time.monotonic() - started < 2
    assert last_failure(events).kind == "cancelled"
    assert openai_server.count == 1


async def test_task_cancellation_propagates(openai_server: OpenAIServer) -> None:
    openai_server.script(Reply(hang_after=0, hang_s=10))
    backend = make_backend(openai_server, first_token_s=10)
    task = asyncio.create_task(collect(backend))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- keys ---------------------------------------------------------------------------


async def test_key_is_read_by_name_at_call_time_and_never_echoed(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    backend = make_backend(openai_server)
    rotated = "sk-rotated-9d8e7f6a5b4c"
    monkeypatch.setenv(KEY_ENV, rotated)
    # A provider that echoes the key back in its error message.
    openai_server.script(ok("hi"), error(401, f"Incorrect API key provided: {rotated}."))

    good = await collect(backend)
    bad = await collect(backend)

    headers = [r.headers.get("authorization") for r in openai_server.requests]
    assert headers == [f"Bearer {rotated}", f"Bearer {rotated}"]
    failure = last_failure(bad)
    assert failure.kind == "auth"
    assert KEY_ENV in failure.message
    assert "[redacted]" in failure.message
    for event in good + bad:
        assert rotated not in repr(event)
    out, err = capfd.readouterr()
    assert rotated not in out + err
    assert out == ""


async def test_missing_key_fails_before_sending_and_names_the_variable(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    events = await collect(make_backend(openai_server))

    failure = last_failure(events)
    assert (failure.kind, failure.retryable) == ("auth", False)
    assert KEY_ENV in failure.message
    assert KEY not in failure.message
    assert openai_server.count == 0


async def test_keyless_gateway_never_receives_a_providers_default_key(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key-000111")
    events = await collect(make_backend(openai_server, key_env=None))

    assert text_of(events) == "Hello, world!"
    assert openai_server.requests[0].headers.get("authorization") == (
        f"Bearer {KEYLESS_PLACEHOLDER}"
    )


async def test_unconfigured_model_needs_its_providers_key(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    events = await collect(make_backend(openai_server), model="anthropic/claude-opus-4-7")
    failure = last_failure(events)
    assert failure.kind == "auth"
    assert "ANTHROPIC_API_KEY" in failure.message
    assert openai_server.count == 0


async def test_nothing_is_printed_on_failures(
    openai_server: OpenAIServer, capfd: pytest.CaptureFixture[str]
) -> None:
    openai_server.script(error(500), error(500), error(400, "bad"))
    await collect(make_backend(openai_server, retries=1))
    await collect(make_backend(openai_server, retries=0))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# -- the test server and the guard themselves -----------------------------------------


def test_server_answers_without_streaming_and_records_bodies(
    openai_server: OpenAIServer,
) -> None:
    openai_server.script(ok("plain", " answer"))
    body = json.dumps({"model": "gpt-4.1", "messages": MESSAGES}).encode()
    request = urllib.request.Request(
        f"{openai_server.base_url}/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.load(response)

    assert answer["choices"][0]["message"]["content"] == "plain answer"
    assert answer["usage"]["completion_tokens"] == 2
    assert openai_server.count == 1
    assert openai_server.requests[0].body == {"model": "gpt-4.1", "messages": MESSAGES}


def test_network_guard_refuses_non_loopback(network_guard: Any) -> None:
    with pytest.raises(OSError, match="network guard"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    with pytest.raises(OSError, match="network guard"):
        socket.getaddrinfo("api.openai.com", 443)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError, match="network guard"):
            sock.connect(("198.51.100.7", 80))
        with pytest.raises(OSError, match="network guard"):
            sock.connect_ex(("203.0.113.9", 80))
    finally:
        sock.close()
    assert len(network_guard.violations) == 4
    network_guard.violations.clear()  # expected here; any other test would fail at teardown


async def test_network_guard_catches_a_backend_reaching_for_a_real_provider(
    network_guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-a-real-key-000000")
    backend = CloudBackend(CloudConfig(retries=0))  # openai/gpt-4.1 -> api.openai.com

    events = await collect(backend)

    failure = last_failure(events)
    assert failure.kind == "unavailable"
    assert any("api.openai.com" in v for v in network_guard.violations), network_guard.violations
    network_guard.violations.clear()  # expected here; any other test would fail at teardown


def test_importing_the_backends_does_not_import_litellm() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ds4router.backends, ds4router.backends.cloud, ds4router.backends.health\n"
        "heavy = [m for m in ('litellm', 'httpx', 'openai', 'aiohttp') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
