"""A scripted in-process backend: a test double, kept with the tests so the app cannot import it.

``ScriptedBackend`` implements the ``Backend`` protocol by playing back replies
a test wrote in advance (text pieces, reasoning, usage, a failure before or
after some tokens, a delay between pieces). It stands in for the engine's
``LocalBackend`` in session tests and lets a test make the local side fail on
purpose; tests hand it to ``Session(backend_factory=...)`` themselves.

Every request it receives is kept in ``requests``, so a test can check exactly
what a model would have been sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ds4router.backends.base import BackendRequest
from ds4router.backends.flights import Flight, Flights
from ds4router.backends.health import Health
from ds4router.events import (
    BackendEvent,
    Done,
    ErrorKind,
    Failed,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    failed,
)


@dataclass(frozen=True)
class ScriptedReply:
    """One scripted answer.

    ``fail_kind`` set: after ``fail_after`` text pieces the stream ends with a
    ``Failed`` of that kind (``fail_after=0``: before any token). ``usage``
    None: input tokens are the prompt's characters / 4, output tokens one per
    piece streamed. ``hang_s`` waits that long before the first piece (a
    cancel ends the wait at once).
    """

    text: tuple[str, ...] = ("Hello", " from", " the", " local", " engine.")
    reasoning: tuple[str, ...] = ()
    finish_reason: str = "stop"
    usage: TokenUsage | None = None
    fail_kind: ErrorKind | None = None
    fail_message: str = "scripted failure"
    fail_after: int = 0
    delay_s: float = 0.0
    hang_s: float = 0.0


def reply(*text: str, **kwargs: object) -> ScriptedReply:
    """A reply streaming ``text`` pieces (default: a short greeting)."""
    if text:
        kwargs["text"] = tuple(text)
    return ScriptedReply(**kwargs)  # type: ignore[arg-type]


class ScriptedBackend:
    """Plays back ``ScriptedReply`` objects, one per request, then ``default``.

    ``health_status`` is what ``health()`` reports (tests make it ``offline``
    or ``loading`` to see the router route around it).
    """

    def __init__(
        self,
        *replies: ScriptedReply,
        default: ScriptedReply | None = None,
        health: Health | None = None,
    ) -> None:
        self._script: deque[ScriptedReply] = deque(replies)
        self.default = default or ScriptedReply()
        self.health_status = health or Health("ready", "scripted test backend")
        self.requests: list[BackendRequest] = []
        self.cancel_calls = 0
        self._flights = Flights()
        self._lock = threading.Lock()

    def script(self, *replies: ScriptedReply) -> None:
        with self._lock:
            self._script.extend(replies)

    def health(self) -> Health:
        return self.health_status

    def cancel(self) -> None:
        with self._lock:
            self.cancel_calls += 1
        self._flights.cancel_all()

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendEvent]:
        # Registered before the first await, so a cancel() issued on this loop
        # after stream() started always reaches it.
        with self._flights.track() as flight:
            with self._lock:
                self.requests.append(request)
                current = self._script.popleft() if self._script else self.default
            async for event in self._play(current, request, flight):
                yield event

    async def _play(
        self, script: ScriptedReply, request: BackendRequest, flight: Flight
    ) -> AsyncIterator[BackendEvent]:
        sent: list[str] = []
        reasoning: list[str] = []
        if script.hang_s and await _cancelled_during(flight, script.hang_s):
            yield failed("cancelled", f"{request.model}: cancelled")
            return
        for piece in script.reasoning:
            reasoning.append(piece)
            yield ReasoningDelta(piece)
        for index, piece in enumerate(script.text):
            if script.fail_kind is not None and index == script.fail_after:
                break
            if flight.cancelled.is_set():
                break
            if script.delay_s and index and await _cancelled_during(flight, script.delay_s):
                break
            sent.append(piece)
            yield TextDelta(piece)
        started = bool(sent or reasoning)
        if started:
            yield script.usage or _count(request, sent, reasoning)
        if flight.cancelled.is_set():
            yield failed("cancelled", f"{request.model}: cancelled", after_tokens=started)
        elif script.fail_kind is not None:
            yield Failed(
                script.fail_kind,
                script.fail_message,
                script.fail_kind in ("rate_limit", "timeout", "unavailable"),
                after_tokens=started,
            )
        else:
            if not started:
                yield script.usage or _count(request, sent, reasoning)
            yield Done(script.finish_reason)


async def _cancelled_during(flight: Flight, seconds: float) -> bool:
    """Sleep ``seconds`` unless cancelled first; True when cancelled."""
    try:
        await asyncio.wait_for(flight.cancelled.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def _count(request: BackendRequest, sent: list[str], reasoning: list[str]) -> TokenUsage:
    chars = sum(len(str(m.get("content", ""))) for m in request.messages)
    return TokenUsage(
        input_tokens=max(1, chars // 4),
        output_tokens=len(sent) + len(reasoning),
        reasoning_tokens=len(reasoning),
    )


__all__ = ["ScriptedBackend", "ScriptedReply", "reply"]
