"""Sessions: one chat request end to end, the glue under ``ds4router ask`` and the TUI.

``Session.send`` runs classify -> route -> backend -> price -> ledger -> history
and yields, in order: ``Routed`` (or ``Refused``: nothing was sent), maybe
``FallbackTaken``, the backend's ``ReasoningDelta``/``TextDelta``/``Usage``,
``Done`` or ``Failed``, and last ``Priced``, once the ledger row is written.
This module holds the ``Session``, the events it adds to the backends', and
``backend_for`` (which backend serves a target); the pieces it runs on are
:mod:`ds4router.sessions.turn` (the record of the request being answered),
:mod:`ds4router.sessions.conversation` (earlier turns, fitted to a window) and
:mod:`ds4router.sessions.turn_costs` (the ``Priced`` event, the ledger row, the price catalog).

Routing state is read fresh for each request: the month's cloud spend from the
ledger (``pricing.budget``), the local backend's health, and the health of the
cloud model the rules picked (recent failures plus a TCP check that sends
nothing). When that cloud model is offline the request is routed again with
the cloud marked unavailable, so ``fallback.cloud_unavailable`` applies at once
instead of after a timeout.

A backend that fails **before any token** hands the request to the next target
of ``decision.fallbacks``; after a token nothing is retried, the partial answer
is kept and the request ends as ``error``. Whatever happens, a request above
``privacy.cloud_max_privacy`` never reaches a cloud backend: the router already
guarantees it, and this module checks it again before every attempt.

Each request writes exactly one ledger row (for the backend that answered or
failed last): ``ok``, ``error`` with the usage so far, ``cancelled``, or a
``refused`` row. Conversation context (earlier turns) is sent with each request
and counts toward its privacy level: a follow-up to a secret answer is secret.

A long conversation is fitted to each target's context window before that target
is tried (``ds4router.sessions.context_window``): the oldest whole turns are left out and a
``Notice`` says how many; the newest message is never cut, and when it alone does
not fit, the attempt fails with ``context_window`` before anything is sent. A
target whose window is unknown gets the conversation as it is, and a ``Notice``
says so (once per conversation). The local engine's window is counted exactly, with its
own tokenizer and chat template (``ds4router.sessions.local_tokens``); cloud windows, and the local
one when no tokenizer can be read (the notice then says so), by a conservative count. The
request is classified and routed on the whole conversation first, so leaving turns out can
never make it look less private.
History keeps every turn.

Usage that no backend reported (a stream cut before its usage chunk) is counted
(``ds4router.sessions.turn_costs``) and written to the ledger marked ``usage_estimated``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, assert_never

from ds4router import paths
from ds4router.backends.base import Backend, BackendRequest
from ds4router.backends.endpoints import resolve
from ds4router.backends.health import Health
from ds4router.config.loader import LoadedConfig
from ds4router.errors import Ds4RouterError
from ds4router.events import (
    Done,
    Failed,
    FallbackTaken,
    Priced,
    ReasoningDelta,
    Refused,
    Routed,
    SessionEvent,
    TextDelta,
    TokenUsage,
    failed,
)
from ds4router.routing.classify import classify, load_attachments
from ds4router.routing.detectors import redact_text
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.privacy import Contribution
from ds4router.routing.request import Attachment, Request, estimate_tokens, strip_tags
from ds4router.routing.router import Classified, Decision, RouterState, decide, local_model_id
from ds4router.routing.state import local_engine_status
from ds4router.sessions.context_window import (
    ContextLimits,
    cloud_limits,
    content_text,
    local_limits,
)
from ds4router.sessions.conversation import (
    ContextTurn,
    chat_messages,
    context_pieces,
    context_turns,
    fit_conversation,
)
from ds4router.sessions.history import History, Message, title_from
from ds4router.sessions.journal import Begun, begin, progress
from ds4router.sessions.turn import Attempt, Turn, outcome_status
from ds4router.sessions.turn_costs import price_catalog, record_turn
from ds4router.targets import (
    CloudModel,
    LocalEngine,
    LocalServer,
    Refuse,
    Sendable,
    Target,
    leaves_machine,
    model_of,
)
from pricing.catalog import PriceCatalog
from pricing.errors import PricingError
from pricing.ledger import Ledger


class BackendUnavailable(Ds4RouterError):
    """A backend cannot be created here (the local engine is not configured or not built)."""

    exit_code = 1


# --- backends -----------------------------------------------------------------------------

BackendFactory = Callable[[Sendable, LoadedConfig], Backend]
LOCAL_BACKEND_MODULE = "ds4router.backends.local"


def backend_for(target: Sendable, loaded: LoadedConfig) -> Backend:
    """The backend serving ``target``.

    The local backend comes from ``ds4router.backends.local`` (the engine's
    ``LocalBackend.from_config(loaded)``), imported here on first use so the
    CLI never loads mlx for a cloud request. Raises ``BackendUnavailable`` with
    the reason when it cannot be had.
    """
    match target:
        case CloudModel():
            from ds4router.backends.cloud import CloudBackend

            return CloudBackend(loaded.config.cloud)
        case LocalServer(name=name):
            # The first-run helper adds the servers' configuration and backend.
            raise BackendUnavailable(f"no local server named {name!r} is configured")
        case LocalEngine():
            return _local_engine_backend(loaded)
        case _:
            assert_never(target)


def _local_engine_backend(loaded: LoadedConfig) -> Backend:
    ok, detail = local_engine_status(loaded)
    if not ok:
        raise BackendUnavailable(f"local engine {detail}")
    try:
        module = importlib.import_module(LOCAL_BACKEND_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != LOCAL_BACKEND_MODULE:
            raise BackendUnavailable(f"the local engine cannot load: {exc}") from None
        raise BackendUnavailable(
            "the local engine backend is not part of this build (ds4router.backends.local)"
        ) from None
    try:
        backend: Backend = module.LocalBackend.from_config(loaded)
    except Ds4RouterError:
        raise
    except Exception as exc:  # an engine error is a reason to route elsewhere, not a crash
        raise BackendUnavailable(f"the local engine cannot start: {exc}") from None
    return backend


# --- the prompt ---------------------------------------------------------------------------


def compose_prompt(text: str, attachments: Sequence[Attachment]) -> str:
    """What the model is sent: the text without tags, then each attachment fenced, with its path."""
    parts = [strip_tags(text)] if strip_tags(text) else []
    for attachment in attachments:
        fence = "```"
        while fence in attachment.text:
            fence += "`"
        body = attachment.text.rstrip("\n")
        parts.append(f"File `{attachment.path}`:\n{fence}\n{body}\n{fence}")
    return "\n\n".join(parts)


# --- the session ----------------------------------------------------------------------------


class Session:
    """Sends requests for one project; keeps the current conversation.

    ``backend_factory(target, loaded)`` creates backends (default:
    :func:`backend_for`); they are created once per target and kept.
    ``db_path`` is the ledger + history database (default:
    ``paths.database_path()``). ``meters`` are handed to ``EnergyMeter`` for
    local requests (None: what this machine offers).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        backend_factory: BackendFactory | None = None,
        db_path: Path | None = None,
        meters: Sequence[Any] | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.project = loaded.project_name
        self.db_path = Path(db_path) if db_path is not None else paths.database_path()
        self.conversation_id: str | None = None
        self._factory = backend_factory
        self._meters = meters
        self._backends: dict[Sendable, Backend] = {}
        self._backends_lock = threading.Lock()
        self._db_lock = threading.RLock()
        self._ledger: Ledger | None = None
        self._history: History | None = None
        self._spent: float | None = None
        # history: off keeps the current conversation here, and nowhere else.
        self._memory_id: str | None = None
        self._memory: list[ContextTurn] = []
        self._context_level: PrivacyLevel | None = None
        self._context_turns: list[ContextTurn] = []  # scanned with every new message
        # (conversation, model) pairs already told that the model's window is unknown:
        # said once per conversation, not under every answer.
        self._told_unknown: set[tuple[str, str]] = set()
        self._current: Backend | None = None
        self._cancel_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public API -------------------------------------------------------------------

    @property
    def history_enabled(self) -> bool:
        return self.config.history == "on"

    def preview(self, text: str, files: Sequence[str | Path] = ()) -> tuple[Classified, Decision]:
        """Where ``text`` would go now, without sending or dialing anything.

        Uses the budget and health as last seen, so it is fast enough to run on
        every keystroke. The current conversation's privacy counts, as in send.
        """
        attachments = load_attachments(text, files, self.loaded.project_dir)
        classified = self._classify(
            Request(text, attachments), self._context_level, 0, self._context_turns
        )
        decision = self._enforce_privacy(self._decide(classified, live=False), classified)
        return classified, decision

    def cancel(self) -> None:
        """Stop the running send (it records ``cancelled``); safe from any thread."""
        self._cancel_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._cancel_current()
        else:
            # On the send's loop, so it cannot slip between starting a stream
            # and that stream registering itself for cancellation.
            loop.call_soon_threadsafe(self._cancel_current)

    def close(self) -> None:
        with self._db_lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            if self._history is not None:
                self._history.close()
                self._history = None

    async def send(
        self,
        text: str,
        files: Sequence[str | Path] = (),
        conversation_id: str | None = None,
        model: Target | None = None,
    ) -> AsyncIterator[SessionEvent]:
        """Answer ``text`` (with ``files`` attached) in a conversation (None: a new one);
        ``model``: the target the user chose (None: the rules decide)."""
        if not text.strip() and not files:
            raise Ds4RouterError("nothing to send: the message is empty")
        self._loop = asyncio.get_running_loop()
        self._cancel_requested = False
        attachments = load_attachments(text, files, self.loaded.project_dir)
        cid = conversation_id or uuid.uuid4().hex
        context = await asyncio.to_thread(self._context, cid)
        self.conversation_id = cid
        level = max((t.privacy for t in context), default=None)
        tokens = sum(estimate_tokens(t.prompt) + estimate_tokens(t.answer) for t in context)
        classified = self._classify(Request(text, attachments, model), level, tokens, context)
        decision = await asyncio.to_thread(self._decide, classified, live=True)
        decision = self._enforce_privacy(decision, classified)
        prompt = compose_prompt(text, attachments)
        turn = Turn(
            text=text,
            prompt=prompt,
            attachments=attachments,
            conversation_id=cid,
            classified=classified,
            decision=decision,
            time=dt.datetime.now(dt.UTC),
        )
        refused = isinstance(decision.target, Refuse)
        if not refused:
            # Written before the first byte leaves: a row that cannot be written stops here.
            turn.journal = await asyncio.to_thread(self._begin, turn)
        first: SessionEvent = Refused(decision) if refused else Routed(decision, classified)
        attempts = self._attempts(turn, context)
        try:
            yield first
            if not refused:
                async for event in attempts:
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            # The consumer went away (task cancelled, Ctrl-C, stream closed): the
            # request still gets its row, as cancelled, with what it used so far.
            await attempts.aclose()
            if not turn.recorded:
                self._finish(turn, abandoned=True)
            raise
        # Synchronous (the catalog is loaded by then, the writes take milliseconds), so
        # a cancellation cannot fall between writing the row and marking it written.
        yield self._finish(turn)

    # --- attempts and fallback ----------------------------------------------------------

    async def _attempts(
        self, turn: Turn, context: Sequence[ContextTurn]
    ) -> AsyncGenerator[SessionEvent, None]:
        """Try the chosen target, then its fallbacks while failures come before any token.

        A target whose backend cannot even be created is skipped, not attempted; a
        failure is shown only once nothing is left to fall back to, so the user sees
        the first backend's error (with why the fallback could not help).
        """
        messages = chat_messages(context, turn.prompt)
        # The router filtered the chain already; filtered again, so no bug there can leak.
        specs = [s for s in turn.decision.chain if self._spec_allowed(s, turn)]
        # Each target's window, read off the loop (the model map is parsed on first use).
        limits = await asyncio.to_thread(self._limits_of, specs)
        pending: Failed | None = None  # a failure before any token, not shown yet
        failed_spec: Sendable | None = None
        for position, spec in enumerate(specs):
            target, model = spec, model_of(spec, local_model_id(self.config))
            assert model is not None
            if self._cancel_requested:
                if not turn.attempts:
                    turn.attempts.append(Attempt(target, model, time.monotonic()))
                stop = failed("cancelled", "cancelled before anything was sent")
                turn.conclude(stop)
                yield stop
                return
            try:
                backend = self._backend(target)
            except BackendUnavailable as exc:
                if not turn.attempts:  # the row needs a route even when nothing ran
                    turn.attempts.append(Attempt(target, model, time.monotonic()))
                if pending is None:
                    pending, failed_spec = failed("unavailable", str(exc)), spec
                else:
                    pending = replace(pending, message=f"{pending.message}; {spec}: {exc}")
                continue
            if pending is not None:
                turn.fell_back = True
                assert failed_spec is not None  # set with every pending failure
                yield FallbackTaken(failed_spec, spec, pending.message)
                pending = None
            attempt = Attempt(target, model, time.monotonic())
            turn.attempts.append(attempt)
            last = position == len(specs) - 1
            # Off the loop: counting a long conversation (the local tokenizer, or the
            # conservative count's regex) takes milliseconds per thousand tokens.
            sent, notice, too_long = await asyncio.to_thread(
                fit_conversation, messages, limits.get(spec), model, len(context)
            )
            if self._cancel_requested:  # asked while counting: nothing was sent
                stop = failed("cancelled", "cancelled before anything was sent")
                turn.conclude(stop)
                yield stop
                return
            if too_long is not None:  # nothing sent; a target with a larger window may serve
                attempt.end(too_long)
                if not last and not self._cancel_requested:
                    pending, failed_spec = too_long, spec
                    continue
                yield too_long
                return
            if notice is not None and notice.kind == "context_unknown":
                told = (turn.conversation_id, model)
                notice = None if told in self._told_unknown else notice
                self._told_unknown.add(told)
            if notice is not None:
                yield notice
            attempt.prompt_tokens = sum(
                estimate_tokens(content_text(m.get("content"))) for m in sent
            )
            request = BackendRequest(messages=sent, model=model, request_id=uuid.uuid4().hex)
            events = self._stream(backend, request, attempt)
            try:
                async for event in events:
                    if (
                        isinstance(event, Failed)
                        and not last
                        and not event.after_tokens
                        and not attempt.has_tokens
                        and event.kind != "cancelled"
                        and not self._cancel_requested
                    ):
                        pending, failed_spec = event, spec
                        break
                    if isinstance(event, TextDelta | ReasoningDelta) and turn.journal:
                        self._progress(turn)
                    yield event
            finally:
                await events.aclose()  # ends the backend's stream and the energy meter
            if pending is None:
                return
        if pending is not None:
            turn.conclude(pending)
            yield pending

    def _limits_of(self, specs: Sequence[Sendable]) -> dict[Sendable, ContextLimits | None]:
        """The context window of each target in ``specs`` (None: unknown)."""
        found: dict[Sendable, ContextLimits | None] = {}
        for spec in specs:
            match spec:
                case LocalEngine():
                    engine = self.config.local.engine
                    found[spec] = local_limits(
                        local_model_id(self.config), engine.model_path, engine.max_tokens
                    )
                case LocalServer():
                    found[spec] = None  # its window is the server's; not known here yet
                case CloudModel(model=model):
                    catalog, _ = self._catalog()
                    found[spec] = cloud_limits(model, catalog, self.config.cloud.models)
                case _:
                    assert_never(spec)
        return found

    def _spec_allowed(self, spec: Sendable, turn: Turn) -> bool:
        return not leaves_machine(spec) or self._cloud_allowed(turn.classified, turn.decision)

    async def _stream(
        self, backend: Backend, request: BackendRequest, attempt: Attempt
    ) -> AsyncGenerator[SessionEvent, None]:
        """One backend's events, tracked on ``attempt`` (energy metered for local)."""
        meter = None
        if isinstance(attempt.target, LocalEngine):
            from pricing.energy import EnergyMeter

            power = self.config.local.power
            meter = EnergyMeter(power.watts, power.source, meters=self._meters)
            meter.__enter__()
        self._current = backend
        # No await between here and the stream's first step: a cancel() queued on
        # this loop either came before (seen below) or finds the stream registered.
        stream = backend.stream(request)
        try:
            async for event in stream:
                if isinstance(event, TextDelta | ReasoningDelta):
                    attempt.token(event)
                elif isinstance(event, TokenUsage):
                    attempt.usage = event
                elif isinstance(event, Done | Failed):
                    attempt.end(event)
                yield event
                if attempt.outcome is not None:
                    break
                if self._cancel_requested:
                    backend.cancel()
            if attempt.outcome is None:
                outcome = failed(
                    "internal",
                    f"{request.model}: the stream ended without finishing",
                    after_tokens=attempt.has_tokens,
                )
                attempt.end(outcome)
                yield outcome
        finally:
            self._current = None
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
            if meter is not None:
                meter.__exit__(None, None, None)
                attempt.energy = meter.reading

    def _cancel_current(self) -> None:
        backend = self._current
        if backend is not None:
            backend.cancel()

    def _backend(self, target: Sendable) -> Backend:
        with self._backends_lock:
            backend = self._backends.get(target)
        if backend is not None:
            return backend
        factory = self._factory or backend_for  # looked up now, so tests may patch it
        backend = factory(target, self.loaded)
        with self._backends_lock:
            return self._backends.setdefault(target, backend)

    # --- classification and routing -------------------------------------------------------

    def _classify(
        self,
        request: Request,
        context_level: PrivacyLevel | None,
        context_tokens: int,
        context: Sequence[ContextTurn] = (),
    ) -> Classified:
        """Every message of the conversation is scanned, and the levels stored with the
        earlier turns count too (history keeps a redacted text, so its level is kept)."""
        classified = classify(request, self.config, context_pieces(context))
        privacy = classified.privacy
        if context_level is not None and context_level > self.config.privacy.default:
            privacy = replace(
                privacy,
                level=max(context_level, privacy.level),
                contributions=(
                    *privacy.contributions,
                    Contribution("earlier messages of this conversation", context_level),
                ),
            )
        return replace(classified, privacy=privacy, tokens=classified.tokens + context_tokens)

    def _decide(self, classified: Classified, live: bool) -> Decision:
        if live:
            self._catalog()  # loaded now, off the event loop, so pricing later is instant
        state = self._state(live)
        decision = decide(classified, self.config, state)
        if isinstance(decision.target, CloudModel):
            health = self._cloud_health(decision.target, live)
            if not health.usable:
                detail = health.detail or health.status
                state = replace(state, cloud_available=False, cloud_detail=detail)
                decision = decide(classified, self.config, state)
        if live and any(leaves_machine(target) for target in decision.chain):
            from ds4router.backends.cloud import load_litellm

            load_litellm()  # seconds on first use: here, in a worker thread, not on the loop
        return decision

    def _state(self, live: bool) -> RouterState:
        from pricing.budget import budget_for_month

        budget = self.config.budget
        spent = self._month_spent(live) if budget.monthly_usd is not None else None
        over = False
        if budget.monthly_usd is not None and spent is not None:
            now = dt.datetime.now(dt.UTC)
            state = budget_for_month(
                budget.monthly_usd, spent, budget.warn_at, now.strftime("%Y-%m"), now
            )
            over = state.over_budget
        local_ok, local_detail = self._local_health()
        return RouterState(
            over_budget=over,
            budget_spent_usd=spent,
            budget_cap_usd=budget.monthly_usd,
            local_available=local_ok,
            cloud_available=True,
            local_detail=local_detail,
        )

    def _month_spent(self, live: bool) -> float:
        if not live and self._spent is not None:
            return self._spent
        if not live and not self.db_path.exists():
            return 0.0
        month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
        with self._db_lock:
            spent = self._ledger_db().spent(month, self.project)
        self._spent = spent
        return spent

    def _local_health(self) -> tuple[bool, str]:
        try:
            backend = self._backend(LocalEngine())
        except BackendUnavailable as exc:
            return False, _detail_of(exc)
        health = backend.health()
        return health.usable, health.detail or health.status

    def _cloud_health(self, target: CloudModel, live: bool) -> Health:
        model = target.model
        try:
            backend = self._backend(target)
        except BackendUnavailable as exc:
            return Health("not_configured", _detail_of(exc))
        from ds4router.backends.cloud import CloudBackend

        if not isinstance(backend, CloudBackend):
            return backend.health()
        if live:
            return backend.health(model)
        # The preview never dials: what is known already, keys and recent failures.
        resolved = resolve(model, backend.config)
        key_env = resolved.api_key_env
        if key_env is not None and not os.environ.get(key_env):
            return Health("not_configured", f"environment variable {key_env} is not set")
        if resolved.endpoint is not None:
            probe = backend.reachability.cached(resolved.endpoint)
            if probe is not None and not probe.reachable:
                return Health("offline", f"cannot reach {probe.endpoint}: {probe.detail}")
        return backend.failures.health(model)

    def _cloud_allowed(self, classified: Classified, decision: Decision) -> bool:
        level = max(classified.privacy.level, decision.privacy)
        return level <= self.config.privacy.cloud_max_privacy

    def _enforce_privacy(self, decision: Decision, classified: Classified) -> Decision:
        """The privacy invariant, again: a cloud target above the limit becomes a refusal."""
        if leaves_machine(decision.target) and not self._cloud_allowed(classified, decision):
            limit = self.config.privacy.cloud_max_privacy
            level = max(classified.privacy.level, decision.privacy)
            return replace(
                decision,
                target=Refuse(),
                model=None,
                rule="privacy",
                fallbacks=(),
                reasons=(
                    *decision.reasons,
                    f"privacy {level} is above cloud_max_privacy {limit}: refusing to send it "
                    f"to {decision.model}",
                ),
                fix=decision.fix or "report this: the router chose a cloud target above the limit",
            )
        safe = tuple(
            target
            for target in decision.fallbacks
            if not leaves_machine(target) or self._cloud_allowed(classified, decision)
        )
        return decision if safe == decision.fallbacks else replace(decision, fallbacks=safe)

    # --- conversation context -------------------------------------------------------------

    def _context(self, conversation_id: str) -> list[ContextTurn]:
        """Earlier exchanges of the conversation that reached a model, oldest first."""
        if not self.history_enabled:
            turns = list(self._memory) if conversation_id == self._memory_id else []
        else:
            with self._db_lock:
                messages = self._history_db().messages(conversation_id)
            turns = context_turns(messages)
        self._context_level = max((t.privacy for t in turns), default=None)
        self._context_turns = turns
        return turns

    # --- accounting -------------------------------------------------------------------------

    def _finish(self, turn: Turn, abandoned: bool = False) -> Priced:
        """Price the turn, write its ledger row and history; returns the ``Priced`` event."""
        turn.recorded = True
        decision = turn.decision
        if abandoned and not turn.attempts and decision.chain:
            # Routed, then dropped before the backend was called: still the routed target's row.
            turn.attempts.append(Attempt(decision.chain[0], decision.model or "", time.monotonic()))
        attempt = turn.last
        if attempt is not None and attempt.outcome is None:
            attempt.end(
                failed("cancelled", "cancelled", after_tokens=attempt.has_tokens)
                if abandoned
                else failed("internal", "the request ended without an outcome")
            )
        catalog, catalog_error = self._catalog()
        with self._db_lock:
            priced = record_turn(
                turn,
                self._ledger_db(),
                project=self.project,
                config=self.config,
                catalog=catalog,
                catalog_error=catalog_error,
            )
            if priced.route == "cloud" and priced.cost_usd is not None and self._spent is not None:
                self._spent += priced.cost_usd
            self._remember(turn, attempt, priced)
        return priced

    def _begin(self, turn: Turn) -> Begun:
        catalog, _ = self._catalog()
        with self._db_lock:
            history = self._history_db() if self.history_enabled else None
            return begin(
                turn,
                self._ledger_db(),
                history,
                project=self.project,
                config=self.config,
                catalog=catalog,
            )

    def _progress(self, turn: Turn) -> None:
        assert turn.journal is not None
        with self._db_lock:
            history = self._history if self.history_enabled else None
            progress(turn.journal, turn, self._ledger_db(), history)

    def _remember(self, turn: Turn, attempt: Attempt | None, priced: Priced) -> None:
        """Keep the exchange in the conversation (history, or memory when history is off)."""
        level = turn.classified.privacy.level
        answer = "".join(attempt.text) if attempt is not None else None
        if not self.history_enabled:
            if self._memory_id != turn.conversation_id:
                self._memory_id, self._memory = turn.conversation_id, []
            if answer:
                self._memory.append(ContextTurn(turn.prompt, answer, level))
            self._context_level = max((t.privacy for t in self._memory), default=None)
            self._context_turns = list(self._memory)
            return
        _, error_kind, error = outcome_status(attempt)
        user = Message(
            role="user",
            text=turn.text,
            content=turn.prompt,
            attachments=tuple(a.path for a in turn.attachments),
            privacy=str(level),
            task=turn.decision.task,
        )
        reply = Message(
            role="assistant",
            text=answer,
            reasoning="".join(attempt.reasoning) if attempt is not None else None,
            route=priced.route,
            model=priced.model,
            rule=priced.rule,
            input_tokens=priced.input_tokens,
            output_tokens=priced.output_tokens,
            cost_usd=priced.cost_usd,
            status=priced.status,
            privacy=str(level),
            task=turn.decision.task,
            error_kind=error_kind,
            error=error,
            ledger_id=priced.ledger_id,
        )
        # A title is shown in lists and sidebars: never with a detected secret in it.
        found = [f.finding for f in turn.classified.privacy.findings if f.where is None]
        title = title_from(redact_text(turn.text, found) if found else turn.text)
        if turn.journal is not None and turn.journal.answer_id is not None:
            self._history_db().finish(turn.journal.answer_id, reply)
        else:
            self._history_db().add_turn(
                turn.conversation_id, user, reply, project=self.project, title=title
            )
        if answer:
            self._context_level = max(self._context_level or level, level)
            self._context_turns = [*self._context_turns, ContextTurn(turn.prompt, answer, level)]

    def _catalog(self) -> tuple[PriceCatalog | None, str | None]:
        try:
            return price_catalog(self.loaded), None
        except PricingError as exc:  # the answer still gets its row, unpriced, and says why
            return None, str(exc)

    def _ledger_db(self) -> Ledger:
        if self._ledger is None:
            try:
                self._ledger = Ledger(self.db_path)
            except PricingError as exc:  # a newer or broken database: say so, no traceback
                raise Ds4RouterError(str(exc)) from None
        return self._ledger

    def _history_db(self) -> History:
        if self._history is None:
            self._history = History(self.db_path)
        return self._history


# --- helpers ----------------------------------------------------------------------------------


def _detail_of(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


__all__ = [
    "BackendFactory",
    "BackendUnavailable",
    "Session",
    "backend_for",
    "compose_prompt",
]
