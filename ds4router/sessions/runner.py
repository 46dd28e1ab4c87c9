"""Step two of the pipeline: send a plan, along its fallbacks, and stream what comes back.

``Runner.run(plan, turn)`` tries the decision's target, then each fallback while
failures come before any token: a target whose backend cannot even be created is
skipped, not attempted, and a failure is shown only once nothing is left to fall
back to (so the user sees the first backend's error, with why the fallback could
not help); after a token nothing is retried, the partial answer is kept. A
request above ``privacy.cloud_max_privacy`` never reaches a cloud backend: the
router and :func:`ds4router.sessions.plan.enforce_privacy` already guarantee it,
and the runner checks every target again before trying it.

Each target gets the conversation fitted to its own context window
(:func:`ds4router.sessions.conversation.fit_conversation`): the oldest whole turns
are left out and a ``Notice`` says how many; when the newest message alone does not
fit, the attempt fails with ``context_window`` before anything is sent. A target
whose window is unknown gets the conversation as it is, and a ``Notice`` says so
once per conversation. A local attempt is metered (``pricing.energy.EnergyMeter``,
entered on an ``ExitStack`` so it ends however the stream does).

Everything the runner learns goes on the ``Turn`` (its attempts, tokens, usage,
outcome, energy), which the recorder prices and writes
(:mod:`ds4router.sessions.recorder`). ``cancel()`` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import Any, assert_never

from ds4router.backends.base import Backend, BackendRequest
from ds4router.config.loader import LoadedConfig
from ds4router.events import (
    Done,
    Failed,
    FallbackTaken,
    Notice,
    ReasoningDelta,
    SessionEvent,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    ToolCallStart,
    failed,
)
from ds4router.routing.router import local_model_id
from ds4router.servers import server_watts
from ds4router.sessions.backend_pool import BackendPool, BackendUnavailable
from ds4router.sessions.context_window import (
    ContextLimits,
    cloud_limits,
    local_limits,
)
from ds4router.sessions.conversation import decision_redacts, fit_conversation, redact_messages
from ds4router.sessions.plan import Plan, Reasoning, target_allowed
from ds4router.sessions.turn import Attempt, Turn
from ds4router.targets import (
    CloudModel,
    LocalEngine,
    LocalServer,
    Sendable,
    model_of,
)
from ds4router.token_count import count
from pricing.catalog import PriceCatalog


class Runner:
    """Runs one session's requests, one at a time.

    ``catalog()`` gives the price catalog (its model names find cloud windows), or
    None; ``meters`` are handed to ``EnergyMeter`` for local attempts (None: what
    this machine offers).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        pool: BackendPool,
        catalog: Callable[[], PriceCatalog | None],
        meters: Sequence[Any] | None = None,
    ) -> None:
        self.config = loaded.config
        self.pool = pool
        self._catalog = catalog
        self._meters = meters
        # (conversation, model) pairs already told that the model's window is unknown:
        # said once per conversation, not under every answer.
        self._told_unknown: set[tuple[str, str]] = set()
        self._current: Backend | None = None
        self._cancel_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def arm(self) -> None:
        """A new request begins on the running loop: earlier cancels no longer apply."""
        self._loop = asyncio.get_running_loop()
        self._cancel_requested = False

    def cancel(self) -> None:
        """Stop the running request (it ends ``cancelled``); safe from any thread."""
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
            # On the request's loop, so it cannot slip between starting a stream
            # and that stream registering itself for cancellation.
            loop.call_soon_threadsafe(self._cancel_current)

    async def run(self, plan: Plan, turn: Turn) -> AsyncGenerator[SessionEvent, None]:
        """The plan's targets in order, as described in the module docstring."""
        targets = [
            t
            for t in plan.decision.chain
            if target_allowed(t, plan.classified, plan.decision, self.config)
        ]
        # Each target's window, read off the loop (the model map is parsed on first use).
        limits = await asyncio.to_thread(self._limits_of, targets)
        pending: tuple[Failed, Sendable] | None = None  # a failure before any token, not shown
        local_model = local_model_id(self.config)
        for position, target in enumerate(targets):
            model = model_of(target, local_model) or ""
            if self._cancel_requested:
                yield self._stop(turn, Attempt(target, model, time.monotonic()))
                return
            try:
                backend = self.pool.get(target)
            except BackendUnavailable as exc:
                if not turn.attempts:  # the row needs a route even when nothing ran
                    turn.attempts.append(Attempt(target, model, time.monotonic()))
                pending = _pile(pending, failed("unavailable", str(exc)), target, exc)
                continue
            if pending is not None:
                turn.fell_back = True
                yield FallbackTaken(pending[1], target, pending[0].message)
                pending = None
            attempt = Attempt(target, model, time.monotonic())
            turn.attempts.append(attempt)
            last = position == len(targets) - 1
            # Off the loop: counting a long conversation (the local tokenizer, or the
            # conservative count's regex) takes milliseconds per thousand tokens.
            sent, notice, too_long = await asyncio.to_thread(
                fit_conversation,
                [dict(m) for m in plan.messages],
                limits.get(target),
                model,
                plan.earlier,
            )
            if self._cancel_requested:  # asked while counting: nothing was sent
                yield self._stop(turn, attempt)
                return
            if too_long is not None:  # nothing sent; a target with a larger window may serve
                attempt.end(too_long)
                if not last:
                    pending = (too_long, target)
                    continue
                yield too_long
                return
            notice = self._once(notice, turn.conversation_id, model)
            if notice is not None:
                yield notice
            tools: Any = [dict(t) for t in plan.tools]
            if decision_redacts(plan.decision, target):
                # A cloud model under privacy.on_detected: redact sees placeholders only.
                salt = turn.conversation_id
                sent, found = redact_messages(sent, self.config.privacy, salt)
                tools, in_tools = redact_messages(tools, self.config.privacy, salt)
                attempt.redactions = found + in_tools
            counted = await asyncio.to_thread(
                count, target, sent, local_model_path=self.config.local.engine.model_path
            )
            attempt.prompt_tokens = counted.tokens
            request = _backend_request(plan, sent, target, model, turn.conversation_id, tools)
            events = self._stream(backend, request, attempt)
            try:
                async for event in events:
                    if isinstance(event, Failed) and self._falls_back(event, attempt, last):
                        pending = (event, target)
                        break
                    yield event
            finally:
                await events.aclose()  # ends the backend's stream and the energy meter
            if pending is None:
                return
        if pending is not None:
            turn.conclude(pending[0])
            yield pending[0]

    # --- one attempt ----------------------------------------------------------------------

    async def _stream(
        self, backend: Backend, request: BackendRequest, attempt: Attempt
    ) -> AsyncGenerator[SessionEvent, None]:
        """One backend's events, tracked on ``attempt`` (energy metered for local)."""
        with ExitStack() as stack:
            if isinstance(attempt.target, LocalEngine | LocalServer):
                from pricing.energy import EnergyMeter

                # A server is priced like the engine: its own `power` (configured watts)
                # when it says, else this machine's; the same hardware amortisation.
                power = self.config.local.power
                watts = server_watts(self.config, attempt.target)
                meter = (
                    EnergyMeter(power.watts, power.source, meters=self._meters)
                    if watts is None
                    else EnergyMeter(watts, "configured", meters=self._meters)
                )
                # Registered first, so it runs after the meter has stopped.
                stack.callback(lambda: setattr(attempt, "energy", meter.reading))
                stack.enter_context(meter)
            self._current = backend
            stack.callback(self._forget_current)
            # No await between here and the stream's first step: a cancel() queued on
            # this loop either came before (seen below) or finds the stream registered.
            stream = backend.stream(request)
            try:
                async for event in stream:
                    _track(attempt, event)
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
                closer = getattr(stream, "aclose", None)
                if closer is not None:
                    await closer()

    def _falls_back(self, event: Failed, attempt: Attempt, last: bool) -> bool:
        """Whether a failure hands the request to the next target: before any token, not
        cancelled, and something is left to try."""
        return (
            not last
            and not event.after_tokens
            and not attempt.has_tokens
            and event.kind != "cancelled"
            and not self._cancel_requested
        )

    def _stop(self, turn: Turn, attempt: Attempt) -> Failed:
        """Cancelled before anything was sent: the turn's outcome."""
        if not turn.attempts:
            turn.attempts.append(attempt)
        stop = failed("cancelled", "cancelled before anything was sent")
        turn.conclude(stop)
        return stop

    def _once(self, notice: Notice | None, conversation_id: str, model: str) -> Notice | None:
        if notice is None or notice.kind != "context_unknown":
            return notice
        told = (conversation_id, model)
        seen = told in self._told_unknown
        self._told_unknown.add(told)
        return None if seen else notice

    def _limits_of(self, targets: Sequence[Sendable]) -> dict[Sendable, ContextLimits | None]:
        """The context window of each target (None: unknown)."""
        found: dict[Sendable, ContextLimits | None] = {}
        for target in targets:
            match target:
                case LocalEngine():
                    engine = self.config.local.engine
                    found[target] = local_limits(
                        local_model_id(self.config), engine.model_path, engine.max_tokens
                    )
                case LocalServer():
                    found[target] = None  # its window is the server's; not known here yet
                case CloudModel(model=model):
                    found[target] = cloud_limits(model, self._catalog(), self.config.cloud.models)
                case _:
                    assert_never(target)
        return found

    def _cancel_current(self) -> None:
        backend = self._current
        if backend is not None:
            backend.cancel()

    def _forget_current(self) -> None:
        self._current = None


