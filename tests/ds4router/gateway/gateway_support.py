"""A live ``ds4router serve`` on 127.0.0.1 for the SDK tests: real uvicorn, a real project.

The project routes to a cloud model whose ``api_base`` is the loopback fake cloud
(``openai_server.py``), so every request the gateway lets out is seen (and counted) there.
The local engine is the scripted backend when a test gives one, else unavailable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from openai_server import OpenAIServer
from scripted import ScriptedBackend
from session_support import factory

from ds4router.gateway.app import create_app
from ds4router.gateway.auth import KeyRing
from ds4router.gateway.service import Gateway

MODEL = "openai/test-model"


def write_project(directory: Path, cloud_url: str, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "project": "gw",
        "default": f"cloud:{MODEL}",
        "fallback": {"cloud_unavailable": None, "local_unavailable": None},
        "cloud": {
            "models": [{"name": MODEL, "api_base": cloud_url}],
            "retries": 0,
        },
        "local": {"power": {"watts": 90, "source": "configured"}},
    }
    data.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return directory


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Poll ``condition`` (state, not time): the limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class LiveGateway:
    """uvicorn serving a :class:`Gateway` in a thread; ``url`` once started."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = uvicorn.Config(
            create_app(gateway), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveGateway:
        self._thread.start()
        wait_until(lambda: self.server.started or not self._thread.is_alive(), "uvicorn")
        assert self.server.started, "the gateway did not start"
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)


@contextmanager
def live_gateway(
    project: Path,
    *,
    local: ScriptedBackend | None = None,
    keys: KeyRing | None = None,
) -> Iterator[LiveGateway]:
    gateway = Gateway(project, keys=keys or KeyRing(()), backend_factory=factory(local))
    live = LiveGateway(gateway).start()
    try:
        yield live
    finally:
        live.stop()


def cloud(server: OpenAIServer) -> str:
    return server.base_url


__all__ = ["MODEL", "LiveGateway", "live_gateway", "wait_until", "write_project"]
