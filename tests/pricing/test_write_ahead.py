"""Write-ahead ledger rows, their recovery after a killed process, and database faults.

Real SQLite files and real child processes killed with real signals: a row begun
by a process that dies is ``interrupted`` on the next open, priced from the rates
it was begun with; a full or read-only database says so in one line and keeps
every earlier row; damaged files are found before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pricing import write_ahead
from pricing.db import (
    DatabaseDamaged,
    DatabaseFull,
    DatabaseReadOnly,
    connect,
)
from pricing.ledger import LEDGER_MIGRATIONS, Ledger, LedgerRow
from pricing.recovery import owner_fields, process_gone, this_process
from pricing.report import build_report

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
MONTH = "2026-12"


BASE: dict[str, object] = {
    "time": NOW,
    "project": "acme",
    "route": "cloud",
    "model": "openai/gpt-4.1",
}


def started(**extra: object) -> LedgerRow:
    """A write-ahead row as a session begins it: the prompt counted, the rates known."""
    fields = {"status": "started", "input_tokens": 1_000, "usage_estimated": True}
    fields |= {"rate_input": 2.0, "rate_output": 8.0, **owner_fields()}
    return LedgerRow(**{**BASE, **fields, **extra})  # type: ignore[arg-type]


def finished(**extra: object) -> LedgerRow:
    fields = {"input_tokens": 1_010, "output_tokens": 20, "cost_usd": 0.00218}
    return LedgerRow(**{**BASE, **fields, **extra})  # type: ignore[arg-type]


CHILD = """
import datetime as dt, sys, time
from pricing import write_ahead
from pricing.ledger import Ledger, LedgerRow
from pricing.recovery import owner_fields
ledger = Ledger(sys.argv[1])
rid = write_ahead.begin(ledger, LedgerRow(
    time=dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC), project="acme", route="cloud",
    model="openai/gpt-4.1", status="started", input_tokens=1000, usage_estimated=True,
    rate_input=2.0, rate_output=8.0, **owner_fields()))
write_ahead.progress(ledger, rid, 250)
print(rid, flush=True)
time.sleep(600)
"""


def child_begins_then(path: Path, sig: signal.Signals) -> int:
    """A child process begins a row, counts 250 output tokens, and is killed with ``sig``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    rid = int(proc.stdout.readline())
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return rid


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_row_begun_by_a_killed_process_is_interrupted_on_the_next_open(
    tmp_path: Path, sig: signal.Signals
) -> None:
    path = tmp_path / "db.sqlite3"
    rid = child_begins_then(path, sig)
    with Ledger(path) as ledger:
        assert ledger.recovered == 1
        (row,) = ledger.month_rows(MONTH)
        assert row.status == "interrupted" and row.error_kind == "interrupted"
        assert (row.input_tokens, row.output_tokens, row.usage_estimated) == (1000, 250, True)
        # Priced with the rates it was begun with: 1000 x $2/M + 250 x $8/M.
        assert row.cost_usd == pytest.approx(0.004)
        report = build_report(ledger, MONTH)
        assert (report.total.requests, report.total.interrupted, report.total.ok) == (1, 1, 0)
        assert report.cloud_usd == pytest.approx(0.004)
        assert ledger.conn.execute("SELECT id FROM ledger").fetchone()[0] == rid
    with Ledger(path) as again:
        assert again.recovered == 0


