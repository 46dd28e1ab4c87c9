"""``SerialWorker``: jobs in order on one thread, flush, errors, restarts, a bounded queue.

Jobs that must stay running while a test looks are held by events, never by sleeps; the
only timed waits are the short ones that check something does *not* happen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from local_engine.runtime.worker import SerialWorker

# How long a test waits for something that must not happen (a blocked submit, a flush).
NOT_YET_S = 0.2
# How long it waits for something that must (generous: the machine is shared).
IN_TIME_S = 10.0


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event that jobs wait on; set at teardown so no thread is left blocked."""
    event = threading.Event()
    yield event
    event.set()


def test_jobs_run_in_submission_order_on_one_named_thread() -> None:
    worker = SerialWorker("test-serial")
    seen: list[tuple[int, str]] = []
    for i in range(50):
        worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert worker.flush(IN_TIME_S)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-serial"}
    assert worker.pending == 0


def test_flush_times_out_while_a_job_runs_then_succeeds(gate: threading.Event) -> None:
    worker = SerialWorker("test-flush")
    started = threading.Event()

    def held() -> None:
        started.set()
        gate.wait(IN_TIME_S)

    worker.submit(held)
    worker.submit(lambda: None)
    assert started.wait(IN_TIME_S)
    assert worker.pending == 2  # the running job counts until it finishes
    t0 = time.monotonic()
    assert worker.flush(timeout=NOT_YET_S) is False
    assert time.monotonic() - t0 >= NOT_YET_S * 0.9
    gate.set()
    assert worker.flush(timeout=IN_TIME_S) is True
    assert worker.pending == 0


def test_a_failing_job_goes_to_on_error_and_the_next_job_still_runs() -> None:
    errors: list[Exception] = []
    worker = SerialWorker("test-errors", on_error=errors.append)
    done: list[str] = []
    worker.submit(lambda: done.append("first"))
    worker.submit(lambda: 1 / 0)
    worker.submit(lambda: done.append("after the failure"))
    assert worker.flush(IN_TIME_S)
    assert done == ["first", "after the failure"]
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)


def test_a_failing_error_hook_and_no_hook_both_leave_the_worker_running() -> None:
    def broken_hook(exc: Exception) -> None:
        raise RuntimeError("the hook itself fails")

    for hook in (broken_hook, None):
        worker = SerialWorker("test-hooks", on_error=hook)
        done: list[int] = []
        worker.submit(lambda: [][0])
        worker.submit(lambda done=done: done.append(1))
        assert worker.flush(IN_TIME_S)
        assert done == [1]


def die() -> None:
    raise SystemExit  # ends the thread it runs on, silently, as threading does for SystemExit


# The thread's death is the point here; pytest would report each one as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_killed_by_a_job_is_replaced_and_queued_jobs_still_run(
    gate: threading.Event,
) -> None:
    worker = SerialWorker("test-restart")
    threads: list[threading.Thread] = []

    def fatal() -> None:
        threads.append(threading.current_thread())
        gate.wait(IN_TIME_S)
        die()

    def record() -> None:
        threads.append(threading.current_thread())

    worker.submit(fatal)
    worker.submit(record)  # queued behind the job that kills the thread
    gate.set()
    assert worker.flush(IN_TIME_S)  # a successor ran it, without another submit
    assert len(threads) == 2 and threads[0] is not threads[1]
    threads[0].join(IN_TIME_S)
    assert not threads[0].is_alive()

    # And with nothing queued behind it: the thread is gone until the next submit.
    worker.submit(die)
    assert worker.flush(IN_TIME_S)
    deadline = time.monotonic() + IN_TIME_S
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.alive
    worker.submit(record)
    assert worker.flush(IN_TIME_S)
    assert len(threads) == 3 and threads[2].is_alive() is worker.alive


def test_a_bounded_queue_blocks_submit_until_the_worker_takes_a_job(
    gate: threading.Event,
) -> None:
    worker = SerialWorker("test-bounded", maxsize=1)
    running = threading.Event()

    def held() -> None:
        running.set()
        gate.wait(IN_TIME_S)

    worker.submit(held)
    assert running.wait(IN_TIME_S)  # the worker holds it: the queue is empty again
    worker.submit(lambda: None)  # fills the queue (maxsize 1)
    third_queued = threading.Event()

    def submit_third() -> None:
        worker.submit(lambda: None)
        third_queued.set()

    submitter = threading.Thread(target=submit_third, daemon=True)
    submitter.start()
    assert not third_queued.wait(NOT_YET_S)  # blocked: the queue is full
    assert worker.pending == 3  # counted as soon as it was submitted
    gate.set()
    assert third_queued.wait(IN_TIME_S)
    assert worker.flush(IN_TIME_S) and worker.pending == 0
    submitter.join(IN_TIME_S)


def test_a_job_cannot_flush_its_own_worker() -> None:
    worker = SerialWorker("test-self-flush")
    raised: list[BaseException] = []

    def flush_self() -> None:
        try:
            worker.flush(IN_TIME_S)
        except RuntimeError as exc:
            raised.append(exc)

    worker.submit(flush_self)
    assert worker.flush(IN_TIME_S)
    assert len(raised) == 1 and "its own worker" in str(raised[0])


def test_a_negative_maxsize_is_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        SerialWorker("test-bad", maxsize=-1)