def _track(attempt: Attempt, event: SessionEvent) -> None:
    match event:
        case TextDelta() | ReasoningDelta():
            attempt.token(event)
        case ToolCallStart() | ToolCallDelta():
            attempt.tool(event)
        case TokenUsage():
            attempt.usage = event
        case Done() | Failed():
            attempt.end(event)
        case _:
            pass


def _pile(
    pending: tuple[Failed, Sendable] | None, problem: Failed, target: Sendable, exc: Exception
) -> tuple[Failed, Sendable]:
    """The first failure stays the one shown; later ones are added to its message."""
    if pending is None:
        return problem, target
    first, where = pending
    return replace(first, message=f"{first.message}; {target}: {exc}"), where


def _backend_request(
    plan: Plan,
    sent: list[dict[str, Any]],
    target: Sendable,
    model: str,
    conversation_id: str,
    tools: list[dict[str, Any]],
) -> BackendRequest:
    exchange = plan.exchange
    extra: dict[str, Any] = {}
    if tools and exchange.tool_choice is not None:
        extra["tool_choice"] = exchange.tool_choice
    if exchange.reasoning is not None:
        extra.update(reasoning_options(exchange.reasoning, target))
    return BackendRequest(
        messages=sent,
        model=model,
        max_tokens=exchange.max_tokens,
        temperature=exchange.temperature,
        top_p=exchange.top_p,
        stop=exchange.stop,
        extra=extra,
        request_id=uuid.uuid4().hex,
        # A conversation holding a finding keeps the local engine's KV state in RAM only.
        keep_off_disk=bool(plan.classified.privacy.findings),
        tools=tuple(tools),
        # The local engine keeps this conversation's decode state for its next turn.
        session_id=conversation_id or None,
    )


def reasoning_options(reasoning: Reasoning, target: Sendable) -> dict[str, Any]:
    """The request options that ask ``target`` for ``reasoning``.

    The DeepSeek V4 engine has two modes (chat, thinking) and one effort preamble
    (``max``): off -> chat; low and medium -> thinking; high -> thinking at ``max``. Cloud
    models and local servers take OpenAI's ``reasoning_effort`` (LiteLLM maps it to each
    provider's own knob, Anthropic's thinking budget included, and drops it for models
    without one)."""
    match target:
        case LocalEngine():
            if reasoning is Reasoning.OFF:
                return {"thinking": False}
            if reasoning is Reasoning.HIGH:
                return {"thinking": True, "reasoning_effort": "max"}
            return {"thinking": True}
        case CloudModel() | LocalServer():
            # Off sends nothing: not every provider knows an effort of "none".
            return {} if reasoning is Reasoning.OFF else {"reasoning_effort": reasoning.value}
        case _:
            assert_never(target)


__all__ = ["Runner"]
