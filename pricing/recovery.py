"""Which process wrote a write-ahead row, and marking the rows of dead processes.

A ``started`` ledger row carries the writer's pid, a *process mark* and the host
name. The mark tells a live process from a later one that got the same pid: on
Linux it is the boot id plus the process's start time in clock ticks
(``/proc/PID/stat``), both fixed for the life of a process. Where there is no
``/proc`` (macOS) the mark is empty and liveness is ``kill(pid, 0)`` alone, so a
reused pid can keep a dead request's row ``started`` until that process ends too.

:func:`recover_interrupted` runs whenever the ledger is opened for writing (the
"next start"): rows of this host whose process is gone become ``interrupted``,
their usage what was recorded while running (the prompt's token count at the
start, the output counted as it streamed), marked estimated, and priced with the
rates the row was started with when it has them. Rows of other hosts (a database
on a shared disk) are left alone: their processes cannot be seen from here.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pricing.db import transaction


@dataclass(frozen=True)
class ProcessMark:
    """A running process as a write-ahead row names it."""

    pid: int
    mark: str | None
    host: str


@functools.cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from ``/proc``, or None where there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split
    # after the last ')'; the start time is field 22, the 20th after the state.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], rest[19]


def _mark_of(pid: int) -> str | None:
    stat, boot = _stat(pid), _boot_id()
    if stat is None or boot is None:
        return None
    return f"{boot}:{stat[1]}"


@functools.cache
def _process(pid: int) -> ProcessMark:
    # Keyed by pid, so a forked child gets its own mark, not its parent's.
    return ProcessMark(pid, _mark_of(pid), socket.gethostname())


def this_process() -> ProcessMark:
    """The mark a write-ahead row written now carries."""
    return _process(os.getpid())


def process_gone(pid: int, mark: str | None) -> bool:
    """Whether the process that wrote ``(pid, mark)`` on this host has ended."""
    if pid <= 0:
        return True
    stat = _stat(pid)
    if stat is not None:
        # A zombie has ended; it only waits for its parent to read its status.
        return stat[0] == "Z" or (mark is not None and _mark_of(pid) != mark)
    if Path("/proc/self/stat").exists():
        return True  # /proc is there and this pid is not in it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def owner_fields() -> dict[str, int | str | None]:
    """The ``pid``/``process_mark``/``host`` fields of a write-ahead ``LedgerRow``."""
    me = this_process()
    return {"pid": me.pid, "process_mark": me.mark, "host": me.host}


_PRICED = (
    "CASE WHEN route = 'cloud' AND rate_input IS NOT NULL AND rate_output IS NOT NULL "
    "THEN ((input_tokens - cached_input_tokens) * rate_input "
    "+ cached_input_tokens * COALESCE(rate_cached_input, rate_input) "
    "+ output_tokens * rate_output) / 1e6 ELSE cost_usd END"
)


def recover_interrupted(conn: sqlite3.Connection) -> int:
    """Mark this host's ``started`` rows whose process is gone ``interrupted``;
    returns how many. Safe to run from many processes at once."""
    me = this_process()
    rows = conn.execute(
        "SELECT id, pid, process_mark FROM ledger WHERE status = 'started' AND host = ?",
        (me.host,),
    ).fetchall()
    gone = [
        rid
        for rid, pid, mark in rows
        if pid != me.pid and process_gone(int(pid if pid is not None else 0), mark)
    ]
    if not gone:
        return 0
    with transaction(conn):
        for rid in gone:
            conn.execute(
                "UPDATE ledger SET status = 'interrupted', error_kind = 'interrupted', "
                f"usage_estimated = 1, cost_usd = {_PRICED} "
                "WHERE id = ? AND status = 'started'",
                (rid,),
            )
    return len(gone)


__all__ = ["ProcessMark", "owner_fields", "process_gone", "recover_interrupted", "this_process"]
