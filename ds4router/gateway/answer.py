"""The pipeline's events, written out in the client's dialect: a stream or one JSON body.

The first event of a request (``Routed`` or ``Refused``) is read by the app before any
response starts, so a refusal or a failure before the first token is an HTTP error in the
client's error shape (:func:`error_response`), not a half-open stream. What follows is
encoded by :class:`AnswerWriter`: text, reasoning and tool-call deltas as they arrive; the
usage the backend reported (else the ledger's counts, marked estimated there); a failure
after tokens as the dialect's in-stream error.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sse_starlette.sse import ServerSentEvent
from starlette.responses import JSONResponse

from ds4router.events import (
    Done,
    Failed,
    Priced,
    ReasoningDelta,
    SessionEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStart,
)
from ds4router.gateway import anthropic_api, openai_api
from ds4router.gateway.wire import Dialect
from pricing.usage import TokenUsage

# A backend failure before any token, as the HTTP status the client's SDK understands.
STATUS_OF_KIND: dict[str, int] = {
    "auth": 502,  # the provider refused *our* key: not the client's credentials
    "rate_limit": 429,
    "timeout": 504,
    "context_window": 400,
    "content_policy": 400,
    "unavailable": 503,
    "bad_request": 400,
    "cancelled": 499,
    "internal": 500,
}
ANTHROPIC_TYPE_OF_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    499: "api_error",
}


def error_response(dialect: Dialect, status: int, message: str, kind: str) -> JSONResponse:
    """An HTTP error in the client's shape; ``kind`` is the stable ``type`` (privacy_refused)."""
    if dialect is Dialect.ANTHROPIC:
        body = anthropic_api.error_json(message, kind)
    else:
        body = openai_api.error_json(message, kind)
    return JSONResponse(body, status_code=status)


def anthropic_kind(status: int) -> str:
    return ANTHROPIC_TYPE_OF_STATUS.get(status, "api_error")


@dataclass
class AnswerWriter:
    """Turns one request's events into a dialect's frames and, at the end, its body."""

    dialect: Dialect
    model: str
    include_usage: bool = False
    prompt_tokens: int = 0
    usage: TokenUsage | None = None
    finish_reason: str = "stop"
    failure: Failed | None = None
    priced: Priced | None = None
    _openai: openai_api.Completion = field(init=False)
    _anthropic: anthropic_api.Message = field(init=False)

    def __post_init__(self) -> None:
        self._openai = openai_api.Completion(id=f"chatcmpl-{uuid.uuid4().hex}", model=self.model)
        self._anthropic = anthropic_api.Message(id=f"msg_{uuid.uuid4().hex}", model=self.model)

    # --- stream ---------------------------------------------------------------------------

    def opening(self) -> list[ServerSentEvent]:
        if self.dialect is Dialect.ANTHROPIC:
            start = TokenUsage(input_tokens=self.prompt_tokens, estimated=True)
            return _sse(self._anthropic.start(start))
        return []

    def frames(self, event: SessionEvent) -> list[ServerSentEvent]:
        """The frames for one event (most events have none: routing notes, prices)."""
        self._note(event)
        anthropic = self.dialect is Dialect.ANTHROPIC
        match event:
            case TextDelta(text=text):
                if anthropic:
                    return _sse(self._anthropic.text(text))
                return [_data(self._openai.chunk_text(text))]
            case ReasoningDelta(text=text):
                if anthropic:
                    return _sse(self._anthropic.thinking(text))
                return [_data(self._openai.chunk_reasoning(text))]
            case ToolCallStart(id=call_id, name=name):
                if anthropic:
                    return _sse(self._anthropic.tool_start(call_id, name))
                return [_data(self._openai.chunk_tool_start(call_id, name))]
            case ToolCallDelta(arguments=delta):
                if anthropic:
                    return _sse(self._anthropic.tool_arguments(delta))
                return [_data(self._openai.chunk_tool_arguments(delta))]
            case Failed(after_tokens=True, message=message, kind=kind):
                return self._stream_error(message, kind)
            case ToolCallInvalid(message=message):
                # The local model wrote a call that cannot be read: the agent must not run
                # half of it, so the answer ends in an error it can show.
                self.failure = Failed("internal", f"unreadable tool call: {message}", False, True)
                return self._stream_error(self.failure.message, "internal")
            case _:
                return []

    def closing(self) -> list[ServerSentEvent]:
        """After the last event: the stop reason and usage, then the dialect's end marker."""
        if self.failure is not None:
            return [] if self.dialect is Dialect.ANTHROPIC else [ServerSentEvent(data="[DONE]")]
        usage = self.final_usage()
        if self.dialect is Dialect.ANTHROPIC:
            frames = self._anthropic.finish(self.finish_reason, usage)
            # message_delta's usage is cumulative: the whole count once it is known.
            frames[-2][1]["usage"] = anthropic_api.usage_json(usage)
            return _sse(frames)
        out = [_data(self._openai.chunk_finish(self.finish_reason))]
        if self.include_usage:
            out.append(_data(self._openai.chunk_usage(usage)))
        out.append(ServerSentEvent(data="[DONE]"))
        return out

    def _stream_error(self, message: str, kind: str) -> list[ServerSentEvent]:
        status = STATUS_OF_KIND.get(kind, 502)
        if self.dialect is Dialect.ANTHROPIC:
            body = anthropic_api.error_json(message, anthropic_kind(status))
            return [ServerSentEvent(data=json.dumps(body), event="error")]
        return [_data(openai_api.error_json(message, kind))]

    # --- body -----------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        usage = self.final_usage()
        if self.dialect is Dialect.ANTHROPIC:
            return self._anthropic.body(self.finish_reason, usage)
        return self._openai.body(self.finish_reason, usage)

    def collect(self, event: SessionEvent) -> None:
        """Non-stream: feed the encoders so :meth:`body` holds the whole answer."""
        self.frames(event)

    # --- bookkeeping ----------------------------------------------------------------------

    def _note(self, event: SessionEvent) -> None:
        match event:
            case TokenUsage():
                self.usage = event
            case Done(finish_reason=reason):
                self.finish_reason = reason
            case Failed():
                self.failure = event
            case Priced():
                self.priced = event

    def final_usage(self) -> TokenUsage:
        if self.usage is not None:
            return self.usage
        if self.priced is not None:
            return TokenUsage(
                input_tokens=self.priced.input_tokens,
                output_tokens=self.priced.output_tokens,
                estimated=True,
            )
        return TokenUsage(input_tokens=self.prompt_tokens, estimated=True)


def _data(obj: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(obj, ensure_ascii=False))


def _sse(pairs: list[tuple[str, dict[str, Any]]]) -> list[ServerSentEvent]:
    return [ServerSentEvent(data=json.dumps(d, ensure_ascii=False), event=n) for n, d in pairs]
