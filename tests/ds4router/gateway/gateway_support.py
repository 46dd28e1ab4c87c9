"""A live ``ds4router serve`` on 127.0.0.1 for the SDK tests: real uvicorn, a real project.

The project routes to a cloud model whose ``api_base`` is the loopback fake cloud
(``openai_server.py``), so every request the gateway lets out is seen (and counted) there.
The local engine is the scripted backend when a test gives one, else unavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from scripted import ScriptedBackend
from session_support import factory

from ds4router.gateway.auth import KeyRing
from ds4router.gateway.service import Gateway
from ds4router.gateway.thread import GatewayThread

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


@contextmanager
def live_gateway(
    project: Path,
    *,
    local: ScriptedBackend | None = None,
    keys: KeyRing | None = None,
) -> Iterator[GatewayThread]:
    gateway = Gateway(project, keys=keys or KeyRing(()), backend_factory=factory(local))
    live = GatewayThread(gateway).start()
    try:
        yield live
    finally:
        live.stop()


__all__ = ["MODEL", "live_gateway", "wait_until", "write_project"]
