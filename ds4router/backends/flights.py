"""The streams a backend has in flight, so that ``cancel()`` can reach them from any thread.

Every backend's ``stream()`` registers a :class:`Flight` before its first await (so a
``cancel()`` issued after the stream started always reaches it) and drops it when the
stream ends, however it ends. ``cancel()`` may come from another thread: it sets each
flight's ``stop`` at once (for a worker thread to poll) and its ``cancelled`` event on
the stream's own loop (asyncio events are not thread-safe).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class Flight:
    """One stream in flight."""

    loop: asyncio.AbstractEventLoop
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # awaited on ``loop``
    stop: threading.Event = field(default_factory=threading.Event)  # read by worker threads


class Flights:
    """A thread-safe set of the streams in flight."""

    def __init__(self) -> None:
        self._flights: set[Flight] = set()
        self._lock = threading.Lock()

    @contextmanager
    def track(self) -> Iterator[Flight]:
        """Register a flight on the running loop for the ``with`` block; ``stop`` is set after.

        ``stop`` is set on the way out too: a worker thread must not go on for a
        stream nobody listens to any more.
        """
        flight = Flight(asyncio.get_running_loop())
        with self._lock:
            self._flights.add(flight)
        try:
            yield flight
        finally:
            flight.stop.set()
            with self._lock:
                self._flights.discard(flight)

    def cancel_all(self) -> None:
        """Cancel every stream in flight; thread-safe."""
        with self._lock:
            flights = list(self._flights)
        for flight in flights:
            flight.stop.set()
            try:
                flight.loop.call_soon_threadsafe(flight.cancelled.set)
            except RuntimeError:  # its loop is closed: the stream is gone already
                pass
