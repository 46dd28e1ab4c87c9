"""The write-ahead record of a turn: written before anything is sent, finished at the end.

:func:`begin` writes, before the first byte leaves for any backend, the turn's
ledger row (status ``started``: route, model, rule, the prompt's token count, the
rates it will be priced at, the writing process) and, when history is on, the
user's message (redacted at rest, as the recorder keeps it) with an answer
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
from ds4router.routing.privacy import redact_at_rest, redaction_applies
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
    privacy = turn.classified.privacy
    # As the recorder keeps it: a turn private only by its findings is kept at its floor.
    redacting = redaction_applies(privacy, config.privacy)
    level = str(privacy.floor if redacting else privacy.level)
    user = Message(
        role="user",
        text=redact_at_rest(turn.text, config.privacy),
        content=redact_at_rest(turn.prompt, config.privacy),
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


def progress(
    begun: Begun, turn: Turn, ledger: Ledger, history: History | None, config: Config
) -> None:
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
            # Nothing detected at rest, the partial answer included.
            kept = redact_at_rest(text, config.privacy) or ""
            history.progress(begun.answer_id, kept, redact_at_rest(reasoning, config.privacy))
    except PricingError:
        # The answer goes on; its final row is written at the end (and says so if it fails).
        pass


__all__ = ["PROGRESS_EVERY", "Begun", "begin", "progress"]
