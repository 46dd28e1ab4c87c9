"""What the gateway does for a request, between the HTTP layer and the one pipeline.

:class:`Gateway` holds, per project directory, the merged configuration and one
:class:`~ds4router.sessions.backend_pool.BackendPool` (a cloud backend per model, the local
engine once per process), and answers each request with a fresh
:class:`~ds4router.sessions.session.Session` on that pool: ``plan`` (the whole conversation
classified, routed, the privacy invariant enforced), ``run``, ``record`` (the ledger row,
with the client). Requests run concurrently; requests routed to the in-process local engine
pass a FIFO gate one at a time (:class:`LocalGate`), and ``/health`` says how many wait.

A named model is honoured within the invariant: it becomes the exchange's explicit target,
which the plan still refuses to send off the machine above ``cloud_max_privacy``. Agents'
turns are not written to the conversation history (each request carries the whole
conversation again); the ledger keeps one row per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ds4router import paths
from ds4router.config.loader import LoadedConfig, load_config
from ds4router.errors import Ds4RouterError
from ds4router.events import (
    FallbackTaken,
    Priced,
    Refused,
    Routed,
    SessionEvent,
)
from ds4router.gateway.auth import Caller, KeyRing, identify
from ds4router.gateway.wire import WireError, WireRequest, text_of
from ds4router.sessions.backend_pool import BackendFactory, BackendPool
from ds4router.sessions.plan import Exchange
from ds4router.sessions.recorder import Recorder
from ds4router.sessions.session import Session
from ds4router.targets import CloudModel, LocalEngine, LocalServer, Target, parse_target
from ds4router.token_count import count


class LocalGate:
    """One local generation at a time, in arrival order (asyncio's lock is FIFO)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.waiting = 0

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._lock.release()


@dataclass(frozen=True)
class TrafficEntry:
    """One finished agent request, as the TUI's traffic screen lists it."""

    time: dt.datetime
    client: str
    project: str
    route: str
    model: str | None
    rule: str | None
    privacy: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    status: str
    reason: str | None = None


@dataclass
class _Project:
    loaded: LoadedConfig
    pool: BackendPool
    recorder: Recorder
    stamp: tuple[float, ...]


@dataclass
class Gateway:
    """The gateway's state; ``create_app(gateway)`` serves it.

    ``project_dir``: the default project (``serve --project``, else the working directory);
    ``keys``: the declared keys (empty: loopback only, no key needed). ``db_path`` and
    ``backend_factory`` are for tests; ``user_file`` is the user config to read.
    """

    project_dir: Path | None
    keys: KeyRing = field(default_factory=lambda: KeyRing(()))
    db_path: Path | None = None
    backend_factory: BackendFactory | None = None
    user_file: Path | None = None
    traffic: collections.deque[TrafficEntry] = field(
        default_factory=lambda: collections.deque(maxlen=500)
    )
    listeners: list[Callable[[TrafficEntry], None]] = field(default_factory=list)
    _projects: dict[Path, _Project] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _gate: LocalGate = field(default_factory=LocalGate)
    _in_flight: int = 0
    _sessions: set[Session] = field(default_factory=set)

    # --- the app's hooks ------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        await asyncio.to_thread(self.project, None)  # a broken config fails at start, clearly
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish (or cancelled them) by now; any
            # session still open is cancelled, so its row says so.
            for session in list(self._sessions):
                session.cancel()
            with self._lock:
                for project in self._projects.values():
                    project.recorder.close()

    def identify(self, headers: Mapping[str, str]) -> Caller:
        default = str(self.project_dir) if self.project_dir is not None else None
        return identify(headers, self.keys, default)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "in_flight": self._in_flight,
            "local": {"busy": self._gate.busy, "queued": self._gate.waiting},
        }

    def project(self, name: str | None) -> _Project:
        """The project at directory ``name`` (None: the default), reloaded when its files
        change; a bad config raises ``Ds4RouterError`` naming file and line."""
        directory = Path(name).expanduser() if name else self.project_dir
        key = (directory or Path.cwd()).resolve()
        stamp = _stamp(key, self.user_file)
        with self._lock:
            known = self._projects.get(key)
            if known is not None and known.stamp == stamp:
                return known
        loaded = load_config(key if directory is not None else None, user_file=self.user_file)
        with self._lock:
            if known is not None:
                known.recorder.close()
            db = self.db_path if self.db_path is not None else paths.database_path()
            recorder = Recorder(loaded, db, keep_history=False)
            fresh = _Project(loaded, BackendPool(loaded, self.backend_factory), recorder, stamp)
            self._projects[key] = fresh
            return fresh

    def models(self, caller: Caller) -> list[tuple[str, str]]:
        """What this caller's project can reach: auto, the local engine and servers, the
        configured cloud models (``owned_by`` says which kind)."""
        config = self.project(caller.project).loaded.config
        out = [("ds4router/auto", "ds4router"), ("local", "local")]
        out += [(f"local:{s.name}", "local") for s in getattr(config.local, "servers", [])]
        out += [(m.name, "cloud") for m in config.cloud.models]
        return out

    def prompt_tokens(self, head: Sequence[SessionEvent]) -> int:
        for event in head:
            if isinstance(event, Routed):
                return event.request.tokens
        return 0

    async def count_tokens(self, wire: WireRequest, caller: Caller) -> int:
        project = self.project(caller.project)
        target = self._target(wire, project.loaded) or LocalEngine()
        path = project.loaded.config.local.engine.model_path
        counted = await asyncio.to_thread(count, target, wire.messages, local_model_path=path)
        return counted.tokens

    # --- one request ----------------------------------------------------------------------

    async def answer(self, wire: WireRequest, caller: Caller) -> AsyncIterator[SessionEvent]:
        """The pipeline's events for one agent request (``WireError``: a client mistake)."""
        try:
            project = await asyncio.to_thread(self.project, caller.project)
        except Ds4RouterError as exc:
            raise WireError(f"project {caller.project or '(default)'}: {exc}") from None
        exchange = exchange_of(wire, caller, self._target(wire, project.loaded))
        session = Session(
            project.loaded, db_path=self.db_path, backends=project.pool, recorder=project.recorder
        )
        self._sessions.add(session)
        self._in_flight += 1
        events = session.answer(exchange)
        gate: contextlib.AsyncExitStack = contextlib.AsyncExitStack()
        privacy, reason = "", None
        holding = False  # the local turn is taken once, however often the chain lands there
        try:
            async for event in events:
                match event:
                    case Routed(decision=decision) | Refused(decision=decision):
                        privacy = str(decision.privacy)
                        if isinstance(event, Refused):
                            reason = "; ".join(decision.reasons)
                    case Priced():
                        self._log(caller, project.loaded, event, privacy, reason)
                    case _:
                        pass
                if _goes_local(event) and not holding:
                    await gate.enter_async_context(self._gate.turn())
                    holding = True
                yield event
        finally:
            await events.aclose()
            await gate.aclose()
            self._in_flight -= 1
            self._sessions.discard(session)

    def _target(self, wire: WireRequest, loaded: LoadedConfig) -> Target | None:
        if wire.auto:
            return None
        return named_target(wire.model, loaded)

    def _log(
        self,
        caller: Caller,
        loaded: LoadedConfig,
        priced: Priced,
        privacy: str,
        reason: str | None,
    ) -> None:
        entry = TrafficEntry(
            time=dt.datetime.now(dt.UTC),
            client=caller.client,
            project=loaded.project_name,
            route=priced.route,
            model=priced.model,
            rule=priced.rule,
            privacy=privacy,
            input_tokens=priced.input_tokens,
            output_tokens=priced.output_tokens,
            cost_usd=priced.cost_usd,
            status="refused" if priced.route == "refused" else priced.status,
            reason=reason,
        )
        self.traffic.append(entry)
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):  # a screen that went away
                listener(entry)


