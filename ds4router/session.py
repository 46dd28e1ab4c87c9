"""Sessions: one chat request end to end, the glue under ``ds4router ask`` and the TUI.

``Session.send`` runs classify -> route -> backend -> price -> ledger -> history
and yields, in order: ``Routed`` (or ``Refused``: nothing was sent), maybe
``FallbackTaken``, the backend's ``ReasoningDelta``/``TextDelta``/``Usage``,
``Done`` or ``Failed``, and last ``Priced``, once the ledger row is written.

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
is tried (``ds4router.context_window``): the oldest whole turns are left out and a
``Notice`` says how many; the newest message is never cut, and when it alone does
not fit, the attempt fails with ``context_window`` before anything is sent. A
target whose window is unknown gets the conversation as it is, and a ``Notice``
says so (once per conversation). The local engine's window is counted exactly, with its
own tokenizer and chat template (``ds4router.local_tokens``); cloud windows, and the local
one when no tokenizer can be read (the notice then says so), by a conservative count. The
request is classified and routed on the whole conversation first, so leaving turns out can
never make it look less private.
History keeps every turn.

Usage that no backend reported (a stream cut before its usage chunk) is counted
here and written to the ledger marked ``usage_estimated``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ds4router import paths
from ds4router.backends.base import Backend, BackendRequest
from ds4router.backends.endpoints import provider_of, resolve
from ds4router.backends.events import (
    Done,
    Failed,
    Notice,
    ReasoningDelta,
    TextDelta,
    Usage,
    failed,
)
from ds4router.backends.health import Health
from ds4router.classify import classify, load_attachments
from ds4router.config.loader import LoadedConfig
from ds4router.context_window import (
    ContextLimits,
    ContextTooLong,
    cloud_limits,
    content_text,
    fit_messages,
    local_limits,
)
from ds4router.detectors import redact_text
from ds4router.errors import Ds4RouterError
from ds4router.history import History, Message, title_from
from ds4router.levels import PrivacyLevel
from ds4router.privacy import Contribution
from ds4router.request import Attachment, Request, estimate_tokens, strip_tags
from ds4router.router import LOCAL_MODEL, Classified, Decision, RouterState, decide, parse_target
from ds4router.state import local_engine_status
from pricing.catalog import PriceCatalog
from pricing.cost import CloudCost, price_request
from pricing.errors import PricingError
from pricing.ledger import Ledger, LedgerRow
from pricing.local_cost import LocalCost, LocalCostModel
from pricing.usage import TokenUsage

# --- the events a session adds to the backends' ------------------------------------------


@dataclass(frozen=True)
class Routed:
    """First event: where the request goes and why; ``request`` is what the router saw."""

    decision: Decision
    request: Classified


@dataclass(frozen=True)
class Refused:
    """Instead of ``Routed``: nothing was sent (``decision.reasons``, ``decision.fix``)."""

    decision: Decision


@dataclass(frozen=True)
class FallbackTaken:
    """A backend failed before any token; the next target in the chain is tried."""

    from_target: str
    to_target: str
    reason: str


@dataclass(frozen=True)
class Priced:
    """Last event, after the ledger row ``ledger_id`` was written.

    ``cost_usd`` is None when the model has no price (``unpriced``), never 0.
    ``saving_usd`` = ``counterfactual_usd`` (the same tokens on the project's
    reference model) - ``cost_usd``, when both are known.
    """

    ledger_id: int
    route: str
    model: str | None
    rule: str | None
    input_tokens: int
    output_tokens: int
    ttft_s: float | None
    tok_s: float | None
    cost_usd: float | None
    unpriced: bool
    counterfactual_usd: float | None
    reference_model: str | None
    saving_usd: float | None
    cost_detail: str
    status: str = "ok"
    duration_s: float | None = None
    conversation_id: str | None = None
    # The token counts were estimated here (no usage was reported), and so are the
    # costs priced from them; the ledger row says so too.
    usage_estimated: bool = False


SessionEvent = (
    Routed
    | Refused
    | FallbackTaken
    | Notice
    | TextDelta
    | ReasoningDelta
    | Usage
    | Done
    | Failed
    | Priced
)


class BackendUnavailable(Ds4RouterError):
    """A backend cannot be created here (the local engine is not configured or not built)."""

    exit_code = 1


# --- backends -----------------------------------------------------------------------------

BackendFactory = Callable[[str, str, LoadedConfig], Backend]
LOCAL_BACKEND_MODULE = "ds4router.backends.local"


def backend_for(target: str, model: str, loaded: LoadedConfig) -> Backend:
    """The backend serving ``target`` (``local`` or ``cloud``) for ``model``.

    The local backend comes from ``ds4router.backends.local`` (the engine's
    ``LocalBackend.from_config(loaded)``), imported here on first use so the
    CLI never loads mlx for a cloud request. Raises ``BackendUnavailable`` with
    the reason when it cannot be had.
    """
    if target == "cloud":
        from ds4router.backends.cloud import CloudBackend

        return CloudBackend(loaded.config.cloud)
    if target != "local":
        raise ValueError(f"no backend for target {target!r}")
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


# --- pricing ------------------------------------------------------------------------------

_catalogs: dict[tuple[str, str], PriceCatalog] = {}
_catalogs_lock = threading.Lock()


def price_catalog(loaded: LoadedConfig) -> PriceCatalog:
    """The catalog for this config (dated sheets + ``pricing.overrides``), built once."""
    sheets = paths.configs_dir() / "prices"
    overrides = {
        name: rates.model_dump(exclude_none=True)
        for name, rates in loaded.config.pricing.overrides.items()
    }
    key = (str(sheets), json.dumps(overrides, sort_keys=True))
    with _catalogs_lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            catalog = PriceCatalog.load(sheets, overrides)
            _catalogs[key] = catalog
    return catalog


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


# --- the turn being answered ----------------------------------------------------------------


@dataclass(frozen=True)
class _ContextTurn:
    """An earlier exchange sent along as context, and the privacy level it carries."""

    prompt: str
    answer: str
    privacy: PrivacyLevel


@dataclass
class _Attempt:
    target: str
    model: str
    started: float
    first_token: float | None = None
    ended: float | None = None
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    usage: Usage | None = None
    outcome: Done | Failed | None = None
    energy: Any = None  # pricing.energy.EnergyReading of a local attempt
    prompt_tokens: int | None = None  # estimate of what was sent, after fitting the window

    @property
    def has_tokens(self) -> bool:
        return self.first_token is not None

    def token(self, event: TextDelta | ReasoningDelta) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()
        (self.text if isinstance(event, TextDelta) else self.reasoning).append(event.text)

    def end(self, outcome: Done | Failed) -> None:
        self.outcome = outcome
        self.ended = time.monotonic()


@dataclass
class _Turn:
    text: str
    prompt: str
    attachments: tuple[Attachment, ...]
    conversation_id: str
    classified: Classified
    decision: Decision
    time: dt.datetime
    attempts: list[_Attempt] = field(default_factory=list)
    fell_back: bool = False
    recorded: bool = False

    @property
    def last(self) -> _Attempt | None:
        return self.attempts[-1] if self.attempts else None


# --- the session ----------------------------------------------------------------------------


class Session:
    """Sends requests for one project; keeps the current conversation.

    ``backend_factory(target, model, loaded)`` creates backends (default:
    :func:`backend_for`); they are created once per (target, model) and kept.
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
        self._backends: dict[tuple[str, str], Backend] = {}
        self._backends_lock = threading.Lock()
        self._db_lock = threading.RLock()
        self._ledger: Ledger | None = None
        self._history: History | None = None
        self._spent: float | None = None
        # history: off keeps the current conversation here, and nowhere else.
        self._memory_id: str | None = None
        self._memory: list[_ContextTurn] = []
        self._context_level: PrivacyLevel | None = None
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
        classified = self._classify(Request(text, attachments), self._context_level, 0)
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
        model: str | None = None,
    ) -> AsyncIterator[SessionEvent]:
        """Answer ``text`` (with ``files`` attached) in a conversation (None: a new one)."""
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
        classified = self._classify(Request(text, attachments, model), level, tokens)
        decision = await asyncio.to_thread(self._decide, classified, live=True)
        decision = self._enforce_privacy(decision, classified)
        prompt = compose_prompt(text, attachments)
        turn = _Turn(
            text=text,
            prompt=prompt,
            attachments=attachments,
            conversation_id=cid,
            classified=classified,
            decision=decision,
            time=dt.datetime.now(dt.UTC),
        )
        first: SessionEvent = (
            Refused(decision) if decision.target == "refuse" else Routed(decision, classified)
        )
        attempts = self._attempts(turn, context)
        try:
            yield first
            if decision.target != "refuse":
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
        self, turn: _Turn, context: Sequence[_ContextTurn]
    ) -> AsyncGenerator[SessionEvent, None]:
        """Try the chosen target, then its fallbacks while failures come before any token.

        A target whose backend cannot even be created is skipped, not attempted; a
        failure is shown only once nothing is left to fall back to, so the user sees
        the first backend's error (with why the fallback could not help).
        """
        messages = _messages(context, turn.prompt)
        # The router filtered the chain already; filtered again, so no bug there can leak.
        specs = [s for s in _chain(turn.decision) if self._spec_allowed(s, turn)]
        # Each target's window, read off the loop (the model map is parsed on first use).
        limits = await asyncio.to_thread(self._limits_of, specs)
        pending: Failed | None = None  # a failure before any token, not shown yet
        failed_spec = ""
        for position, spec in enumerate(specs):
            target, model = parse_target(spec)
            assert model is not None
            if self._cancel_requested:
                if not turn.attempts:
                    turn.attempts.append(_Attempt(target, model, time.monotonic()))
                stop = failed("cancelled", "cancelled before anything was sent")
                _conclude(turn, stop)
                yield stop
                return
            try:
                backend = self._backend(target, model)
            except BackendUnavailable as exc:
                if not turn.attempts:  # the row needs a route even when nothing ran
                    turn.attempts.append(_Attempt(target, model, time.monotonic()))
                if pending is None:
                    pending, failed_spec = failed("unavailable", str(exc)), spec
                else:
                    pending = replace(pending, message=f"{pending.message}; {spec}: {exc}")
                continue
            if pending is not None:
                turn.fell_back = True
                yield FallbackTaken(failed_spec, spec, pending.message)
                pending = None
            attempt = _Attempt(target, model, time.monotonic())
            turn.attempts.append(attempt)
            last = position == len(specs) - 1
            # Off the loop: counting a long conversation (the local tokenizer, or the
            # conservative count's regex) takes milliseconds per thousand tokens.
            sent, notice, too_long = await asyncio.to_thread(
                _fit, messages, limits.get(spec), model, len(context)
            )
            if self._cancel_requested:  # asked while counting: nothing was sent
                stop = failed("cancelled", "cancelled before anything was sent")
                _conclude(turn, stop)
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
                    yield event
            finally:
                await events.aclose()  # ends the backend's stream and the energy meter
            if pending is None:
                return
        if pending is not None:
            _conclude(turn, pending)
            yield pending

    def _limits_of(self, specs: Sequence[str]) -> dict[str, ContextLimits | None]:
        """The context window of each target in ``specs`` (None: unknown)."""
        found: dict[str, ContextLimits | None] = {}
        for spec in specs:
            target, model = parse_target(spec)
            if model is None:
                continue
            if target == "local":
                engine = self.config.local.engine
                found[spec] = local_limits(model, engine.model_path, engine.max_tokens)
            else:
                catalog, _ = self._catalog()
                found[spec] = cloud_limits(model, catalog, self.config.cloud.models)
        return found

    def _spec_allowed(self, spec: str, turn: _Turn) -> bool:
        return not spec.startswith("cloud:") or self._cloud_allowed(turn.classified, turn.decision)

    async def _stream(
        self, backend: Backend, request: BackendRequest, attempt: _Attempt
    ) -> AsyncGenerator[SessionEvent, None]:
        """One backend's events, tracked on ``attempt`` (energy metered for local)."""
        meter = None
        if attempt.target == "local":
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
                elif isinstance(event, Usage):
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

    def _backend(self, target: str, model: str) -> Backend:
        key = (target, model)
        with self._backends_lock:
            backend = self._backends.get(key)
        if backend is not None:
            return backend
        factory = self._factory or backend_for  # looked up now, so tests may patch it
        backend = factory(target, model, self.loaded)
        with self._backends_lock:
            return self._backends.setdefault(key, backend)

    # --- classification and routing -------------------------------------------------------

    def _classify(
        self, request: Request, context_level: PrivacyLevel | None, context_tokens: int
    ) -> Classified:
        classified = classify(request, self.config)
        privacy = classified.privacy
        if context_level is not None and context_level > privacy.level:
            privacy = replace(
                privacy,
                level=context_level,
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
        if decision.target == "cloud" and decision.model is not None:
            health = self._cloud_health(decision.model, live)
            if not health.usable:
                detail = health.detail or health.status
                state = replace(state, cloud_available=False, cloud_detail=detail)
                decision = decide(classified, self.config, state)
        if live and any(spec.startswith("cloud:") for spec in _chain(decision)):
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
            backend = self._backend("local", LOCAL_MODEL)
        except BackendUnavailable as exc:
            return False, _detail_of(exc)
        health = backend.health()
        return health.usable, health.detail or health.status

    def _cloud_health(self, model: str, live: bool) -> Health:
        try:
            backend = self._backend("cloud", model)
        except BackendUnavailable as exc:
            return Health("not_configured", _detail_of(exc))
        from ds4router.backends.cloud import CloudBackend

        if not isinstance(backend, CloudBackend):
            return backend.health()
        if live:
            return backend.health(model)
        # The preview never dials: what is known already, keys and recent failures.
        target = resolve(model, backend.config)
        if target.api_key_env is not None and not os.environ.get(target.api_key_env):
            return Health("not_configured", f"environment variable {target.api_key_env} is not set")
        if target.endpoint is not None:
            probe = backend.reachability.cached(target.endpoint)
            if probe is not None and not probe.reachable:
                return Health("offline", f"cannot reach {probe.endpoint}: {probe.detail}")
        return backend.failures.health(model)

    def _cloud_allowed(self, classified: Classified, decision: Decision) -> bool:
        level = max(classified.privacy.level, decision.privacy)
        return level <= self.config.privacy.cloud_max_privacy

    def _enforce_privacy(self, decision: Decision, classified: Classified) -> Decision:
        """The privacy invariant, again: a cloud target above the limit becomes a refusal."""
        if decision.target == "cloud" and not self._cloud_allowed(classified, decision):
            limit = self.config.privacy.cloud_max_privacy
            level = max(classified.privacy.level, decision.privacy)
            return replace(
                decision,
                target="refuse",
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
            spec
            for spec in decision.fallbacks
            if not spec.startswith("cloud:") or self._cloud_allowed(classified, decision)
        )
        return decision if safe == decision.fallbacks else replace(decision, fallbacks=safe)

    # --- conversation context -------------------------------------------------------------

    def _context(self, conversation_id: str) -> list[_ContextTurn]:
        """Earlier exchanges of the conversation that reached a model, oldest first."""
        if not self.history_enabled:
            turns = list(self._memory) if conversation_id == self._memory_id else []
        else:
            with self._db_lock:
                messages = self._history_db().messages(conversation_id)
            turns = _turns_of(messages)
        self._context_level = max((t.privacy for t in turns), default=None)
        return turns

    # --- accounting -------------------------------------------------------------------------

    def _finish(self, turn: _Turn, abandoned: bool = False) -> Priced:
        """Price the turn, write its ledger row and history; returns the ``Priced`` event."""
        turn.recorded = True
        decision = turn.decision
        if abandoned and not turn.attempts and decision.target != "refuse" and decision.model:
            # Routed, then dropped before the backend was called: still the routed target's row.
            turn.attempts.append(_Attempt(decision.target, decision.model, time.monotonic()))
        attempt = turn.last
        if attempt is not None and attempt.outcome is None:
            attempt.end(
                failed("cancelled", "cancelled", after_tokens=attempt.has_tokens)
                if abandoned
                else failed("internal", "the request ended without an outcome")
            )
        status, error_kind, error = _status(attempt)
        rule = "fallback" if turn.fell_back else decision.rule
        reference = self.config.pricing.reference_model
        catalog, catalog_error = self._catalog()
        ttft = tok_s = duration = None
        input_tokens = output_tokens = 0
        cost: float | None
        counterfactual: CloudCost | None = None
        estimated = False
        if attempt is None:
            route, model = "refused", None
            row = LedgerRow.for_refused(
                time=turn.time,
                project=self.project,
                conversation_id=turn.conversation_id,
                rule=decision.rule,
                privacy=str(decision.privacy),
                task=decision.task,
            )
            cost, detail = 0.0, "refused: nothing was sent, nothing spent"
        else:
            route, model = attempt.target, attempt.model
            usage = _token_usage(attempt.usage or _estimate(turn, attempt))
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
            estimated = usage.estimated
            end = attempt.ended if attempt.ended is not None else time.monotonic()
            duration = max(end - attempt.started, 0.0)
            if attempt.first_token is not None:
                ttft = attempt.first_token - attempt.started
                decoding = end - attempt.first_token
                tok_s = output_tokens / decoding if decoding > 0 and output_tokens else None
            if reference and catalog is not None:
                counterfactual = catalog.price(reference, usage)
            extra: dict[str, Any] = {
                "conversation_id": turn.conversation_id,
                "rule": rule,
                "privacy": str(turn.classified.privacy.level),
                "task": decision.task,
                "ttft_s": ttft,
                "duration_s": duration,
                "tok_s": tok_s,
                "status": status,
                "error_kind": error_kind,
            }
            if attempt.target == "cloud":
                priced = (
                    catalog.price(attempt.model, usage)
                    if catalog is not None
                    else price_request(usage, None, model=attempt.model)
                )
                row = LedgerRow.for_cloud(
                    time=turn.time,
                    project=self.project,
                    cost=priced,
                    provider=provider_of(attempt.model),
                    counterfactual=counterfactual,
                    **extra,
                )
                cost = priced.total_usd
                detail = _cloud_detail(priced, catalog_error)
            else:
                local = self._local_cost(attempt, duration)
                if attempt.energy is not None:
                    extra["duration_s"] = duration = attempt.energy.seconds
                row = LedgerRow.for_local(
                    time=turn.time,
                    project=self.project,
                    usage=usage,
                    cost=local,
                    model=attempt.model,
                    counterfactual=counterfactual,
                    **extra,
                )
                cost = local.total_usd
                detail = _local_detail(local, self.config.local.electricity_usd_per_kwh, duration)
        cf_usd = None if counterfactual is None else counterfactual.total_usd
        saving = None if cf_usd is None or cost is None else cf_usd - cost
        with self._db_lock:
            ledger_id = self._ledger_db().record(row)
            if route == "cloud" and cost is not None and self._spent is not None:
                self._spent += cost
            self._remember(turn, attempt, route, model, rule, cost, status, error, ledger_id)
        return Priced(
            ledger_id=ledger_id,
            route=route,
            model=model,
            rule=rule if attempt is not None else decision.rule,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            ttft_s=ttft,
            tok_s=tok_s,
            cost_usd=cost,
            unpriced=cost is None,
            counterfactual_usd=cf_usd,
            reference_model=reference,
            saving_usd=saving,
            cost_detail=detail,
            status=status,
            duration_s=duration,
            conversation_id=turn.conversation_id,
            usage_estimated=estimated,
        )

    def _local_cost(self, attempt: _Attempt, duration: float) -> LocalCost:
        local = self.config.local
        model = LocalCostModel(
            watts=local.power.watts,
            electricity_usd_per_kwh=local.electricity_usd_per_kwh,
            hardware_price_usd=local.hardware.price_usd,
            lifetime_years=local.hardware.lifetime_years,
            hours_per_day=local.hardware.hours_per_day,
            inference_share=local.hardware.inference_share,
        )
        reading = attempt.energy
        if reading is None:  # never started (backend unavailable): nothing ran
            return model.local_cost(0.0)
        if reading.source == "configured":
            return model.local_cost(reading.seconds)
        return model.local_cost(reading.seconds, reading.joules, reading.source)

    def _remember(
        self,
        turn: _Turn,
        attempt: _Attempt | None,
        route: str,
        model: str | None,
        rule: str | None,
        cost: float | None,
        status: str,
        error: str | None,
        ledger_id: int,
    ) -> None:
        level = turn.classified.privacy.level
        answer = "".join(attempt.text) if attempt is not None else None
        if not self.history_enabled:
            if self._memory_id != turn.conversation_id:
                self._memory_id, self._memory = turn.conversation_id, []
            if answer:
                self._memory.append(_ContextTurn(turn.prompt, answer, level))
            self._context_level = max((t.privacy for t in self._memory), default=None)
            return
        usage = _token_usage(
            (attempt.usage or _estimate(turn, attempt)) if attempt is not None else None
        )
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
            route=route,
            model=model,
            rule=rule,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            status=status,
            privacy=str(level),
            task=turn.decision.task,
            error_kind=_status(attempt)[1],
            error=error,
            ledger_id=ledger_id,
        )
        # A title is shown in lists and sidebars: never with a detected secret in it.
        found = [f.finding for f in turn.classified.privacy.findings if f.where is None]
        title = title_from(redact_text(turn.text, found) if found else turn.text)
        self._history_db().add_turn(
            turn.conversation_id, user, reply, project=self.project, title=title
        )
        if answer:
            self._context_level = max(self._context_level or level, level)

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


