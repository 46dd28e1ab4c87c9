"""Sessions: the one request pipeline every front end drives (``ask``, the TUI, the gateway).

A request goes through three steps, each in its own module:

1. **plan** (:mod:`ds4router.sessions.plan`, pure): classify the exchange, decide
   the route, enforce the privacy invariant -> ``Plan``;
2. **run** (:mod:`ds4router.sessions.runner`): the attempts along the fallback
   chain, each target's context window fitted, local energy metered;
3. **record** (:mod:`ds4router.sessions.recorder`): ``begin`` before anything is
   sent, ``finish`` after: one ledger row, the conversation kept.

``Session`` holds one project's pieces (backends, runner, recorder) and composes
the steps; front ends never re-implement one. Its entry points:

* ``send(text, files, conversation_id, model)``: a message typed in the TUI or
  given to ``ask``; earlier turns come from history (or memory with ``history: off``);
* ``answer(exchange)``: a whole conversation given at once (a gateway's request:
  OpenAI-shaped ``messages`` with roles, ``system``, ``tools``; see
  :class:`ds4router.sessions.plan.Exchange`);
* ``plan(exchange, live)``: the first step alone, with the routing state read
  fresh; ``preview(text)`` uses it without dialing anything, on every keystroke.

Both ``send`` and ``answer`` yield the :data:`ds4router.events.SessionEvent`
stream: ``Routed`` (or ``Refused``: nothing was sent), maybe ``Notice`` and
``FallbackTaken``, the backend's ``ReasoningDelta``/``TextDelta``/``TokenUsage``,
``Done`` or ``Failed``, and last ``Priced``, once the ledger row is written. A
consumer that goes away mid-stream (task cancelled, Ctrl-C, stream closed) still
gets its row, as ``cancelled``, with what was used so far.

Routing state is read fresh for each request: the month's cloud spend from the
ledger (``pricing.budget``), the local backend's health, and the health of the
cloud model the rules picked (recent failures plus a TCP check that sends
nothing). When that cloud model is offline the request is planned again with
the cloud marked unavailable, so ``fallback.cloud_unavailable`` applies at once
instead of after a timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ds4router import paths
from ds4router.config.loader import LoadedConfig
from ds4router.errors import Ds4RouterError
from ds4router.events import ReasoningDelta, Refused, Routed, SessionEvent, TextDelta
from ds4router.routing.classify import load_attachments
from ds4router.routing.router import Classified, Decision, RouterState
from ds4router.sessions import plan as planning
from ds4router.sessions.backend_pool import (
    BackendFactory,
    BackendPool,
    BackendUnavailable,
    backend_for,
)
from ds4router.sessions.plan import Exchange, Plan, compose_prompt
from ds4router.sessions.recorder import Recorder
from ds4router.sessions.runner import Runner
from ds4router.targets import CloudModel, Target, leaves_machine


class Session:
    """Sends requests for one project; keeps the current conversation.

    ``backend_factory(target, loaded)`` creates backends (default:
    :func:`ds4router.sessions.backend_pool.backend_for`); they are created once per
    target and kept. ``db_path`` is the ledger + history database (default:
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
        backends: BackendPool | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.project = loaded.project_name
        self.db_path = Path(db_path) if db_path is not None else paths.database_path()
        self.conversation_id: str | None = None
        # A gateway shares one pool and one recorder between its requests' sessions: the
        # backends are per target (the local engine once per process), the database opened
        # once; its recorder keeps agents' turns out of the history.
        self.backends = backends if backends is not None else BackendPool(loaded, backend_factory)
        self.recorder = recorder if recorder is not None else Recorder(loaded, self.db_path)
        self.runner = Runner(
            loaded, self.backends, lambda: self.recorder.catalog()[0], meters=meters
        )

    @property
    def history_enabled(self) -> bool:
        return self.recorder.history_enabled

    # --- the front ends' entry points -------------------------------------------------------

    def preview(self, text: str, files: Sequence[str | Path] = ()) -> tuple[Classified, Decision]:
        """Where ``text`` would go now, without sending or dialing anything.

        Uses the budget and health as last seen, so it is fast enough to run on
        every keystroke. The current conversation's privacy counts, as in send.
        """
        attachments = load_attachments(text, files, self.loaded.project_dir)
        exchange = Exchange(
            text, attachments, self.conversation_id or "", context=self.recorder.current
        )
        planned = self.plan(exchange, live=False)
        return planned.classified, planned.decision

    async def send(
        self,
        text: str,
        files: Sequence[str | Path] = (),
        conversation_id: str | None = None,
        model: Target | None = None,
    ) -> AsyncGenerator[SessionEvent, None]:
        """Answer ``text`` (with ``files`` attached) in a conversation (None: a new one);
        ``model``: the target the user chose (None: the rules decide)."""
        if not text.strip() and not files:
            raise Ds4RouterError("nothing to send: the message is empty")
        self.runner.arm()
        attachments = load_attachments(text, files, self.loaded.project_dir)
        cid = conversation_id or uuid.uuid4().hex
        context = await asyncio.to_thread(self.recorder.context, cid)
        self.conversation_id = cid
        exchange = Exchange(text, attachments, cid, context=context, model=model)
        events = self._answer(exchange)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # a consumer that stops early: the request is still recorded

    async def answer(self, exchange: Exchange) -> AsyncGenerator[SessionEvent, None]:
        """Answer a whole conversation given at once (``exchange.messages``, ``system``,
        ``tools``); it is recorded under ``exchange.conversation_id`` (empty: a new id)."""
        self.runner.arm()
        if not exchange.conversation_id:
            exchange = replace(exchange, conversation_id=uuid.uuid4().hex)
        events = self._answer(exchange)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # a consumer that stops early: the request is still recorded

    def plan(self, exchange: Exchange, live: bool) -> Plan:
        """Step one with the routing state read now (``live``: dialled and from the ledger;
        else as last seen). Blocking when live: call it off the event loop."""
        if live:
            self.recorder.catalog()  # loaded now, off the event loop, so pricing later is instant
        state = self._state(live)
        planned = planning.plan(exchange, self.config, state)
        target = planned.decision.target
        if isinstance(target, CloudModel):
            health = self.backends.cloud_health(target, live)
            if not health.usable:
                detail = health.detail or health.status
                state = replace(state, cloud_available=False, cloud_detail=detail)
                planned = planning.plan(exchange, self.config, state)
        if live and any(leaves_machine(t) for t in planned.decision.chain):
            from ds4router.backends.cloud import load_litellm

            load_litellm()  # seconds on first use: here, in a worker thread, not on the loop
        return planned

    def cancel(self) -> None:
        """Stop the running request (it records ``cancelled``); safe from any thread."""
        self.runner.cancel()

    def close(self) -> None:
        self.recorder.close()

    # --- the three steps, composed ---------------------------------------------------------

    async def _answer(self, exchange: Exchange) -> AsyncGenerator[SessionEvent, None]:
        planned = await asyncio.to_thread(self.plan, exchange, True)
        # Off the loop: with a write-ahead row written before anything is sent.
        turn = await asyncio.to_thread(self.recorder.begin, planned)
        first: SessionEvent = (
            Refused(planned.decision)
            if planned.refused
            else Routed(planned.decision, planned.classified)
        )
        attempts = self.runner.run(planned, turn)
        try:
            yield first
            if not planned.refused:
                async for event in attempts:
                    if isinstance(event, TextDelta | ReasoningDelta) and turn.journal:
                        self.recorder.progress(turn)
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            # The consumer went away: the request still gets its row, as cancelled.
            await attempts.aclose()
            if not turn.recorded:
                self.recorder.finish(turn, abandoned=True)
            raise
        # Synchronous (the catalog is loaded by then, the writes take milliseconds), so
        # a cancellation cannot fall between writing the row and marking it written.
        yield self.recorder.finish(turn)

    def _state(self, live: bool) -> RouterState:
        from pricing.budget import budget_for_month

        budget = self.config.budget
        spent = self.recorder.month_spent(live) if budget.monthly_usd is not None else None
        over = False
        if budget.monthly_usd is not None and spent is not None:
            now = dt.datetime.now(dt.UTC)
            state = budget_for_month(
                budget.monthly_usd, spent, budget.warn_at, now.strftime("%Y-%m"), now
            )
            over = state.over_budget
        local_ok, local_detail = self.backends.local_health()
        return RouterState(
            over_budget=over,
            budget_spent_usd=spent,
            budget_cap_usd=budget.monthly_usd,
            local_available=local_ok,
            cloud_available=True,
            local_detail=local_detail,
        )


__all__ = [
    "BackendFactory",
    "BackendUnavailable",
    "Exchange",
    "Plan",
    "Session",
    "backend_for",
    "compose_prompt",
]
