"""The local engine's status, and loading it in the background with progress.

:func:`load_engine` runs in a worker thread after the first paint. It starts the load
through the local backend (``ds4router.backends.local``), so the model loads on the one
engine thread that will also run its generations, and a session's first local request
shares this load instead of starting another. It then follows the load, reporting each
change through a callback that the app forwards to the UI thread: the seconds so far
until the engine reports progress, then ``loading 42 %`` with the step (``shard 3/46``)
under it in the sidebar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ds4router.config.loader import LoadedConfig

EngineState = Literal["not_configured", "missing", "loading", "ready", "failed"]

# How long the follower waits for a change before it looks whether it should stop.
FOLLOW_POLL_S = 0.5


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    detail: str = ""
    fraction: float | None = None  # loading progress, when the engine reports it
    memory_bytes: int | None = None
    elapsed_s: float | None = None
    step: str = ""  # what the load is at ("shard 3/46"), with the fraction
    caveat: str = ""  # what to know about its answers: random weights, demo-size model

    @property
    def percent(self) -> int | None:
        """Whole percent loaded, rounded down (100 only at the end); None: not known."""
        if self.fraction is None:
            return None
        return int(max(0.0, min(1.0, self.fraction)) * 100)

    @property
    def text(self) -> str:
        if self.state == "not_configured":
            return "not configured"
        if self.state == "missing":
            return "no model on disk"
        if self.state == "loading":
            if self.percent is not None:
                return f"loading {self.percent} %"
            seconds = f" {self.elapsed_s:.0f} s" if self.elapsed_s is not None else ""
            return f"loading…{seconds}"
        if self.state == "ready":
            if self.memory_bytes is not None:
                return f"ready · {self.memory_bytes / 1024**3:.1f} GiB"
            return "ready"
        return "failed"


def initial_status(loaded: LoadedConfig) -> EngineStatus:
    """What is known before loading anything: configured, and on disk?"""
    from ds4router.routing.state import local_engine_status

    model_path = loaded.config.local.engine.model_path
    if not model_path:
        return EngineStatus(
            "not_configured",
            "set local.engine.model_path in .ds4router.yaml, or run `ds4router models pull demo`",
        )
    ok, detail = local_engine_status(loaded)
    if not ok:
        return EngineStatus("missing", detail)
    return EngineStatus("loading", detail, elapsed_s=0.0)


def load_engine(
    loaded: LoadedConfig,
    report: Callable[[EngineStatus], None],
    stop: Callable[[], bool] | None = None,
) -> EngineStatus:
    """Load the configured model and follow the load (blocking: call from a worker thread).

    ``report`` gets every visible change while loading; the final status is returned.
    ``stop`` (checked at least every ``FOLLOW_POLL_S``) ends the following early, e.g.
    when the app quits: the load itself goes on, in the background, for the session.
    """
    status = initial_status(loaded)
    if status.state != "loading":
        return status
    path = Path(str(loaded.config.local.engine.model_path)).expanduser()
    report(EngineStatus("loading", f"loading {path}", elapsed_s=0.0))
    try:
        from ds4router.backends.local import LocalBackend

        backend = LocalBackend.from_config(loaded)
        # A new path or a new configuration: a load that failed before gets another try.
        backend.start_loading(retry=True)
        shown: EngineStatus | None = None
        load = backend.load_status()
        while load.state == "loading":
            if stop is not None and stop():
                return EngineStatus("loading", f"loading {path}", elapsed_s=load.elapsed_s)
            now = EngineStatus(
                "loading",
                f"loading {path}",
                fraction=load.fraction,
                step=load.step,
                elapsed_s=load.elapsed_s,
            )
            # Per-tensor reports arrive by the thousand; the UI hears of visible changes.
            if shown is None or (now.percent, now.step) != (shown.percent, shown.step):
                report(now)
                shown = now
            load = backend.wait_for_load(load.version, timeout=FOLLOW_POLL_S)
    except Exception as exc:  # an engine failure is shown, never raised into the UI
        return EngineStatus("failed", str(exc) or type(exc).__name__)
    if load.state != "ready":
        return EngineStatus("failed", load.error or f"{path} did not load")
    from ds4router.demo_model import LABEL, is_demo

    caveat = "random weights: noise" if load.is_random else LABEL if is_demo(path) else ""
    return EngineStatus(
        "ready",
        f"{path}",
        memory_bytes=load.weight_bytes,
        elapsed_s=load.elapsed_s,
        caveat=caveat,
    )
