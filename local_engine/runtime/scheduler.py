"""Several generations on one model, taking turns a step at a time.

MLX evaluates one graph at a time on a device, and the arrays of a decode state belong to
the thread that made them, so every generation runs on one scheduler thread. Fairness comes
from granularity: each live generation advances by one step -- one prefill chunk or one
sampled token -- and goes to the back of the line, so a long answer (or a long prompt) cannot
hold the others up for more than a step. Callers read their own generation's events from a
queue on their own thread, as before.

A generation whose reader goes away (the iterator is closed or dropped) is cancelled at its
next step; one that raises passes the exception to its reader.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from local_engine.runtime.events import Event

Steps = Iterator["Event | None"]
_END = object()


class _Either:
    """Cancelled when the caller asks or the reader went away."""

    def __init__(self, *events: Any) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


@dataclass
class _Job:
    start: Callable[[_Either], Steps]
    cancel: _Either
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    steps: Steps | None = None


class Scheduler:
    """Round-robin over live generations on one daemon thread (started on first use)."""

    def __init__(self, name: str = "local-engine-scheduler") -> None:
        self._name = name
        self._ready: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps_run = 0  # for tests and stats: steps taken, all generations together

    @property
    def active(self) -> int:
        with self._wake:
            return len(self._ready)

    def run(self, start: Callable[[Any], Steps], cancel: Any = None) -> Iterator[Event]:
        """The events of ``start(cancel)``'s steps, run on the scheduler thread. The work
        is queued when the returned iterator is first advanced."""
        gone = threading.Event()
        job = _Job(start, _Either(cancel, gone))
        try:
            self._submit(job)
            while True:
                item = job.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            gone.set()

    def _submit(self, job: _Job) -> None:
        with self._wake:
            self._ready.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._ready:
                    self._wake.wait()
                job = self._ready.popleft()
            if self._step(job):
                with self._wake:
                    self._ready.append(job)

    def _step(self, job: _Job) -> bool:
        """One step of ``job``; False when it has finished (or failed)."""
        self.steps_run += 1
        try:
            if job.steps is None:
                job.steps = job.start(job.cancel)
            item = next(job.steps)
        except StopIteration:
            job.out.put(_END)
            return False
        except BaseException as exc:  # the reader re-raises it; the scheduler goes on
            job.out.put(exc)
            return False
        if item is not None:
            job.out.put(item)
        return True
