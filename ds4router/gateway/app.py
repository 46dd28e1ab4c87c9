"""The gateway's HTTP routes (Starlette): parse the dialect, run the pipeline, answer in kind.

Every chat request is answered the same way, whichever dialect: identify the caller
(:mod:`.auth`), parse the body into a :class:`~ds4router.gateway.wire.WireRequest`, hand it
to the :class:`~ds4router.gateway.service.Gateway` (which classifies the whole conversation,
routes, enforces the privacy invariant and records the ledger row), and read the first
events *before* answering: a refusal (``privacy_refused``, 403) or a failure before the
first token is a plain HTTP error in the client's shape, with nothing sent anywhere. Only
then does a stream start.

A client that disconnects mid-stream makes the response task end; the pipeline's generator
is closed, which cancels the backend call and records the row as ``cancelled``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ds4router.events import (
    Failed,
    ReasoningDelta,
    Refused,
    SessionEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from ds4router.gateway import anthropic_api, openai_api
from ds4router.gateway.answer import STATUS_OF_KIND, AnswerWriter, anthropic_kind, error_response
from ds4router.gateway.auth import AuthError
from ds4router.gateway.wire import Dialect, WireError, WireRequest

if TYPE_CHECKING:
    from ds4router.gateway.service import Gateway

_MAX_BODY = 64 * 1024 * 1024


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI app serving ``gateway``; uvicorn (``ds4router serve``) or a test runs it."""

    async def health(request: Request) -> Response:
        return JSONResponse(gateway.health())

    async def models(request: Request) -> Response:
        try:
            caller = gateway.identify(request.headers)
        except AuthError as exc:
            return error_response(Dialect.OPENAI, 401, str(exc), "authentication_error")
        return JSONResponse(openai_api.models_json(gateway.models(caller)))

    async def chat_completions(request: Request) -> Response:
        return await _chat(gateway, request, Dialect.OPENAI)

    async def messages(request: Request) -> Response:
        return await _chat(gateway, request, Dialect.ANTHROPIC)

    async def count_tokens(request: Request) -> Response:
        try:
            caller = gateway.identify(request.headers)
            wire = anthropic_api.parse_request(await _json(request), counting=True)
            count = await gateway.count_tokens(wire, caller)
        except AuthError as exc:
            return error_response(Dialect.ANTHROPIC, 401, str(exc), "authentication_error")
        except WireError as exc:
            return error_response(Dialect.ANTHROPIC, 400, str(exc), "invalid_request_error")
        return JSONResponse({"input_tokens": count})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=gateway.lifespan)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise WireError(f"the request body is over {_MAX_BODY // (1024 * 1024)} MiB")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(f"the request body is not JSON: {exc}") from None


def _parse(dialect: Dialect, body: Any) -> WireRequest:
    if dialect is Dialect.ANTHROPIC:
        return anthropic_api.parse_request(body)
    return openai_api.parse_request(body)


def _client_error(dialect: Dialect, status: int, message: str) -> Response:
    kind = anthropic_kind(status) if dialect is Dialect.ANTHROPIC else "invalid_request_error"
    if status == 401:
        kind = "authentication_error"
    return error_response(dialect, status, message, kind)


async def _chat(gateway: Gateway, request: Request, dialect: Dialect) -> Response:
    try:
        caller = gateway.identify(request.headers)
        wire = _parse(dialect, await _json(request))
    except AuthError as exc:
        return _client_error(dialect, 401, str(exc))
    except WireError as exc:
        return _client_error(dialect, 400, str(exc))
    events = gateway.answer(wire, caller)
    head: list[SessionEvent] = []
    try:
        async for event in events:
            head.append(event)
            if isinstance(event, Refused):
                return await _refused(dialect, event, events)
            if isinstance(event, Failed):
                return await _failed(dialect, event, events)
            if _content(event):
                break
        else:
            head.append(_END)
    except WireError as exc:  # the service found the request unusable (unknown model, ...)
        await events.aclose()
        return _client_error(dialect, 400, str(exc))
    writer = AnswerWriter(
        dialect,
        model=wire.model,
        include_usage=wire.include_usage,
        prompt_tokens=gateway.prompt_tokens(head),
    )
    if not wire.stream:
        return await _whole(writer, head, events)
    return EventSourceResponse(
        _stream(writer, head, events),
        ping=15,
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_END: Any = object()  # marks "the events ran out while reading the head"


def _content(event: SessionEvent) -> bool:
    """True once a backend has started answering (a tool call counts)."""
    return isinstance(event, TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta)


async def _drain(events: AsyncIterator[SessionEvent]) -> None:
    """Let the pipeline finish (it writes the ledger row) without answering more."""
    async for _ in events:
        pass


async def _refused(dialect: Dialect, event: Refused, events: Any) -> Response:
    await _drain(events)
    decision = event.decision
    message = "; ".join(decision.reasons) or "refused by the privacy rules"
    if decision.fix:
        message += f". To allow it: {decision.fix}"
    return error_response(dialect, 403, message, "privacy_refused")


async def _failed(dialect: Dialect, event: Failed, events: Any) -> Response:
    await _drain(events)
    status = STATUS_OF_KIND.get(event.kind, 502)
    kind = anthropic_kind(status) if dialect is Dialect.ANTHROPIC else event.kind
    return error_response(dialect, status, event.message, kind)


async def _whole(writer: AnswerWriter, head: list[Any], events: Any) -> Response:
    for event in head:
        if event is not _END:
            writer.collect(event)
    async for event in events:
        writer.collect(event)
    if writer.failure is not None:
        status = STATUS_OF_KIND.get(writer.failure.kind, 502)
        kind = (
            anthropic_kind(status) if writer.dialect is Dialect.ANTHROPIC else writer.failure.kind
        )
        return error_response(writer.dialect, status, writer.failure.message, kind)
    return JSONResponse(writer.body())


async def _stream(
    writer: AnswerWriter, head: list[Any], events: Any
) -> AsyncIterator[ServerSentEvent]:
    try:
        for frame in writer.opening():
            yield frame
        for event in head:
            if event is not _END:
                for frame in writer.frames(event):
                    yield frame
        if head and head[-1] is not _END:
            async for event in events:
                for frame in writer.frames(event):
                    yield frame
        for frame in writer.closing():
            yield frame
    finally:
        # A disconnect cancels this task: closing the pipeline cancels the backend call
        # and records the row as cancelled.
        with contextlib.suppress(Exception):
            await events.aclose()
