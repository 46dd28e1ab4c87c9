"""The local engine's status, and loading it in the background with progress.

:func:`load_engine` runs in a worker thread after the first paint (it imports
mlx and reads the weights); it reports each step through a callback that the
app forwards to the UI thread. The engine keeps one loaded model per process,
so the session finds it already loaded when the first local request comes.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ds4router.config.loader import LoadedConfig

EngineState = Literal["not_configured", "missing", "loading", "ready", "failed"]


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    detail: str = ""
    fraction: float | None = None  # loading progress, when the engine reports it
    memory_bytes: int | None = None
    elapsed_s: float | None = None

    @property
    def text(self) -> str:
        if self.state == "not_configured":
            return "not configured"
        if self.state == "missing":
            return "no model on disk"
        if self.state == "loading":
            if self.fraction is not None:
                return f"loading {self.fraction * 100:.0f} %"
            seconds = f" {self.elapsed_s:.0f} s" if self.elapsed_s is not None else ""
            return f"loading…{seconds}"
        if self.state == "ready":
            if self.memory_bytes is not None:
                return f"ready · {self.memory_bytes / 1024**3:.1f} GiB"
            return "ready"
        return "failed"


def initial_status(loaded: LoadedConfig) -> EngineStatus:
    """What is known before loading anything: configured, and on disk?"""
    model_path = loaded.config.local.engine.model_path
    if not model_path:
        return EngineStatus("not_configured", "set local.engine.model_path in .ds4router.yaml")
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        return EngineStatus("missing", f"no model at {path} (config.json not found)")
    return EngineStatus("loading", f"model at {path}", elapsed_s=0.0)


def load_engine(loaded: LoadedConfig, report: Callable[[EngineStatus], None]) -> EngineStatus:
    """Load the configured model (blocking: call from a worker thread)."""
    status = initial_status(loaded)
    if status.state != "loading":
        return status
    path = Path(str(loaded.config.local.engine.model_path)).expanduser()
    started = time.monotonic()
    report(EngineStatus("loading", f"loading {path}", elapsed_s=0.0))
    try:
        from local_engine.engine import Engine

        kwargs: dict[str, Any] = {}
        params = inspect.signature(Engine.load).parameters
        if "progress" in params:
            # The engine reports (fraction, what): forwarded as "loading n %".
            def progress(fraction: float, what: str = "") -> None:
                report(
                    EngineStatus(
                        "loading",
                        what or f"loading {path}",
                        fraction=fraction,
                        elapsed_s=time.monotonic() - started,
                    )
                )

            kwargs["progress"] = progress
        engine = Engine.load(path, **kwargs)
        memory: int | None
        try:
            memory = int(engine.info().weight_bytes)
        except Exception:  # sizes are a nicety; a loaded engine is what matters
            memory = None
    except Exception as exc:  # an engine failure is shown, never raised into the UI
        return EngineStatus("failed", str(exc) or type(exc).__name__)
    return EngineStatus(
        "ready", f"{path}", memory_bytes=memory, elapsed_s=time.monotonic() - started
    )
