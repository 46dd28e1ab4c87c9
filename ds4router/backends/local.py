"""The local backend: the in-process DeepSeek V4 Flash engine behind the ``Backend`` protocol.

``LocalBackend`` runs ``local_engine.Engine.generate`` in a worker thread and adapts its
events to the backends' (``TextDelta``, ``ReasoningDelta``, ``Usage``, then ``Done`` or
``Failed``), so a session treats the local engine exactly like a cloud model.

The model is loaded once per process and shared: loads are kept per model directory in a
module-level registry (on top of the engine's own per-process cache), started in the
background by ``start_loading()`` or by the first request, which waits for it. Health:

- ``not_configured``: no ``local.engine.model_path``;
- ``ready``: loaded (the detail says how much memory the weights take), or not loaded yet
  but the directory checks out, so a request will load it and then answer;
- ``loading``: a load is under way (the detail says ``42 % (shard 3/46)`` once the engine
  reports its progress, the seconds so far before that); the router routes around it
  meanwhile. ``load_status()`` and ``wait_for_load()`` give the same figures to a UI;
- failed: the load failed (missing files, unknown ``model_type``, shape mismatch, the model
  cannot fit). ``HealthStatus`` has no ``failed``, so this is ``offline`` with a detail
  starting ``failed``: the router only needs to know local cannot serve, and why.

For local pricing the session meters energy itself (``pricing.energy.EnergyMeter`` around
the stream); this backend keeps each request's figures (wall time, time waiting for the
load, TTFT, prefill and decode tok/s, peak memory) in ``last_stats`` and ``stats_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds4router.backends.base import BackendRequest
from ds4router.backends.flights import Flight, Flights
from ds4router.backends.health import Health, HealthStatus
from ds4router.backends.local_load import (
    _ENGINE_THREAD,
    EngineKind,
    LoadState,
    LoadStatus,
    _check_model_dir,
    _EngineLoad,  # noqa: F401  (re-exported: tests reach the load through this module)
    _load_of,
    _message,
    forget_load,
    percent,
)
from ds4router.events import (
    BackendEvent,
    Done,
    ErrorKind,
    Notice,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    ToolCallDone,
    ToolCallInvalid,
    ToolCallStart,
    failed,
)

if TYPE_CHECKING:
    from ds4router.backends.engine_port import (
        Engine,
        GenerationParams,
        GenerationStats,
    )
    from ds4router.config.loader import LoadedConfig

# A request without max_tokens gets `local.engine.max_tokens`, else this many (a long answer
# with code; not minutes of a small or random model rambling on; raise it for long outputs).
DEFAULT_MAX_TOKENS = 1024

# What health() reports when loading failed (see the module docstring).
FAILED_STATUS: HealthStatus = "offline"

# BackendRequest.extra keys this backend understands; others (provider options meant for
# LiteLLM) do not apply to the local engine and are ignored.
EXTRA_PARAMS = ("thinking", "reasoning_effort", "seed", "top_k", "min_p")

# Sampling for requests that set none, by engine kind. DeepSeek V4's own defaults live in
# GenerationParams. mlx-lm models (the demo model first) answer greedily: measured on the
# demo model, "What is the capital of France?" opens with "The" at p=0.152 and "L" at 0.140,
# so even temperature 0.2 starts 3 answers in 8 with "L'Étoile, ..." and rambles on.
KIND_SAMPLING: dict[str, dict[str, float]] = {"mlx-lm": {"temperature": 0.0}}

_KEEP_STATS = 64
GIB = 1024**3


@dataclass(frozen=True)
class LocalStats:
    """What one local request took; ``wall_s`` covers the whole stream, load wait included.

    The engine's figures (``ttft_s``, rates, ``generation_s``) start when the engine got
    the request, i.e. after ``load_wait_s``.
    """

    request_id: str | None
    finish_reason: str
    wall_s: float
    load_wait_s: float
    generation_s: float
    ttft_s: float
    prefill_s: float
    prefill_tok_s: float
    decode_s: float
    decode_tok_s: float
    prompt_tokens: int
    generated_tokens: int
    peak_memory_bytes: int
    cached_prompt_tokens: int = 0  # restored from the KV cache on disk, not prefilled
    kv_restore_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "finish_reason": self.finish_reason,
            "wall_s": self.wall_s,
            "load_wait_s": self.load_wait_s,
            "generation_s": self.generation_s,
            "ttft_s": self.ttft_s,
            "prefill_s": self.prefill_s,
            "prefill_tok_s": self.prefill_tok_s,
            "decode_s": self.decode_s,
            "decode_tok_s": self.decode_tok_s,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "peak_memory_bytes": self.peak_memory_bytes,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "kv_restore_s": self.kv_restore_s,
        }


# --- the backend ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raised:
    """The generation thread ended in an exception."""

    kind: ErrorKind
    message: str


_END = object()


class LocalBackend:
    """``Backend`` for the local engine serving the model in ``model_path``.

    ``max_tokens`` caps requests that set none (default ``DEFAULT_MAX_TOKENS``).
    ``check_memory`` and ``available_memory_bytes`` go to ``Engine.load`` (the backend
    that starts a model's load decides them).
    """

    def __init__(
        self,
        model_path: str | Path | None,
        *,
        max_tokens: int | None = None,
        check_memory: bool = True,
        available_memory_bytes: int | None = None,
        kv_cache_dir: str | Path | None = None,
        kv_disk_bytes: int | None = None,
        kv_ram_bytes: int | None = None,
        kind: EngineKind = "deepseek-v4",
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.model_path = None if model_path in (None, "") else Path(model_path).expanduser()
        self.kind: EngineKind = kind
        self.max_tokens = max_tokens
        self.check_memory = check_memory
        self.available_memory_bytes = available_memory_bytes
        # Prefix reuse through the KV cache on disk (None: off), its byte budget, and the
        # RAM budget of the decode state beyond which old compressed rows go to disk.
        self.kv_cache_dir = None if kv_cache_dir in (None, "") else Path(kv_cache_dir).expanduser()
        self.kv_disk_bytes = kv_disk_bytes
        self.kv_ram_bytes = kv_ram_bytes
        self.last_stats: LocalStats | None = None
        self._stats: OrderedDict[str, LocalStats] = OrderedDict()
        self._flights = Flights()
        self._lock = threading.Lock()
        self._checked: tuple[int, str | None] | None = None  # (config.json mtime, problem)

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> LocalBackend:
        """The backend for ``local.engine`` of a loaded config (nothing is loaded yet)."""
        from ds4router.paths import kv_cache_dir

        engine = loaded.config.local.engine
        # kv_disk_gb 0 turns the disk cache off; kv_ram_gb 0 keeps every compressed CSA
        # row on disk (index keys, window and HCA rows always stay in RAM).
        disk_on = engine.kv_disk_gb > 0
        return cls(
            engine.model_path,
            max_tokens=engine.max_tokens,
            kv_cache_dir=(engine.kv_cache_dir or kv_cache_dir()) if disk_on else None,
            kv_disk_bytes=int(engine.kv_disk_gb * GIB) if disk_on else None,
            kv_ram_bytes=int(engine.kv_ram_gb * GIB),
            kind=engine.kind,
        )

    # -- loading -------------------------------------------------------------------------
    def start_loading(self, *, retry: bool = False) -> None:
        """Load the model in the background (no-op when loaded or loading).

        A failed load is remembered; ``retry=True`` tries again (after fixing the files).
        """
        if self.model_path is None:
            return
        _load_of(self.model_path, self.kind).start(
            check_memory=self.check_memory,
            available_memory_bytes=self.available_memory_bytes,
            retry=retry,
        )

    @property
    def load_state(self) -> LoadState:
        if self.model_path is None:
            return "idle"
        return _load_of(self.model_path, self.kind).state

    def load_status(self) -> LoadStatus:
        """Where the load of this backend's model is (``idle`` without a model path)."""
        if self.model_path is None:
            return LoadStatus("idle")
        return _load_of(self.model_path, self.kind).status()

    def wait_for_load(self, after: int = -1, timeout: float | None = None) -> LoadStatus:
        """Block until the load status changes from version ``after`` (or ``timeout`` ends).

        For a thread that follows a load (the TUI's): pass the last status's ``version``;
        the status changes with each of the engine's progress reports and at the end.
        """
        if self.model_path is None:
            return LoadStatus("idle")
        return _load_of(self.model_path, self.kind).wait(after, timeout)

    def stats_for(self, request_id: str) -> LocalStats | None:
        """The figures of a recent request, by ``BackendRequest.request_id``."""
        with self._lock:
            return self._stats.get(request_id)

    # -- protocol ------------------------------------------------------------------------
    def health(self) -> Health:
        """Cheap enough for every keystroke: never loads weights, never imports mlx."""
        if self.model_path is None:
            return Health(
                "not_configured",
                "set local.engine.model_path in .ds4router.yaml to a model directory, "
                "or run `ds4router models pull demo`",
            )
        load = _load_of(self.model_path, self.kind)
        load.adopt()
        path = load.path
        if load.state == "loading":
            status = load.status()
            if status.fraction is not None:
                step = f" ({status.step})" if status.step else ""
                return Health("loading", f"loading {path}: {percent(status.fraction)} %{step}")
            return Health("loading", f"loading {path}: {status.elapsed_s or 0:.0f} s so far")
        if load.state == "ready":
            size = f"{(load.weight_bytes or 0) / GIB:.2f} GiB of weights in memory"
            params = f"{(load.parameters or 0) / 1e9:.2f} B parameters"
            random = ", random weights (its output is noise)" if load.is_random else ""
            return Health("ready", f"{_label(path)}{path}: {size}, {params}{random}")
        if load.state == "failed":
            return Health(FAILED_STATUS, f"failed to load {path}: {load.error}")
        problem = self._problem(path)
        if problem is not None:
            return Health(FAILED_STATUS, f"failed: {problem}")
        return Health("ready", f"{_label(path)}{path}: not loaded yet, loads on the first request")

    def _problem(self, path: Path) -> str | None:
        marker = path if self.kind == "mlx-lm" else path / "config.json"
        try:
            stamp = marker.stat().st_mtime_ns
        except OSError:
            stamp = -1
        checked = self._checked
        if checked is None or checked[0] != stamp:
            checked = self._checked = (stamp, _check_model_dir(path, self.kind))
        return checked[1]

    def cancel(self) -> None:
        """End every stream in flight with ``Failed(kind="cancelled")``; thread-safe."""
        self._flights.cancel_all()  # the engine checks ``stop`` between prefill chunks and tokens

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendEvent]:
        # Registered before the first await, so a cancel() after stream() started reaches it.
        # ``stop`` is set when it ends, also when the consumer stops listening: the engine
        # thread must not decode on for nobody (and hold the engine meanwhile).
        with self._flights.track() as flight:
            async for event in self._run(request, flight):
                yield event

    # -- one request -----------------------------------------------------------------------
    async def _run(self, request: BackendRequest, flight: Flight) -> AsyncIterator[BackendEvent]:
        started = time.perf_counter()
        name = request.model
        if self.model_path is None:
            yield failed(
                "unavailable", f"{name}: local engine not configured (local.engine.model_path)"
            )
            return
        try:
            params = self._params(request)
        except Exception as exc:  # bad sampling values: the request, not the engine
            yield failed("bad_request", f"{name}: {_message(exc)}")
            return
        engine = await self._engine(flight)
        load_wait = time.perf_counter() - started
        if flight.stop.is_set():
            yield failed("cancelled", f"{name}: cancelled (while the model was loading)")
            return
        if engine is None:
            load = _load_of(self.model_path, self.kind)
            yield failed("unavailable", f"{name}: the local model failed to load: {load.error}")
            return

        events: asyncio.Queue[Any] = asyncio.Queue()
        messages = request.messages
        off_disk = request.keep_off_disk
        _ENGINE_THREAD.submit(lambda: self._configure_kv(engine, off_disk))

        def generate() -> None:
            # A conversation kept off disk gets no session: its states could spill there.
            session = None if off_disk else request.session_id
            self._generate(engine, messages, params, flight, events, session)

        if hasattr(engine, "scheduler") and not off_disk:
            # The engine interleaves generations itself (a step each in turn): this one
            # only waits on its queue, on its own thread, after the KV settings applied.
            # A request kept off disk holds the engine thread instead, so no later request
            # can turn the disk cache back on before its state was made without it.
            _ENGINE_THREAD.submit(lambda: threading.Thread(target=generate, daemon=True).start())
        else:
            _ENGINE_THREAD.submit(generate)
        kinds = _engine_types()
        text: list[str] = []
        produced = False
        while True:
            item = await events.get()
            if item is _END:
                break
            if isinstance(item, _Raised):
                if produced:
                    yield self._estimated_usage(engine, request, params, text)
                yield failed(item.kind, f"{name}: {item.message}", after_tokens=produced)
                return
            if not produced and isinstance(item, kinds.TextDelta | kinds.ReasoningDelta):
                if _load_of(self.model_path, self.kind).is_random:  # said with its first words
                    noise = f"{name} has random weights (a test checkpoint): its output is noise"
                    yield Notice("random_weights", noise, name)
            if isinstance(item, kinds.Done):
                self._record(request, item.finish_reason, item.stats, started, load_wait)
                if item.finish_reason == "cancelled":
                    yield failed("cancelled", f"{name}: cancelled", after_tokens=produced)
                else:
                    yield Done(item.finish_reason)
                return
            event = app_event(item, kinds)
            if event is None:
                continue
            if isinstance(event, TextDelta | ReasoningDelta):
                text.append(event.text)
            produced = produced or not isinstance(event, TokenUsage)
            yield event
        # The thread ended without Done: only if the engine broke its own protocol.
        yield failed(
            "internal", f"{name}: the engine stopped without finishing", after_tokens=produced
        )

    async def _engine(self, flight: Flight) -> Engine | None:
        """The loaded engine (starting the load if nobody has), None when loading failed.

        Returns early (with whatever state) when the request is cancelled meanwhile.
        """
        assert self.model_path is not None
        load = _load_of(self.model_path, self.kind)
        self.start_loading()
        loop = flight.loop
        loaded = loop.create_future()

        def resolve() -> None:
            if not loaded.done():
                loaded.set_result(None)

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the waiting loop is gone
                loop.call_soon_threadsafe(resolve)

        if load.listen(notify):
            woken = asyncio.ensure_future(flight.cancelled.wait())
            try:
                await asyncio.wait({loaded, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                load.unlisten(notify)
        return load.engine if load.state == "ready" else None

    def _params(self, request: BackendRequest) -> GenerationParams:
        from ds4router.backends.engine_port import GenerationParams

        options: dict[str, Any] = dict(KIND_SAMPLING.get(self.kind, {}))
        options.update({k: request.extra[k] for k in EXTRA_PARAMS if k in request.extra})
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        return GenerationParams(
            max_tokens=request.max_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            stop=tuple(request.stop),
            tools=tuple(request.tools),
            **options,
        )

    def _configure_kv(self, engine: Engine, off_disk: bool = False) -> None:
        """On the engine thread: point the engine at this backend's KV cache settings.

        A cache directory that cannot be used costs the reuse, never the request. A
        request that must stay off the disk (``BackendRequest.keep_off_disk``: its prompt
        holds a detected secret) runs with neither the prefix cache on disk nor the
        tiered state's spill files: its KV state lives in RAM and goes with it.
        """
        if off_disk:
            engine.use_kv_cache(None, ram_bytes=None)
            return
        try:
            engine.use_kv_cache(
                self.kv_cache_dir, disk_bytes=self.kv_disk_bytes, ram_bytes=self.kv_ram_bytes
            )
        except Exception as exc:
            logging.getLogger(__name__).warning(
                "local engine: KV cache at %s is unusable (%s); continuing without it",
                self.kv_cache_dir,
                _message(exc),
            )
            with contextlib.suppress(Exception):
                engine.use_kv_cache(None, ram_bytes=self.kv_ram_bytes)

    @staticmethod
    def _generate(
        engine: Engine,
        messages: list[dict[str, Any]],
        params: GenerationParams,
        flight: Flight,
        events: asyncio.Queue[Any],
        session: str | None = None,
    ) -> None:
        """Engine events onto the stream's queue, then ``_END``."""
        from ds4router.backends.engine_port import ChatEncodingError, EngineError

        def put(item: object) -> None:
            try:
                flight.loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the stream's loop is closed: nobody listens any more
                flight.stop.set()

        try:
            prompt_ids = engine.encode_messages(messages, params)  # encoded once, used twice
            prompt_tokens = len(prompt_ids)
            if prompt_tokens >= engine.context_limit:
                put(
                    _Raised(
                        "context_window",
                        f"the conversation is {prompt_tokens} tokens but the local model's "
                        f"context limit is {engine.context_limit}; start a new conversation "
                        "or shorten the attachments",
                    )
                )
                return
            options = {"session": session} if session is not None else {}
            for event in engine.generate_ids(prompt_ids, params, cancel=flight.stop, **options):
                put(event)
        except ChatEncodingError as exc:  # tools, roles the encoding does not know
            put(_Raised("bad_request", str(exc)))
        except EngineError as exc:
            put(_Raised("internal", str(exc)))
        except Exception as exc:  # a bug in the engine must end the stream, not hang it
            put(_Raised("internal", _message(exc)))
        finally:
            put(_END)

    def _record(
        self,
        request: BackendRequest,
        finish_reason: str,
        stats: GenerationStats,
        started: float,
        load_wait: float,
    ) -> None:
        record = LocalStats(
            request_id=request.request_id,
            finish_reason=finish_reason,
            wall_s=time.perf_counter() - started,
            load_wait_s=load_wait,
            generation_s=stats.total_s,
            ttft_s=stats.ttft_s,
            prefill_s=stats.prefill_s,
            prefill_tok_s=stats.prefill_tok_s,
            decode_s=stats.decode_s,
            decode_tok_s=stats.decode_tok_s,
            prompt_tokens=stats.prompt_tokens,
            generated_tokens=stats.generated_tokens,
            peak_memory_bytes=stats.peak_memory_bytes,
            cached_prompt_tokens=getattr(stats, "cached_prompt_tokens", 0),
            kv_restore_s=getattr(stats, "kv_restore_s", 0.0),
        )
        with self._lock:
            self.last_stats = record
            if request.request_id is not None:
                self._stats[request.request_id] = record
                while len(self._stats) > _KEEP_STATS:
                    self._stats.popitem(last=False)

    @staticmethod
    def _estimated_usage(
        engine: Engine, request: BackendRequest, params: GenerationParams, text: list[str]
    ) -> TokenUsage:
        """Usage after a mid-stream failure (the engine reports none then), re-counted."""
        try:
            prompt = len(engine.encode_messages(request.messages, params))
            output = len(engine.tokenizer.encode("".join(text)))
        except Exception:  # counting is best effort; the failure is what matters
            prompt, output = 0, len(text)
        return TokenUsage(input_tokens=prompt, output_tokens=output, estimated=True)


def app_event(item: Any, kinds: Any) -> BackendEvent | None:
    """The backend event for an engine event (``kinds``: the engine port); None for the
    ones the stream handles itself (``Done``) or does not forward."""
    match item:
        case kinds.TextDelta(text=text):
            return TextDelta(text)
        case kinds.ReasoningDelta(text=text):
            return ReasoningDelta(text)
        case kinds.ToolCallStart(index=index, name=name, id=call_id):
            return ToolCallStart(index, call_id, name)
        case kinds.ToolCallDelta(index=index, arguments=arguments):
            return ToolCallDelta(index, arguments)
        case kinds.ToolCallEnd(index=index, call=call):
            return ToolCallDone(index, call.id, call.name, call.arguments)
        case kinds.ToolCallError(message=message, index=index):
            return ToolCallInvalid(message, index)
        case kinds.Usage():
            return TokenUsage(
                input_tokens=item.prompt_tokens,
                output_tokens=item.generated_tokens,
                reasoning_tokens=item.reasoning_tokens,
            )
    return None


def _label(path: Path) -> str:
    """ "demo-size model: " before the demo model's path, so nobody mistakes its answers."""
    from ds4router.demo_model import LABEL, is_demo

    return f"{LABEL}: " if is_demo(path) else ""


def _engine_types() -> Any:
    """The engine's event types, resolved when a stream runs (never at import time)."""
    from ds4router.backends import engine_port

    return engine_port


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FAILED_STATUS",
    "LoadStatus",
    "LocalBackend",
    "LocalStats",
    "forget_load",
    "percent",
]
