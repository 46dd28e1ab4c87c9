"""Loading the local model once per process, and the one thread that loads and runs it.

Split from ``ds4router.backends.local`` (which re-exports these names): a registry of loads
per model directory, each started in the background, reporting the engine's progress
(``LoadStatus``) to every backend and UI that waits on it, and the checks of a model
directory that need no weights.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ds4router.backends.engine_port import SerialWorker

if TYPE_CHECKING:
    from ds4router.backends.engine_port import Engine, LoadProgress

LoadState = Literal["idle", "loading", "ready", "failed"]
EngineKind = Literal["deepseek-v4", "mlx-lm"]


# --- loading, once per process ------------------------------------------------------------


# The one thread that loads models and runs generations, jobs in order. MLX keeps streams
# per thread: an array one thread left unevaluated cannot be evaluated on another ("There is
# no Stream(cpu, 0) in current thread"; seen with lazy weight transposes before the model
# began materializing its weights at load). Loading and running on one thread keeps that
# whole class of failure away, and generations are one at a time per engine anyway. A
# daemon thread, so a load nobody waits for any more does not hold up the process's exit.
# Jobs report their own errors (a load into its _EngineLoad, a generation onto its stream):
# no on_error hook, a stray exception is dropped and the next job runs.
_ENGINE_THREAD = SerialWorker("ds4router-engine")


@dataclass(frozen=True)
class LoadStatus:
    """One moment of a model's load, as ``health()`` and the TUI show it.

    ``fraction`` and ``step`` come from the engine's ``LoadProgress`` (None and "" until
    it reported: while the directory is checked and the tokenizer read); ``progress``
    is that last report itself. ``version`` changes with every change of this status,
    for ``LocalBackend.wait_for_load``.
    """

    state: LoadState
    fraction: float | None = None
    step: str = ""
    progress: LoadProgress | None = None
    elapsed_s: float | None = None
    error: str = ""
    weight_bytes: int | None = None
    version: int = 0
    is_random: bool = False  # the loaded weights are random (a test checkpoint): noise


def percent(fraction: float) -> int:
    """Whole percent, rounded down: 100 % only once everything is there."""
    return int(max(0.0, min(1.0, fraction)) * 100)


class _EngineLoad:
    """The load of one model directory, shared by every backend of the process."""

    def __init__(self, path: Path, kind: EngineKind = "deepseek-v4") -> None:
        self.path = path
        self.kind = kind
        self._lock = threading.Lock()
        # Notified on every change (progress, the end), under the same lock.
        self._changed = threading.Condition(self._lock)
        self.version = 0
        self.state: LoadState = "idle"
        self.engine: Engine | None = None
        self.error = ""
        self.progress: LoadProgress | None = None
        self.fraction: float | None = None
        self.step = ""
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.weight_bytes: int | None = None
        self.parameters: int | None = None
        self.is_random = False
        self._listeners: list[Callable[[], None]] = []

    def start(
        self,
        *,
        check_memory: bool,
        available_memory_bytes: int | None,
        retry: bool,
        inline: bool = False,
    ) -> None:
        """Begin loading unless loaded, loading, or failed (``retry``: try a failure again).

        ``inline`` loads on the calling thread (for an engine already in memory: instant).
        """
        with self._changed:
            if self.state in ("loading", "ready") or (self.state == "failed" and not retry):
                return
            self.state, self.error, self.fraction, self.step = "loading", "", None, ""
            self.progress = None
            self.started_at, self.ended_at = time.monotonic(), None
            self._bump()
        if inline:
            self._run(check_memory, available_memory_bytes)
        else:
            _ENGINE_THREAD.submit(lambda: self._run(check_memory, available_memory_bytes))

    def _bump(self) -> None:
        """Under the lock: the status changed."""
        self.version += 1
        self._changed.notify_all()

    def _progress(self, progress: LoadProgress) -> None:
        """The engine's callback, on the engine thread, once per tensor: cheap, no I/O."""
        with self._changed:
            self.progress = progress
            self.fraction = max(0.0, min(1.0, progress.fraction))
            self.step = progress.step
            self._bump()

    def _run(self, check_memory: bool, available_memory_bytes: int | None) -> None:
        try:
            engine_class = _engine_class(self.kind)
            engine = engine_class.load(
                self.path,
                check_memory=check_memory,
                available_memory_bytes=available_memory_bytes,
                progress=self._progress,
            )
            info = engine.info()
        except Exception as exc:  # every load failure becomes the health detail
            with self._changed:
                self.state, self.error = "failed", _message(exc)
                self.ended_at = time.monotonic()
                self._bump()
        else:
            with self._changed:
                self.engine = engine
                self.weight_bytes = info.weight_bytes
                self.parameters = info.parameters
                self.is_random = info.is_random
                self.state = "ready"
                self.ended_at = time.monotonic()
                self._bump()
        with self._lock:
            listeners, self._listeners = self._listeners, []
        for notify in listeners:
            notify()

    def status(self) -> LoadStatus:
        with self._lock:
            return self._status()

    def _status(self) -> LoadStatus:
        started = self.started_at
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        elapsed = None if started is None else end - started
        return LoadStatus(
            state=self.state,
            fraction=self.fraction,
            step=self.step,
            progress=self.progress,
            elapsed_s=elapsed,
            error=self.error,
            weight_bytes=self.weight_bytes,
            version=self.version,
            is_random=self.is_random,
        )

    def wait(self, after: int, timeout: float | None) -> LoadStatus:
        """The status once its version is not ``after`` any more, or when ``timeout`` ends."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != after, timeout)
            return self._status()

    def adopt(self) -> None:
        """An engine loaded in this process by someone else (the TUI, a CLI command)
        counts as loaded here too; asking the engine's cache for it is instant."""
        if self.state == "idle" and self.path in _engine_class(self.kind).loaded():
            self.start(check_memory=False, available_memory_bytes=None, retry=False, inline=True)

    def listen(self, notify: Callable[[], None]) -> bool:
        """Call ``notify`` (from the loading thread) when the load ends; False: it has."""
        with self._lock:
            if self.state in ("ready", "failed"):
                return False
            self._listeners.append(notify)
            return True

    def unlisten(self, notify: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(notify)


_LOADS: dict[Path, _EngineLoad] = {}
_LOADS_LOCK = threading.Lock()


def _engine_class(kind: EngineKind) -> Any:
    """The engine that serves ``local.engine.kind`` (same load/generate surface)."""
    match kind:
        case "mlx-lm":
            from ds4router.backends.engine_port import MlxLmEngine

            return MlxLmEngine
        case _:
            from ds4router.backends.engine_port import Engine

            return Engine


def _load_of(path: Path, kind: EngineKind = "deepseek-v4") -> _EngineLoad:
    key = path.expanduser().resolve()
    with _LOADS_LOCK:
        load = _LOADS.get(key)
        if load is None:
            load = _LOADS[key] = _EngineLoad(key, kind)
        return load


def _message(exc: BaseException) -> str:
    from ds4router.backends.engine_port import EngineError

    text = str(exc).strip()
    if isinstance(exc, EngineError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_model_dir(path: Path, kind: EngineKind = "deepseek-v4") -> str | None:
    """Why ``path`` cannot be loaded, from config.json and file names only (no weights)."""
    from ds4router.backends.engine_port import EngineError, load_config

    if kind == "mlx-lm":
        from ds4router.backends.engine_port import check_model_path

        return check_model_path(path)
    if not path.is_dir():
        return f"no model directory at {path}"
    try:
        load_config(path)  # missing config.json, unknown model_type
    except EngineError as exc:
        return str(exc)
    if not any(path.glob("*.safetensors")):
        return f"{path} has no *.safetensors weight files"
    return None


def forget_load(path: str | Path) -> bool:
    """Forget this process's record of loading ``path`` (e.g. after a failure was fixed);
    the engine's own cache is untouched. True when there was one."""
    key = Path(path).expanduser().resolve()
    with _LOADS_LOCK:
        return _LOADS.pop(key, None) is not None