def _goes_local(event: SessionEvent) -> bool:
    match event:
        case Routed(decision=decision):
            return isinstance(decision.target, LocalEngine)
        case FallbackTaken(to_target=target):
            return isinstance(target, LocalEngine)
        case _:
            return False


def named_target(model: str, loaded: LoadedConfig) -> Target:
    """The target a request's ``model`` names: a target's spelling (``local``,
    ``local:NAME``, ``cloud:M``) or a configured cloud model, by its full name or the name
    without its provider (``claude-opus-4-7`` for ``anthropic/claude-opus-4-7``)."""
    config = loaded.config
    with contextlib.suppress(ValueError):
        target = parse_target(model)
        if not isinstance(target, CloudModel | LocalServer) or _known(target, loaded):
            return target
    names = [m.name for m in config.cloud.models]
    for name in names:
        if model == name or model == name.split("/", 1)[-1]:
            return CloudModel(name)
    reachable = ", ".join(["ds4router/auto", "local", *names]) or "ds4router/auto"
    raise WireError(
        f"unknown model {model!r}: this project reaches {reachable} (GET /v1/models); "
        "use ds4router/auto to let the project's rules decide",
        "model",
    )


def _known(target: CloudModel | LocalServer, loaded: LoadedConfig) -> bool:
    config = loaded.config
    if isinstance(target, LocalServer):
        return any(s.name == target.name for s in getattr(config.local, "servers", []))
    return any(m.name == target.model for m in config.cloud.models)


def exchange_of(wire: WireRequest, caller: Caller, target: Target | None) -> Exchange:
    """The pipeline's exchange for an agent request: a user message last is the newest
    message (its tags and task count, as typed); after tool results, the whole conversation
    is the context and the last user message says the task."""
    messages = list(wire.messages)
    text = ""
    last = messages[-1]
    if last.get("role") == "user" and isinstance(last.get("content"), str):
        text = last["content"]
        messages = messages[:-1]
    task_text = text or _last_user_text(messages)
    return Exchange(
        text=text,
        messages=tuple(messages),
        tools=tuple(wire.tools),
        model=target,
        max_tokens=wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        stop=wire.stop,
        tool_choice=wire.tool_choice,
        reasoning=wire.reasoning,
        client=caller.client,
        task_text=task_text,
    )


def _last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    for message in reversed(list(messages)):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def _stamp(directory: Path, user_file: Path | None) -> tuple[float, ...]:
    """Modification times of the files a project's config is read from."""
    stamps: list[float] = []
    for path in (directory / ".ds4router.yaml", user_file):
        if path is None:
            continue
        try:
            stamps.append(path.stat().st_mtime)
        except OSError:
            stamps.append(0.0)
    return tuple(stamps)
