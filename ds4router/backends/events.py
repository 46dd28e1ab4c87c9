"""The events every backend yields, local or cloud, so sessions and UIs treat them alike.

A stream is zero or more ``TextDelta``/``ReasoningDelta`` and tool-call events
(``ToolCallStart``, its ``ToolCallDelta`` pieces, then ``ToolCallDone`` -- or
``ToolCallInvalid`` when the model's call could not be read), then ``Usage`` (when
anything was produced or the provider reported it), then exactly one of
``Done`` or ``Failed``. ``Failed.after_tokens`` tells a session whether text
already reached the user: only a failure before any token may fall back to
another backend.

``Notice`` is not part of a backend's stream: a session yields it before an
attempt to say how the request was sent (earlier turns left out to fit the
model's context window, or a window it could not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

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


@dataclass(frozen=True)
class TextDelta:
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
class Usage:
    """Token counts of one request.

    ``input_tokens`` includes ``cached_input_tokens`` (as OpenAI reports prompt
    tokens); ``output_tokens`` includes ``reasoning_tokens`` (as OpenAI reports
    completion tokens). ``estimated`` is true when the provider did not report
    usage and the counts come from a local tokenizer.
    """

    input_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def __post_init__(self) -> None:
        for name in (
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"Usage.{name} cannot be negative")


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


Event = TextDelta | ReasoningDelta | ToolCallEvent | Usage | Done | Failed


def failed(kind: ErrorKind, message: str, *, after_tokens: bool = False) -> Failed:
    """A ``Failed`` whose ``retryable`` follows from its kind."""
    return Failed(kind, message, kind in RETRYABLE_KINDS, after_tokens)