def test_a_running_request_is_left_alone_and_finishes_in_place(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with Ledger(path) as ledger:
        rid = write_ahead.begin(ledger, started())
        with Ledger(path) as other:  # another open by a live process recovers nothing
            assert other.recovered == 0
        assert build_report(ledger, MONTH).total.started == 1
        write_ahead.finish(ledger, rid, finished())
        (row,) = ledger.month_rows(MONTH)
        assert (row.status, row.output_tokens, row.cost_usd) == ("ok", 20, 0.00218)
        total = build_report(ledger, MONTH).total
        assert (total.requests, total.started, total.ok) == (1, 0, 1)
        assert total.cost_usd == pytest.approx(0.00218)


def test_a_write_ahead_row_must_be_started_and_a_finished_one_final(tmp_path: Path) -> None:
    with Ledger(tmp_path / "db") as ledger:
        with pytest.raises(Exception, match="'started'"):
            write_ahead.begin(ledger, finished())
        rid = write_ahead.begin(ledger, started())
        with pytest.raises(Exception, match="status is one of"):
            write_ahead.finish(ledger, rid, started())
        with pytest.raises(Exception, match="no ledger row 999"):
            write_ahead.finish(ledger, 999, finished())


def test_process_liveness_sees_through_a_reused_pid() -> None:
    me = this_process()
    assert not process_gone(me.pid, me.mark)
    if me.mark is not None:  # Linux: the start mark tells a later process with this pid
        assert process_gone(me.pid, me.mark + "0")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    assert process_gone(proc.pid, None)


def test_a_v5_database_migrates_to_write_ahead_rows_keeping_rows_and_cube(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v5.sqlite3"
    conn = connect(path)
    from pricing.db import apply_migrations

    apply_migrations(conn, "ledger", LEDGER_MIGRATIONS[:5], mirror_user_version=True)
    conn.execute(
        "INSERT INTO ledger (time, month, day, project, route, model, input_tokens, "
        "output_tokens, cost_usd, status) VALUES ('2026-12-01T10:00:00.000000Z', "
        "'2026-12', '2026-12-01', 'acme', 'cloud', 'm', 100, 10, 0.5, 'ok')"
    )
    conn.close()
    with Ledger(path) as ledger:
        assert ledger.version == len(LEDGER_MIGRATIONS)
        assert ledger.spent(MONTH, "acme") == pytest.approx(0.5)
        rid = write_ahead.begin(ledger, started())
        write_ahead.finish(ledger, rid, finished(status="error", error_kind="timeout"))
        total = build_report(ledger, MONTH).total
        assert (total.requests, total.ok, total.errors) == (2, 1, 1)
        assert total.cost_usd == pytest.approx(0.5 + 0.00218)


def test_a_full_database_says_so_and_keeps_earlier_rows(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with Ledger(path) as ledger:
        for _ in range(5):
            ledger.record(finished())
        pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
        # The size limit SQLite enforces, as a full disk would: no room for more pages.
        ledger.conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(DatabaseFull) as caught:
            ledger.record_many([finished(project="x" * 2000) for _ in range(200)])
        message = str(caught.value)
        assert message.startswith(f"{path}: cannot write, the disk is full")
        assert "\n" not in message
        assert ledger.count() == 5  # the failed write rolled back whole
    with Ledger(path) as ledger:
        assert ledger.count() == 5


def test_a_database_in_a_read_only_place_says_so(tmp_path: Path) -> None:
    # A parent that is a regular file: not writable even for root (chmod would be bypassed).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(DatabaseReadOnly, match="cannot create or open the database"):
        Ledger(blocker / "db.sqlite3")


def test_a_read_only_database_file_says_so_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(finished())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    # query_only refuses writes for root too; it stands in for a read-only mount.
    conn.execute("PRAGMA query_only = ON")
    from pricing.db import transaction

    with pytest.raises(DatabaseReadOnly, match="read-only"):
        with transaction(conn):
            conn.execute("DELETE FROM ledger")
    conn.close()
    with Ledger(path) as ledger:
        assert ledger.count() == 1


def corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "header":
        data[0:16] = b"not sqlite at all"[:16]
    elif how == "truncated":
        data = data[: len(data) // 2 + 100]
    elif how == "pages":
        page = int.from_bytes(data[16:18], "big")
        for start in range(page, len(data), page):  # every page after the schema's
            data[start + 8 : start + 200] = os.urandom(192)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["header", "truncated", "pages"])
def test_a_damaged_database_is_found_when_opened(tmp_path: Path, how: str) -> None:
    path = tmp_path / "db.sqlite3"
    with Ledger(path) as ledger:
        ledger.record_many([finished() for _ in range(300)])
        ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt(path, how)
    with pytest.raises(DatabaseDamaged) as caught:
        Ledger(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: the database is damaged (")
    assert "ds4router db repair" in message and "\n" not in message