def _conclude(turn: _Turn, outcome: Failed) -> None:
    """The last attempt's final outcome (it may have failed already: this says more)."""
    attempt = turn.last
    assert attempt is not None
    attempt.outcome = outcome
    if attempt.ended is None:
        attempt.ended = time.monotonic()


def _chain(decision: Decision) -> list[str]:
    return [decision.target_spec, *decision.fallbacks] if decision.target != "refuse" else []


def _fit(
    messages: list[dict[str, Any]],
    limits: ContextLimits | None,
    model: str,
    earlier: int,
) -> tuple[list[dict[str, Any]], Notice | None, Failed | None]:
    """(messages to send, a notice for the user, or the failure when the newest message
    alone does not fit): the conversation fitted to ``limits``, or as it is when unknown.

    Counted exactly when ``limits`` carries the target's own counter (the local engine's
    tokenizer), else conservatively; a local window counted by estimate says why."""
    if limits is None:
        if not earlier:
            return messages, None, None
        tokens = sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
        turns = "turn" if earlier == 1 else "turns"
        return (
            messages,
            Notice(
                "context_unknown",
                f"{model}'s context window is unknown: sent the whole conversation "
                f"({earlier} earlier {turns}, about {tokens:,} tokens) as it is",
                model,
            ),
            None,
        )
    estimated = f" (counted by estimate: {limits.estimated})" if limits.estimated else ""
    try:
        fitted = fit_messages(
            messages, limits.window, limits.reserve, margin=limits.margin, exact=limits.counter
        )
    except ContextTooLong as exc:
        return [], None, failed("context_window", f"{model}: {exc.describe(model)}{estimated}")
    kept = [dict(m) for m in fitted.messages]
    if not fitted.dropped_turns:
        return kept, None, None
    dropped = fitted.dropped_turns
    turns = "turn" if dropped == 1 else "turns"
    return (
        kept,
        Notice(
            "context_trimmed",
            f"{dropped} earlier {turns} left out to fit {model}'s {limits.window:,}-token "
            f"context{estimated}",
            model,
            dropped_turns=dropped,
            window=limits.window,
        ),
        None,
    )


