"""One daemon thread that runs submitted jobs one at a time, in submission order.

Two parts of the project need exactly this: the KV cache writer (snapshots go to disk
off the generation thread, a bounded queue so copies of the decode state cannot pile
up in memory) and the application's engine thread (MLX streams belong to the thread
that made them, so loads and generations all run on one thread).

:class:`SerialWorker` starts its thread on the first ``submit`` and again on a later
``submit`` if the thread died. A job that raises an ``Exception`` is handed to
``on_error`` (the default drops it) and the worker goes on with the next one; a job
that raises something harsher (``SystemExit``, ``KeyboardInterrupt``) ends the thread,
and a successor takes over the jobs still queued. ``flush`` waits until every job
submitted so far has finished.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

Job = Callable[[], object]
ErrorHook = Callable[[Exception], None]


class SerialWorker:
    """Runs jobs in order on one daemon thread named ``name``.

    ``maxsize`` bounds the jobs waiting (not counting the one running; 0: unbounded):
    a ``submit`` beyond it blocks until the worker takes the next job. So a job must
    never ``submit`` to its own bounded worker, nor ``flush`` it (that raises).
    ``on_error`` is called on the worker thread with a job's exception; if it raises in
    turn, that is dropped too -- nothing a job does may stop the jobs queued after it.
    """

    def __init__(self, name: str, maxsize: int = 0, on_error: ErrorHook | None = None) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.on_error = on_error
        self._jobs: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (blocks while a bounded queue is full)."""
        with self._idle:
            self._pending += 1
        try:
            self._ensure_thread()
            self._jobs.put(job)
        except BaseException:  # not queued (e.g. interrupted while blocked): not pending
            self._done_one()
            raise
        # Again after the put: a thread that was ending meanwhile either saw this job in
        # the queue (and started a successor) or had already let go (we start one).
        self._ensure_thread()

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished yet (the running one included)."""
        with self._idle:
            return self._pending

    @property
    def alive(self) -> bool:
        """Whether the thread is running now (it starts on the next ``submit`` if not)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has finished; False if ``timeout`` ran out."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{self.name}: a job cannot wait for its own worker to flush")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- the thread ----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._start()

    def _start(self) -> None:
        """A new thread; the caller holds ``_start_lock``."""
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    def _done_one(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _serve(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                try:
                    job()
                except Exception as exc:
                    self._report(exc)
                finally:
                    del job  # free what the job holds before waiting for the next one
                    self._done_one()
        finally:
            # Only a BaseException gets here. Jobs queued behind the one that raised must
            # not wait for somebody's next submit: hand them to a successor. Letting go and
            # looking at the queue happen under the lock that submit's re-check takes.
            with self._start_lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    if not self._jobs.empty():
                        self._start()

    def _report(self, exc: Exception) -> None:
        hook = self.on_error
        if hook is None:
            return
        try:
            hook(exc)
        except Exception:  # a failing hook must not take the worker down with it
            pass


__all__ = ["SerialWorker"]
