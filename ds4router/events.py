"""The events of one request, defined once: what backends yield and what a session adds.

Every backend (local engine, cloud, a test double) yields a :data:`BackendEvent`
stream: zero or more ``TextDelta``/``ReasoningDelta``, then a ``TokenUsage`` (when
anything was produced or the provider reported it), then exactly one of ``Done``
or ``Failed``. ``Failed.after_tokens`` says whether text already reached the user:
only a failure before any token may fall back to another backend.

A session (:mod:`ds4router.sessions`) wraps that stream in a :data:`SessionEvent`
stream, the one every front end consumes (``ask``, the TUI, the gateway):
``Routed`` (or ``Refused``: nothing was sent), maybe ``Notice`` lines (how the
request was sent: earlier turns left out to fit a context window) and
``FallbackTaken``, the backend's events, and last ``Priced`` once the ledger row is
written. Consumers dispatch with ``match`` on these types; the unions are closed.

Usage is :class:`pricing.usage.TokenUsage` itself (one convention: input includes
cached reads and writes, output includes reasoning), so what a backend reports is
what gets priced.

The local engine keeps its own token-level events (``local_engine.runtime.generate``):
``local_engine`` must not import ``ds4router``, and its ``Done`` carries what only
the engine has (generation statistics, the sampled token ids for the prefix cache).
``ds4router.backends.local`` adapts them to these.

Tool calls: the tools work adds its ``ToolCallDelta`` event here, to ``BackendEvent``
(and so ``SessionEvent``); nothing yields one yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ds4router.routing.router import Classified, Decision
from ds4router.targets import Sendable
from pricing.usage import TokenUsage

ErrorKind = Literal[
    "auth",
    "rate_limit",
    "timeout",
    "context_window",
    "content_policy",
    "unavailable",
    "bad_request",
    "cancelled",
    "internal",
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

# Kinds where trying again later (or elsewhere) may succeed; the others need the
# user to change something (a key, the prompt, the model).
RETRYABLE_KINDS: frozenset[str] = frozenset({"rate_limit", "timeout", "unavailable"})


# --- what a backend yields ------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer; pieces concatenate to the full answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """Visible chain-of-thought text, for models that stream it separately."""

    text: str


@dataclass(frozen=True)
class Done:
    """The stream ended normally; ``finish_reason`` as the model gave it (stop, length, ...)."""

    finish_reason: str


@dataclass(frozen=True)
class Failed:
    """The stream ended in an error.

    ``message`` is one line a user can act on; it never contains an API key.
    ``retryable``: trying again later or on another backend may succeed.
    ``after_tokens``: some text had already been streamed when it failed.
    """

    kind: ErrorKind
    message: str
    retryable: bool
    after_tokens: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            raise ValueError(
                f"unknown error kind {self.kind!r}; use one of {', '.join(ERROR_KINDS)}"
            )


# ToolCallDelta joins here when tool calls are wired.
BackendEvent = TextDelta | ReasoningDelta | TokenUsage | Done | Failed


def failed(kind: ErrorKind, message: str, *, after_tokens: bool = False) -> Failed:
    """A ``Failed`` whose ``retryable`` follows from its kind."""
    return Failed(kind, message, kind in RETRYABLE_KINDS, after_tokens)


# --- what a session adds ----------------------------------------------------------------------


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

    from_target: Sendable
    to_target: Sendable
    reason: str


NoticeKind = Literal["context_trimmed", "context_unknown"]


@dataclass(frozen=True)
class Notice:
    """A line for the user about how a request was sent; not part of the answer.

    ``context_trimmed``: ``dropped_turns`` earlier turns were left out to fit
    ``model``'s ``window``-token context. ``context_unknown``: ``model``'s window is
    not known, so the whole conversation was sent as it is (``window`` None).
    """

    kind: NoticeKind
    message: str
    model: str
    dropped_turns: int = 0
    window: int | None = None


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


SessionEvent = Routed | Refused | FallbackTaken | Notice | BackendEvent | Priced


__all__ = [
    "ERROR_KINDS",
    "RETRYABLE_KINDS",
    "BackendEvent",
    "Done",
    "ErrorKind",
    "Failed",
    "FallbackTaken",
    "Notice",
    "NoticeKind",
    "Priced",
    "ReasoningDelta",
    "Refused",
    "Routed",
    "SessionEvent",
    "TextDelta",
    "TokenUsage",
    "failed",
]