def _messages(context: Sequence[_ContextTurn], prompt: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in context:
        messages.append({"role": "user", "content": turn.prompt})
        messages.append({"role": "assistant", "content": turn.answer})
    messages.append({"role": "user", "content": prompt})
    return messages


def _turns_of(messages: Sequence[Message]) -> list[_ContextTurn]:
    """Exchanges whose answer has text; refused and failed-before-any-token ones were never
    part of the conversation a model saw."""
    turns: list[_ContextTurn] = []
    pending: Message | None = None
    for message in messages:
        if message.role == "user":
            pending = message
            continue
        if pending is None or not message.text or message.route not in ("local", "cloud"):
            pending = None
            continue
        level = max(_level(pending.privacy), _level(message.privacy))
        prompt = pending.content if pending.content is not None else strip_tags(pending.text or "")
        turns.append(_ContextTurn(prompt, message.text, level))
        pending = None
    return turns


def _level(value: str | None) -> PrivacyLevel:
    # Fail closed: a message whose level is unknown is treated as secret.
    if value is None:
        return PrivacyLevel.SECRET
    try:
        return PrivacyLevel.parse(value)
    except ValueError:
        return PrivacyLevel.SECRET


def _status(attempt: _Attempt | None) -> tuple[str, str | None, str | None]:
    """(ledger status, error kind, error message) of the last attempt."""
    if attempt is None or isinstance(attempt.outcome, Done) or attempt.outcome is None:
        return "ok", None, None
    if attempt.outcome.kind == "cancelled":
        return "cancelled", None, None
    return "error", attempt.outcome.kind, attempt.outcome.message


def _token_usage(usage: Usage | None) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    # Backends report OpenAI's convention; clamp so one odd provider cannot lose a row.
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    write = min(usage.cache_write_tokens, usage.input_tokens - cached)
    return TokenUsage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        output_tokens=usage.output_tokens,
        reasoning_tokens=min(usage.reasoning_tokens, usage.output_tokens),
        estimated=usage.estimated,
    )


