"""Fixtures for ds4router tests: the loopback OpenAI server and a network guard.

Every test here runs with ``DS4ROUTER_HOME`` in a tmp dir, LiteLLM's price map
read offline, and a guard that refuses (and fails the test on) any connection
or DNS lookup beyond loopback: a test that would reach a real provider fails
even when the code under test swallows the error.

The engine-load fixtures at the bottom (a sharded tiny checkpoint, a fresh copy of
it, a load held mid-way) are shared by the backend's and the TUI's load-progress
tests; their helpers are in ``load_support.py``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from load_support import Hold, fresh_copy, hold_at_shard
from openai_server import OpenAIServer

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", ""})


class NetworkBlocked(OSError):
    """Raised in place of a connection beyond loopback (an OSError, as offline would be)."""


def is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Patches socket entry points; records every attempt to leave loopback."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def _check(self, what: str, host: Any, port: Any = None) -> None:
        if not is_loopback(host):
            note = f"{what} to {host!r}" + (f" port {port}" if port is not None else "")
            self.violations.append(note)
            raise NetworkBlocked(f"network guard: tests may only reach loopback ({note})")

    def _check_address(self, what: str, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            self._check(what, address[0], address[1] if len(address) > 1 else None)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        guard = self
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_create_connection = socket.create_connection
        real_getaddrinfo = socket.getaddrinfo

        def connect(sock: socket.socket, address: Any) -> None:
            guard._check_address("connect", sock, address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard._check_address("connect_ex", sock, address)
            return real_connect_ex(sock, address)

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            guard._check("create_connection", address[0], address[1])
            return real_create_connection(address, *args, **kwargs)

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            guard._check("getaddrinfo", host, port)
            return real_getaddrinfo(host, port, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NetworkGuard]:
    """Loopback only; a private DS4ROUTER_HOME; LiteLLM offline."""
    monkeypatch.setenv("DS4ROUTER_HOME", str(tmp_path / "ds4router-home"))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    guard = NetworkGuard()
    guard.install(monkeypatch)
    yield guard
    if guard.violations:
        pytest.fail(
            "test tried to reach beyond loopback: " + "; ".join(guard.violations), pytrace=False
        )


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A running OpenAI-compatible server on 127.0.0.1; ``.base_url`` is the api_base."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def sharded_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset in 1 MiB shards: seven files, the embedding alone in the first.
    Tests load copies of it (``fresh_sharded``), never this directory."""
    from local_engine.checkpoint.random_weights import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("sharded-tiny"), preset="tiny", seed=5, shard_bytes=1 << 20
    )


@pytest.fixture
def fresh_sharded(sharded_checkpoint: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the sharded checkpoint that no engine of this process has loaded."""
    yield from fresh_copy(sharded_checkpoint, tmp_path)


@pytest.fixture
def held_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hold]:
    """The next load is held at shard ``load_support.HOLD_AT_SHARD`` until released."""
    yield from hold_at_shard(monkeypatch)


# --- the demo model, pulled for real once per run ------------------------------------------


@pytest.fixture(scope="session")
def pulled_demo(request: pytest.FixtureRequest) -> Path:
    """The demo GGUF, pulled by the real command into pytest's cache dir (kept across runs,
    so a CI run fetches it once)."""
    from ds4router.demo_model import DEMO

    home = request.config.cache.mkdir("ds4router-demo-home")
    env = {
        **os.environ,
        "DS4ROUTER_HOME": str(home),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ds4router", "models", "pull", "demo"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.name == DEMO.file_name and path.stat().st_size == DEMO.file_size
    return path


@pytest.fixture
def demo_here(pulled_demo: Path, ds4router_home: Path) -> Path:
    """This test's (fresh) ds4router home with the demo model in it, as after a pull."""
    from ds4router.demo_model import demo_file

    target = demo_file()
    target.parent.mkdir(parents=True)
    target.symlink_to(pulled_demo)
    return target
