"""The request a session is answering: its ``Turn`` and each backend ``Attempt`` at it.

A session fills these in as a request runs (which targets were tried, when the first
token came, the usage and energy each reported, how each ended); they are read once
the request is over, to price it (:mod:`ds4router.sessions.turn_costs`) and to keep it in the
conversation. Mutable on purpose: they are a running record, not a domain value.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ds4router.events import (
    Done,
    Failed,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    ToolCallStart,
)
from ds4router.routing.request import Attachment
from ds4router.routing.router import Classified, Decision
from ds4router.targets import Sendable

if TYPE_CHECKING:
    from ds4router.sessions.journal import Begun


@dataclass
class Attempt:
    """One backend's try at the turn (one target of the fallback chain)."""

    target: Sendable
    model: str
    started: float
    first_token: float | None = None
    ended: float | None = None
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    usage: TokenUsage | None = None
    # (id, name, arguments so far) of each tool call the model made, in order.
    tool_calls: list[list[str]] = field(default_factory=list)
    outcome: Done | Failed | None = None
    energy: Any = None  # pricing.energy.EnergyReading of a local attempt
    prompt_tokens: int | None = None  # estimate of what was sent, after fitting the window
    redactions: int = 0  # findings replaced by placeholders in what a cloud model was sent

    @property
    def has_tokens(self) -> bool:
        return self.first_token is not None

    def token(self, event: TextDelta | ReasoningDelta) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()
        (self.text if isinstance(event, TextDelta) else self.reasoning).append(event.text)

    def tool(self, event: ToolCallStart | ToolCallDelta) -> None:
        """A tool call counts as the answer starting: nothing is retried after it."""
        if self.first_token is None:
            self.first_token = time.monotonic()
        match event:
            case ToolCallStart(id=call_id, name=name):
                self.tool_calls.append([call_id, name, ""])
            case ToolCallDelta(index=index, arguments=piece) if index < len(self.tool_calls):
                self.tool_calls[index][2] += piece
            case _:
                pass

    def end(self, outcome: Done | Failed) -> None:
        self.outcome = outcome
        self.ended = time.monotonic()


@dataclass
class Turn:
    """One request from the user's message to its ledger row."""

    text: str
    prompt: str
    attachments: tuple[Attachment, ...]
    conversation_id: str
    classified: Classified
    decision: Decision
    time: dt.datetime
    attempts: list[Attempt] = field(default_factory=list)
    fell_back: bool = False
    recorded: bool = False
    client: str | None = None  # who sent it through the gateway (a key name, an agent)
    # Its write-ahead ledger row and answer, once written (ds4router.sessions.journal).
    journal: Begun | None = None

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def conclude(self, outcome: Failed) -> None:
        """The last attempt's final outcome (it may have failed already: this says more)."""
        attempt = self.last
        assert attempt is not None
        attempt.outcome = outcome
        if attempt.ended is None:
            attempt.ended = time.monotonic()


def outcome_status(attempt: Attempt | None) -> tuple[str, str | None, str | None]:
    """(ledger status, error kind, error message) of the last attempt."""
    if attempt is None or isinstance(attempt.outcome, Done) or attempt.outcome is None:
        return "ok", None, None
    if attempt.outcome.kind == "cancelled":
        return "cancelled", None, None
    return "error", attempt.outcome.kind, attempt.outcome.message


__all__ = ["Attempt", "Turn", "outcome_status"]
