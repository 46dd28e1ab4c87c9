"""Fixtures for the TUI tests: the app factory, UTC time, no provider keys, a tiny model.

Every app here runs headless at 120x36 with the cursor not blinking, a clock
stopped at NOW, the machine's time zone set to UTC (message stamps), and the
``DS4ROUTER_HOME`` of the suite-wide fixture (so the database is a tmp file).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tui_support import NOW

from ds4router.tui.app import Ds4RouterApp
from ds4router.tui.clock import fixed_clock


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(autouse=True)
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own keys must not change what the app shows or where it sends."""
    from ds4router.backends.endpoints import PROVIDER_DEFAULTS

    for _, var in PROVIDER_DEFAULTS.values():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def make_app() -> Callable[..., Ds4RouterApp]:
    def make(project: Path | None, **kwargs: Any) -> Ds4RouterApp:
        kwargs.setdefault("clock", fixed_clock(NOW))
        kwargs.setdefault("cursor_blink", False)
        kwargs.setdefault("load_local_engine", False)
        kwargs.setdefault("cwd", project)
        return Ds4RouterApp(project, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny DeepSeek V4 checkpoint (about 130 MB, written once per run)."""
    from local_engine.checkpoint.random_weights import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("tiny-ds4"), preset="tiny", seed=0)
