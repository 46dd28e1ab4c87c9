"""The write-ahead record of a turn: written before anything is sent, finished at the end.

:func:`begin` writes, before the first byte leaves for any backend, the turn's
ledger row (status ``started``: route, model, rule, the prompt's token count, the
rates it will be priced at, the writing process) and, when history is on, the
user's message (secrets redacted: DESIGN.md's privacy invariant) with an answer
``started`` under it. :func:`progress` keeps both current while tokens stream
(every :data:`PROGRESS_EVERY` pieces), so a process killed mid-stream leaves what
it had received; the session's recording replaces them with the final row and
answer (``pricing.write_ahead.finish``, ``History.finish``). A process that dies
leaves them ``started``; the next open of the database marks them ``interrupted``
(``pricing.recovery``).

A database that cannot take the write (damaged, full, read-only) fails the turn
here, so nothing is sent for a request that could not be recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ds4router.config.schema import Config
from ds4router.errors import Ds4RouterError
from ds4router.routing.detectors import redact_text, scan
from ds4router.sessions.history import History, Message, title_from
from ds4router.sessions.turn import Turn
from ds4router.targets import CloudModel, Refuse, route_of
from pricing import write_ahead
from pricing.catalog import PriceCatalog
from pricing.errors import PricingError
from pricing.ledger import Ledger, LedgerRow
from pricing.recovery import owner_fields

# Stream pieces between two progress writes: a few writes a second at typical speeds,
# each one short transaction.
PROGRESS_EVERY = 16


@dataclass
class Begun:
    """What :func:`begin` wrote: the ledger row and, with history on, the answer's message."""

    ledger_id: int
    answer_id: int | None = None
    pieces: int = 0  # stream pieces seen, for the progress cadence


def stored_text(text: str, config: Config) -> str:
    """``text`` as history may keep it: every detected finding replaced by its placeholder."""
    found = scan(text, allowlist=config.privacy.allowlist)
    return redact_text(text, found) if found else text


def begin(
    turn: Turn,
    ledger: Ledger,
    history: History | None,
    *,
    project: str,
    config: Config,
    catalog: PriceCatalog | None,
) -> Begun:
    """Write the turn's ``started`` ledger row (and history) before it is sent."""
    decision = turn.decision
    target = decision.target
    assert not isinstance(target, Refuse), "a refused turn sends nothing: no write-ahead row"
    route = route_of(target)
    rates = None
    if isinstance(target, CloudModel) and catalog is not None:
        rates = catalog.rates(target.model, turn.time)
    row = LedgerRow(
        time=turn.time,
        project=project,
        route=route,
        status="started",
        conversation_id=turn.conversation_id,
        model=decision.model,
        rule=decision.rule,
        privacy=str(turn.classified.privacy.level),
        task=decision.task,
        input_tokens=turn.classified.tokens,
        usage_estimated=True,
        rate_input=None if rates is None else rates.input,
        rate_cached_input=None if rates is None else rates.effective_cached_input,
        rate_output=None if rates is None else rates.output,
        **owner_fields(),  # type: ignore[arg-type]
    )
    try:
        ledger_id = write_ahead.begin(ledger, row)
    except PricingError as exc:
        raise Ds4RouterError(f"{exc}; nothing was sent", exit_code=2) from None
    if history is None:
        return Begun(ledger_id)
    level = str(turn.classified.privacy.level)
    user = Message(
        role="user",
        text=stored_text(turn.text, config),
        content=stored_text(turn.prompt, config),
        attachments=tuple(a.path for a in turn.attachments),
        privacy=level,
        task=decision.task,
    )
    answer = Message(
        role="assistant",
        text=None,
        route=route,
        model=decision.model,
        rule=decision.rule,
        input_tokens=turn.classified.tokens,
        status="started",
        privacy=level,
        task=decision.task,
        ledger_id=ledger_id,
    )
    title = title_from(user.text or "")
    try:
        _, answer_id = history.add_turn(
            turn.conversation_id, user, answer, project=project, title=title
        )
    except PricingError as exc:
        raise Ds4RouterError(f"{exc}; nothing was sent", exit_code=2) from None
    return Begun(ledger_id, answer_id)


def progress(begun: Begun, turn: Turn, ledger: Ledger, history: History | None) -> None:
    """Every :data:`PROGRESS_EVERY` pieces: the output so far into the started row and answer."""
    begun.pieces += 1
    attempt = turn.last
    if attempt is None or begun.pieces % PROGRESS_EVERY:
        return
    from ds4router.routing.request import estimate_tokens

    text = "".join(attempt.text)
    reasoning = "".join(attempt.reasoning)
    try:
        write_ahead.progress(ledger, begun.ledger_id, estimate_tokens(text + reasoning))
        if history is not None and begun.answer_id is not None:
            history.progress(begun.answer_id, text, reasoning)
    except PricingError:
        # The answer goes on; its final row is written at the end (and says so if it fails).
        pass


__all__ = ["PROGRESS_EVERY", "Begun", "begin", "progress", "stored_text"]
