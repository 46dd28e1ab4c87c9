"""A conversation as a session sends it: earlier turns, the chat messages, fitted to a window.

``context_turns`` reads the earlier exchanges back from history (only those a model
answered, each with the privacy level it carries); ``chat_messages`` lays them out with
the new prompt; ``fit_conversation`` applies :func:`ds4router.sessions.context_window.fit_messages`
for one target and says what happened as a backend event: a ``Notice`` when turns were
left out or the window is unknown, or a ``context_window`` failure when the newest
message alone does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds4router.events import Failed, Notice, failed
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.privacy import redact_for_cloud
from ds4router.routing.request import strip_tags
from ds4router.routing.scan.pieces import Piece, PieceKind
from ds4router.sessions.context_window import (
    ContextLimits,
    ContextTooLong,
    fit_messages,
)
from ds4router.targets import Sendable, leaves_machine

if TYPE_CHECKING:
    from ds4router.config.schema import PrivacyConfig
    from ds4router.routing.router import Decision
    from ds4router.sessions.history import Message


@dataclass(frozen=True)
class ContextTurn:
    """An earlier exchange sent along as context, and the privacy level it carries."""

    prompt: str
    answer: str
    privacy: PrivacyLevel


def fit_conversation(
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
        from ds4router.token_count import estimate

        tokens = estimate(messages).tokens
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


def chat_messages(context: Sequence[ContextTurn], prompt: str) -> list[dict[str, Any]]:
    """The earlier exchanges as user/assistant messages, then ``prompt``."""
    messages: list[dict[str, Any]] = []
    for turn in context:
        messages.append({"role": "user", "content": turn.prompt})
        messages.append({"role": "assistant", "content": turn.answer})
    messages.append({"role": "user", "content": prompt})
    return messages


def decision_redacts(decision: Decision, target: Sendable) -> bool:
    """Whether this attempt's messages must be redacted: a cloud target of a decision that
    ``privacy.on_detected: redact`` applies to."""
    return decision.redact and leaves_machine(target)


def redact_messages(messages: Any, config: PrivacyConfig, salt: str) -> tuple[Any, int]:
    """``messages`` (or tool definitions: any JSON-shaped value) with each finding in every
    string replaced by a stable placeholder (same secret, same placeholder within the
    conversation ``salt``); and how many were replaced."""
    match messages:
        case str():
            return redact_for_cloud(messages, config, salt)
        case dict():
            out: dict[Any, Any] = {}
            total = 0
            for key, value in messages.items():
                out[key], n = redact_messages(value, config, salt)
                total += n
            return out, total
        case list() | tuple():
            items = []
            total = 0
            for value in messages:
                redacted, n = redact_messages(value, config, salt)
                items.append(redacted)
                total += n
            return type(messages)(items), total
        case _:
            return messages, 0


def context_pieces(context: Sequence[ContextTurn]) -> list[Piece]:
    """The earlier exchanges as pieces to scan: a follow-up carries them to the model too."""
    pieces: list[Piece] = []
    for i, turn in enumerate(context, start=1):
        pieces.append(Piece(PieceKind.USER, f"earlier turn {i} (prompt)", turn.prompt))
        pieces.append(Piece(PieceKind.ASSISTANT, f"earlier turn {i} (answer)", turn.answer))
    return pieces


def context_turns(messages: Sequence[Message]) -> list[ContextTurn]:
    """Exchanges whose answer has text; refused and failed-before-any-token ones were never
    part of the conversation a model saw."""
    turns: list[ContextTurn] = []
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
        turns.append(ContextTurn(prompt, message.text, level))
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


__all__ = [
    "ContextTurn",
    "chat_messages",
    "context_pieces",
    "decision_redacts",
    "redact_messages",
    "context_turns",
    "fit_conversation",
]
