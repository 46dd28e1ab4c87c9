"""Backend health: the failure window, the connectivity check, and fast offline fallback."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai_server import OpenAIServer, error, ok

from ds4router.backends import BackendRequest, Health
from ds4router.backends.cloud import CloudBackend
from ds4router.backends.endpoints import Endpoint, endpoint_for_url, resolve
from ds4router.backends.health import FailureWindow, Reachability, tcp_dial
from ds4router.config.schema import CloudConfig, CloudModel, CloudTimeouts
from ds4router.events import BackendEvent, Failed, TextDelta

MODEL = "openai/gpt-4.1"
KEY_ENV = "DS4_TEST_HEALTH_KEY"
MESSAGES = [{"role": "user", "content": "ping"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-health-test-123456")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def backend_for(api_base: str, **kwargs: Any) -> CloudBackend:
    retries = kwargs.pop("retries", 0)
    config = CloudConfig(
        models=[CloudModel(name=MODEL, api_base=api_base, api_key_env=KEY_ENV)],
        timeouts=CloudTimeouts(connect_s=1.0, first_token_s=5.0, total_s=30.0),
        retries=retries,
    )
    options: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 0.02, "jitter_s": 0.0}
    options.update(kwargs)
    return CloudBackend(config, **options)


async def collect(backend: CloudBackend) -> list[BackendEvent]:
    request = BackendRequest(messages=MESSAGES, model=MODEL)
    return [event async for event in backend.stream(request)]


# -- the failure window (pure state) --------------------------------------------------


def test_window_degrades_after_repeated_provider_failures() -> None:
    clock = FakeClock()
    window = FailureWindow(window_s=60, degraded_after=3, clock=clock)
    window.record_failure(MODEL, "unavailable", "HTTP 503")
    window.record_failure(MODEL, "timeout")
    assert window.health(MODEL) == Health("ready", "")

    window.record_failure(MODEL, "rate_limit", "slow down")
    health = window.health(MODEL)
    assert health.status == "degraded"
    assert "3 failed requests" in health.detail and "rate_limit: slow down" in health.detail
    assert health.usable and not health.ready


def test_one_success_clears_degradation() -> None:
    window = FailureWindow(degraded_after=2, clock=FakeClock())
    window.record_failure(MODEL, "unavailable")
    window.record_failure(MODEL, "unavailable")
    assert window.health(MODEL).status == "degraded"
    window.record_success(MODEL)
    assert window.health(MODEL).status == "ready"
    window.record_failure(MODEL, "unavailable")
    assert window.health(MODEL).status == "ready"


def test_failures_expire_with_the_window() -> None:
    clock = FakeClock()
    window = FailureWindow(window_s=60, degraded_after=2, clock=clock)
    window.record_failure(MODEL, "unavailable")
    clock.now += 45
    window.record_failure(MODEL, "unavailable")
    assert window.health(MODEL).status == "degraded"
    clock.now += 20  # the first failure is now 65 s old
    assert window.health(MODEL).status == "ready"


def test_user_side_failures_do_not_count() -> None:
    window = FailureWindow(degraded_after=1, clock=FakeClock())
    for kind in ("auth", "bad_request", "context_window", "content_policy", "cancelled"):
        window.record_failure(MODEL, kind)
    assert window.health(MODEL).status == "ready"
    window.record_failure(MODEL, "internal")
    assert window.health(MODEL).status == "degraded"


def test_failures_are_kept_per_model() -> None:
    window = FailureWindow(degraded_after=2, clock=FakeClock())
    window.record_failure("anthropic/claude-opus-4-7", "unavailable")
    window.record_failure("anthropic/claude-opus-4-7", "unavailable")
    assert window.health("anthropic/claude-opus-4-7").status == "degraded"
    assert window.health(MODEL).status == "ready"


# -- the connectivity check ----------------------------------------------------------


def test_probe_connects_and_sends_nothing() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(2)
    endpoint = Endpoint("127.0.0.1", listener.getsockname()[1])
    try:
        probe = Reachability().check(endpoint)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2)
            received = conn.recv(1024)
    finally:
        listener.close()

    assert probe.reachable and probe.detail == ""
    assert received == b""  # the peer closed without a byte


def test_probe_of_a_refusing_port_is_fast_and_says_why(closed_port: int) -> None:
    probe = Reachability().check(Endpoint("127.0.0.1", closed_port))
    assert not probe.reachable
    assert "refused" in probe.detail.lower()
    assert probe.elapsed_s < 0.5


def test_probe_results_are_cached_for_their_ttl() -> None:
    clock = FakeClock()
    reach = Reachability(ok_ttl_s=30, fail_ttl_s=5, clock=clock)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    endpoint = Endpoint("127.0.0.1", listener.getsockname()[1])
    try:
        assert not reach.check(endpoint).reachable  # bound, not listening: refused
        listener.listen(4)
        clock.now += 4
        assert not reach.check(endpoint).reachable  # still the cached refusal
        clock.now += 2
        assert reach.check(endpoint).reachable  # failure TTL over: dialled again
        listener.close()
        clock.now += 29
        assert reach.check(endpoint).reachable  # success cached for 30 s
        clock.now += 2
        assert reach.cached(endpoint) is None
        assert not reach.check(endpoint).reachable
    finally:
        listener.close()


def test_dial_gives_up_after_its_timeout() -> None:
    # Full backlog on a listener that never accepts: the SYN goes unanswered.
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
    started = time.monotonic()
    try:
        with pytest.raises(OSError):
            tcp_dial(Endpoint("127.0.0.1", port), 0.3)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert time.monotonic() - started < 1.5


def test_endpoints_come_from_the_config_or_the_provider() -> None:
    config = CloudConfig(
        models=[
            CloudModel(name="openai/team-gateway", api_base="http://127.0.0.1:4000/v1"),
            CloudModel(name="openai/gpt-4.1", api_key_env="WORK_OPENAI_KEY"),
        ]
    )
    gateway = resolve("openai/team-gateway", config)
    assert (gateway.endpoint, gateway.api_key_env, gateway.keyless) == (
        Endpoint("127.0.0.1", 4000),
        None,
        True,
    )
    gpt = resolve("openai/gpt-4.1", config)
    assert (gpt.endpoint, gpt.api_key_env, gpt.keyless) == (
        Endpoint("api.openai.com", 443),
        "WORK_OPENAI_KEY",
        False,
    )
    claude = resolve("anthropic/claude-opus-4-7", config)
    assert (claude.endpoint, claude.api_key_env, claude.configured) == (
        Endpoint("api.anthropic.com", 443),
        "ANTHROPIC_API_KEY",
        False,
    )
    assert resolve("someprovider/model", config).endpoint is None


def test_probe_goes_to_the_proxy_when_one_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert endpoint_for_url("https://api.openai.com/v1") == Endpoint("127.0.0.1", 3128)
    monkeypatch.setenv("no_proxy", "api.openai.com")
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert endpoint_for_url("https://api.openai.com/v1") == Endpoint("api.openai.com", 443)


# -- CloudBackend.health ---------------------------------------------------------------


def test_health_is_ready_when_reachable_and_sends_no_request(
    openai_server: OpenAIServer,
) -> None:
    backend = backend_for(openai_server.base_url)
    assert backend.health(MODEL) == Health("ready", "")
    assert backend.health() == Health("ready", "")
    time.sleep(0.1)  # let the server thread see the connection close
    assert openai_server.requests == []


def test_health_without_the_key_is_not_configured(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    health = backend_for(openai_server.base_url).health(MODEL)
    assert health.status == "not_configured"
    assert KEY_ENV in health.detail


def test_health_without_cloud_models_is_not_configured() -> None:
    assert CloudBackend(CloudConfig()).health().status == "not_configured"


def test_health_is_offline_at_once_when_the_host_refuses(closed_port: int) -> None:
    backend = backend_for(f"http://127.0.0.1:{closed_port}/v1")
    started = time.monotonic()
    health = backend.health(MODEL)
    assert time.monotonic() - started < 0.5
    assert health.status == "offline"
    assert f"127.0.0.1:{closed_port}" in health.detail
    assert not health.usable


async def test_repeated_failures_degrade_then_a_success_restores(
    openai_server: OpenAIServer,
) -> None:
    backend = backend_for(openai_server.base_url, failures=FailureWindow(degraded_after=3))
    openai_server.script(error(500), error(503), error(500))
    for _ in range(3):
        assert isinstance((await collect(backend))[-1], Failed)
    assert backend.health(MODEL).status == "degraded"

    openai_server.script(ok("back"))
    assert [e for e in await collect(backend) if isinstance(e, TextDelta)] == [TextDelta("back")]
    assert backend.health(MODEL).status == "ready"


# -- offline: fall back at once ---------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 5])
async def test_offline_fails_fast_instead_of_backing_off(closed_port: int, retries: int) -> None:
    # Five retries with 2 s backoff would take a minute if the backend kept trying.
    backend = backend_for(
        f"http://127.0.0.1:{closed_port}/v1",
        retries=retries,
        backoff_base_s=2.0,
        backoff_max_s=2.0,
        reachability=Reachability(fail_ttl_s=30),
    )
    first = await collect(backend)  # also warms LiteLLM's import for the timing below
    assert isinstance(first[-1], Failed) and "offline" in first[-1].message

    started = time.monotonic()
    events = await collect(backend)
    elapsed = time.monotonic() - started
    assert elapsed < 0.2, elapsed
    assert len(events) == 1
    failure = events[0]
    assert isinstance(failure, Failed)
    assert (failure.kind, failure.retryable, failure.after_tokens) == ("unavailable", True, False)
    assert "offline" in failure.message and "nothing was sent" in failure.message
    assert backend.health(MODEL).status == "offline"


async def test_first_connection_error_probes_instead_of_retrying(closed_port: int) -> None:
    backend = backend_for(
        f"http://127.0.0.1:{closed_port}/v1", retries=5, backoff_base_s=2.0, backoff_max_s=2.0
    )
    # LiteLLM's first import takes seconds on a slow machine; once imported, nothing.
    allowance = 0.0 if "litellm" in sys.modules else 8.0
    started = time.monotonic()
    events = await collect(backend)
    elapsed = time.monotonic() - started

    failure = events[-1]
    assert isinstance(failure, Failed) and failure.kind == "unavailable"
    assert f"cannot reach 127.0.0.1:{closed_port}" in failure.message
    # One attempt and one probe; a single 2 s backoff would exceed this.
    assert elapsed < 2.0 + allowance, elapsed


async def test_backend_recovers_when_the_host_returns() -> None:
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    backend = backend_for(f"http://127.0.0.1:{port}/v1", reachability=Reachability(fail_ttl_s=0.3))
    try:
        assert backend.health(MODEL).status == "offline"
        assert isinstance((await collect(backend))[-1], Failed)
    finally:
        reserved.close()  # never listened, so the port is free at once

    time.sleep(0.35)  # the cached "offline" expires
    with OpenAIServer().start(port) as server:
        assert backend.health(MODEL).status == "ready"
        events = await collect(backend)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, world!"
    assert server.count == 1
