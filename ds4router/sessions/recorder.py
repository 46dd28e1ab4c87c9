"""Step three of the pipeline: the ledger row and the conversation of every request.

``begin(plan)`` opens the request's record, the ``Turn`` the runner fills in;
``finish(turn)`` prices it by its last attempt
(:func:`ds4router.sessions.turn_costs.record_turn`), writes exactly one ledger row
(``ok``, ``error`` with the usage so far, ``cancelled``, or ``refused``), keeps the
exchange in the conversation and returns the ``Priced`` event. ``begin`` runs before
the runner sends anything and writes the write-ahead record
(:mod:`ds4router.sessions.journal`: a ``started`` ledger row and, with history on,
the redacted message with a ``started`` answer), ``progress`` keeps it current as
tokens stream, and ``finish`` completes it in place.

The conversation is kept in the history database, or in memory only with
``history: off``; ``context(conversation_id)`` reads back the earlier exchanges a
model answered, with their privacy levels, and ``current`` is the conversation last
read or extended (what the TUI's preview classifies with). Nothing detected is
written to disk: history keeps the redacted text, titles included. Also kept here:
the month's cloud spend (for the budget) and the price catalog.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from ds4router.config.loader import LoadedConfig
from ds4router.errors import Ds4RouterError
from ds4router.events import Priced, failed
from ds4router.routing.privacy import (
    findings_in,
    findings_level,
    redact_at_rest,
    redaction_applies,
)
from ds4router.sessions import journal
from ds4router.sessions.conversation import ContextTurn, context_turns
from ds4router.sessions.history import History, Message, title_from
from ds4router.sessions.plan import Plan
from ds4router.sessions.turn import Attempt, Turn, outcome_status
from ds4router.sessions.turn_costs import price_catalog, record_turn
from pricing.catalog import PriceCatalog
from pricing.errors import PricingError
from pricing.ledger import Ledger


class Recorder:
    """The ledger and history of one project's requests; safe from any thread."""

    def __init__(self, loaded: LoadedConfig, db_path: Path, *, keep_history: bool = True) -> None:
        self.loaded = loaded
        self.keep_history = keep_history
        self.config = loaded.config
        self.project = loaded.project_name
        self.db_path = db_path
        self._lock = threading.RLock()
        self._ledger: Ledger | None = None
        self._history: History | None = None
        self._spent: float | None = None
        # history: off keeps the current conversation here, and nowhere else.
        self._memory_id: str | None = None
        self._memory: list[ContextTurn] = []
        self.current: tuple[ContextTurn, ...] = ()

    @property
    def history_enabled(self) -> bool:
        return self.keep_history and self.config.history == "on"

    # --- the conversation -------------------------------------------------------------------

    def context(self, conversation_id: str) -> tuple[ContextTurn, ...]:
        """Earlier exchanges of the conversation that reached a model, oldest first."""
        if not self.history_enabled:
            turns = tuple(self._memory) if conversation_id == self._memory_id else ()
        else:
            with self._lock:
                messages = self._history_db().messages(conversation_id)
            turns = tuple(context_turns(messages))
        self.current = turns
        return turns

    # --- one request ------------------------------------------------------------------------

    def begin(self, plan: Plan) -> Turn:
        """The request's record, before anything is sent."""
        exchange = plan.exchange
        turn = Turn(
            text=exchange.text,
            prompt=plan.prompt,
            attachments=exchange.attachments,
            conversation_id=exchange.conversation_id,
            classified=plan.classified,
            decision=plan.decision,
            time=dt.datetime.now(dt.UTC),
            client=exchange.client,
        )
        if not plan.refused:
            # Written before the first byte leaves: a row that cannot be written stops here.
            catalog, _ = self.catalog()
            with self._lock:
                history = self._history_db() if self.history_enabled else None
                turn.journal = journal.begin(
                    turn,
                    self._ledger_db(),
                    history,
                    project=self.project,
                    config=self.config,
                    catalog=catalog,
                )
        return turn

    def progress(self, turn: Turn) -> None:
        """The answer so far into the write-ahead row (every few stream pieces)."""
        assert turn.journal is not None
        with self._lock:
            history = self._history if self.history_enabled else None
            journal.progress(turn.journal, turn, self._ledger_db(), history, self.config)

    def finish(self, turn: Turn, abandoned: bool = False) -> Priced:
        """Price the turn, write its ledger row and history; the ``Priced`` event.

        ``abandoned``: the consumer went away mid-request; the row says ``cancelled``.
        """
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
        catalog, catalog_error = self.catalog()
        with self._lock:
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

    def _remember(self, turn: Turn, attempt: Attempt | None, priced: Priced) -> None:
        """Keep the exchange in the conversation (history, or memory when history is off)."""
        privacy = self.config.privacy
        level = turn.classified.privacy.level
        redacting = redaction_applies(turn.classified.privacy, privacy)
        if redacting:
            # privacy.on_detected: redact, and only findings made the turn private: what is
            # kept (redacted in history; scanned again and redacted for the cloud from
            # memory) is at the floor, so the turns after it are not held back by it.
            level = turn.classified.privacy.floor
        answer = "".join(attempt.text) if attempt is not None else None
        if not self.history_enabled:
            if self._memory_id != turn.conversation_id:
                self._memory_id, self._memory = turn.conversation_id, []
            if answer:
                self._memory.append(ContextTurn(turn.prompt, answer, level))
            self.current = tuple(self._memory)
            return
        _, error_kind, error = outcome_status(attempt)
        # Nothing detected is written to disk: history keeps the redacted text of the
        # prompt and of the answer (scanned too), and the answer's findings raise the
        # level stored with it, so the conversation after it stays as private.
        found = () if redacting else findings_in(answer, privacy)
        reply_level = max(level, findings_level(found, privacy) or level)
        reasoning = "".join(attempt.reasoning) if attempt is not None else None
        user = Message(
            role="user",
            text=redact_at_rest(turn.text, privacy),
            content=redact_at_rest(turn.prompt, privacy),
            attachments=tuple(a.path for a in turn.attachments),
            privacy=str(level),
            task=turn.decision.task,
        )
        reply = Message(
            role="assistant",
            text=redact_at_rest(answer, privacy),
            reasoning=redact_at_rest(reasoning, privacy),
            route=priced.route,
            model=priced.model,
            rule=priced.rule,
            input_tokens=priced.input_tokens,
            output_tokens=priced.output_tokens,
            cost_usd=priced.cost_usd,
            status=priced.status,
            privacy=str(reply_level),
            task=turn.decision.task,
            error_kind=error_kind,
            error=redact_at_rest(error, privacy),
            ledger_id=priced.ledger_id,
        )
        # A title is shown in lists and sidebars: made from the redacted text.
        title = title_from(user.text or "")
        if turn.journal is not None and turn.journal.answer_id is not None:
            self._history_db().finish(turn.journal.answer_id, reply)
        else:
            self._history_db().add_turn(
                turn.conversation_id, user, reply, project=self.project, title=title
            )
        if answer:
            self.current = (*self.current, ContextTurn(turn.prompt, answer, reply_level))

    # --- the month's spend and the prices -----------------------------------------------------

    def month_spent(self, live: bool) -> float:
        """Cloud spend this month: read from the ledger when ``live``, else as last seen."""
        if not live and self._spent is not None:
            return self._spent
        if not live and not self.db_path.exists():
            return 0.0
        month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
        with self._lock:
            spent = self._ledger_db().spent(month, self.project)
        self._spent = spent
        return spent

    def catalog(self) -> tuple[PriceCatalog | None, str | None]:
        """The price catalog, or None and why it could not load."""
        try:
            return price_catalog(self.loaded), None
        except PricingError as exc:  # the answer still gets its row, unpriced, and says why
            return None, str(exc)

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            if self._history is not None:
                self._history.close()
                self._history = None

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


__all__ = ["Recorder"]
