"""The events of one request, defined once: what backends yield and what a session adds.

Every backend (local engine, cloud, a test double) yields a :data:`BackendEvent`
stream: zero or more ``TextDelta``/``ReasoningDelta`` and tool-call events
(``ToolCallStart``, its ``ToolCallDelta`` pieces, then ``ToolCallDone`` -- or
``ToolCallInvalid`` when the model's call could not be read), then a ``TokenUsage`` (when
anything was produced or the provider reported it), then exactly one of ``Done``
or ``Failed``; a ``Notice`` line may come at any point (the local backend says so when
the weights are random). ``Failed.after_tokens`` says whether text already reached the
user: only a failure before any token may fall back to another backend.

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

Tool calls: the local backend yields the tool-call events from the engine's DSML parser
(``local_engine.runtime.dsml_parser``); they travel in ``BackendEvent`` and so
``SessionEvent``.
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
class ToolCallStart:
    """The model began a call of tool ``name``; ``index`` orders the calls of one answer
    (OpenAI's ``tool_calls[].index``) and ``id`` names it for the tool result."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of call ``index``'s arguments as JSON text (OpenAI ``function.arguments``
    chunks, Anthropic ``input_json_delta.partial_json``); pieces concatenate to the whole."""

    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallDone:
    """Call ``index`` is complete: ``arguments`` is its whole JSON object text."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallInvalid:
    """The model wrote a tool call that could not be read; ``index`` is the call that was
    open (None: between calls). ``message`` is one line saying what was wrong."""

    message: str
    index: int | None = None


ToolCallEvent = ToolCallStart | ToolCallDelta | ToolCallDone | ToolCallInvalid


@dataclass(frozen=True)
class Done:
    """The stream ended normally; ``finish_reason`` as the model gave it (stop, length,
    ``tool_calls`` when the answer ends with calls for the client to run, ...)."""

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


NoticeKind = Literal["context_trimmed", "context_unknown", "random_weights"]


@dataclass(frozen=True)
class Notice:
    """A line for the user about how a request was sent; not part of the answer.

    ``context_trimmed``: ``dropped_turns`` earlier turns were left out to fit
    ``model``'s ``window``-token context. ``context_unknown``: ``model``'s window is
    not known, so the whole conversation was sent as it is (``window`` None).
    ``random_weights``: the local model's weights are random (a test checkpoint).
    """

    kind: NoticeKind
    message: str
    model: str
    dropped_turns: int = 0
    window: int | None = None


BackendEvent = TextDelta | ReasoningDelta | ToolCallEvent | TokenUsage | Done | Failed | Notice


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


SessionEvent = Routed | Refused | FallbackTaken | BackendEvent | Priced


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