def _estimate(turn: _Turn, attempt: _Attempt) -> Usage | None:
    """Rough counts for an attempt that streamed but never reported usage (a consumer
    that went away mid-stream): the tokens were spent, so they are counted."""
    if not attempt.has_tokens:
        return None
    sent = attempt.prompt_tokens  # what this attempt sent, after fitting the window
    return Usage(
        input_tokens=turn.classified.tokens if sent is None else sent,
        output_tokens=estimate_tokens("".join(attempt.text) + "".join(attempt.reasoning)),
        estimated=True,
    )


def _detail_of(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def money(value: float) -> str:
    """USD for a footer: 4 decimals from a cent up, 6 below, and never a misleading $0."""
    if value >= 0.01 or value == 0:
        return f"${value:.4f}"
    if value >= 0.0000005:
        return f"${value:.6f}"
    return "<$0.000001"


def _cloud_detail(cost: CloudCost, catalog_error: str | None) -> str:
    if catalog_error is not None:
        return f"{cost.model}: unpriced, the price catalog could not load ({catalog_error})"
    if cost.rates is None or cost.total_usd is None:
        return (
            f"{cost.model}: no known price, so unpriced; add it under pricing.overrides "
            "in .ds4router.yaml (USD per 1M tokens)"
        )
    rates, usage = cost.rates, cost.usage
    terms = [f"{usage.uncached_input_tokens} in x ${rates.input:g}/M"]
    if usage.cached_input_tokens:
        terms.append(f"{usage.cached_input_tokens} cached x ${rates.effective_cached_input:g}/M")
    if usage.cache_write_tokens:
        terms.append(f"{usage.cache_write_tokens} cache-write x ${rates.effective_cache_write:g}/M")
    terms.append(f"{usage.visible_output_tokens} out x ${rates.output:g}/M")
    if usage.reasoning_tokens:
        terms.append(f"{usage.reasoning_tokens} reasoning x ${rates.effective_reasoning:g}/M")
    source = rates.sheet or "prices"
    if rates.as_of:
        source += f", {rates.as_of}"
    return f"{cost.model}: {' + '.join(terms)} = {money(cost.total_usd)} ({source})"


def _local_detail(cost: LocalCost, usd_per_kwh: float, seconds: float | None) -> str:
    return (
        f"local: {cost.energy_j:.1f} J ({cost.energy_source}) x ${usd_per_kwh:g}/kWh = "
        f"{money(cost.electricity_usd)} electricity + {money(cost.amortization_usd)} hardware "
        f"over {seconds or 0.0:.2f} s"
    )


def priced_fields(priced: Priced) -> Mapping[str, Any]:
    """The ``Priced`` figures as a JSON-ready mapping (``ask --json``)."""
    return {
        "ledger_id": priced.ledger_id,
        "route": priced.route,
        "model": priced.model,
        "rule": priced.rule,
        "status": priced.status,
        "input_tokens": priced.input_tokens,
        "output_tokens": priced.output_tokens,
        "ttft_s": priced.ttft_s,
        "tok_s": priced.tok_s,
        "duration_s": priced.duration_s,
        "cost_usd": priced.cost_usd,
        "unpriced": priced.unpriced,
        "counterfactual_usd": priced.counterfactual_usd,
        "reference_model": priced.reference_model,
        "saving_usd": priced.saving_usd,
        "cost_detail": priced.cost_detail,
        "conversation_id": priced.conversation_id,
        "usage_estimated": priced.usage_estimated,
    }


__all__ = [
    "BackendFactory",
    "BackendUnavailable",
    "FallbackTaken",
    "Priced",
    "Refused",
    "Routed",
    "Session",
    "SessionEvent",
    "backend_for",
    "compose_prompt",
    "money",
    "price_catalog",
    "priced_fields",
]
