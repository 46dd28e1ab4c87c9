"""``ds4router db check|repair`` and ``report``'s check of the summary, on real damaged files.

Each test fills a real database, damages it the way disks and copies do (a tampered
summary table, overwritten header bytes, random bytes over pages, a truncated copy),
and runs the real CLI in a subprocess: what it prints, its exit code, and the rows
that are there afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pricing.ledger import Ledger, LedgerRow
from pricing.repair import check, repair

REPO = Path(__file__).resolve().parents[2]
MONTH = dt.datetime.now(dt.UTC).strftime("%Y-%m")
ROWS = 400


def fill(path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [
        LedgerRow(
            time=now,
            project="acme",
            route="cloud",
            model="openai/gpt-4.1",
            input_tokens=100 + i,
            output_tokens=10,
            cost_usd=0.001,
        )
        for i in range(ROWS)
    ]
    with Ledger(path) as ledger:
        ledger.record_many(rows)
        ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def ds4(db: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS4ROUTER_DB": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "ds4router", *argv],
        capture_output=True,
        text=True,
        cwd=db.parent,
        env=env,
        timeout=300,
    )


def ledger_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ds4router.sqlite3"
    fill(path)
    return path


def test_a_healthy_database_checks_clean(db: Path) -> None:
    out = ds4(db, "db", "check")
    assert (out.returncode, out.stdout.strip()) == (0, f"{db}: healthy")


def test_a_wrong_summary_is_reported_and_rebuilt_from_the_rows(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER ledger_cube_update")  # as if the summary had drifted
    conn.execute("UPDATE ledger_cube SET cost_usd = cost_usd + 5, requests = requests + 3")
    conn.commit()
    conn.close()

    report = ds4(db, "report", "--format", "json")
    assert report.returncode == 0, report.stderr
    assert report.stderr.startswith("warning: the summary table disagrees with the ledger rows")
    assert "db repair" in report.stderr
    assert f'"requests": {ROWS}' in report.stdout  # summed from the rows, not the summary

    checked = ds4(db, "db", "check")
    assert checked.returncode == 1
    assert f"summary disagrees with the ledger rows: {MONTH}: requests {ROWS + 3:g}" in (
        checked.stdout
    )

    repaired = ds4(db, "db", "repair")
    assert repaired.returncode == 0, repaired.stderr
    backup = Path(repaired.stdout.splitlines()[0].removeprefix("backup: "))
    assert backup.exists() and backup.parent == db.parent
    assert ds4(db, "db", "check").returncode == 0
    again = ds4(db, "report", "--format", "json")
    assert again.stderr == "" and f'"requests": {ROWS}' in again.stdout


def overwrite(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    if how == "header":
        data[0:16] = b"\xde\xad\xbe\xef" * 4
    elif how == "pages":
        # Random bytes over two pages in the middle of the ledger's b-tree.
        middle = (len(data) // page // 2) * page
        data[middle : middle + 2 * page] = os.urandom(2 * page)
    elif how == "truncated":
        data = data[: (len(data) // page // 2) * page + 300]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["header", "pages", "truncated"])
def test_a_damaged_database_is_refused_then_repaired_keeping_what_can_be_read(
    db: Path, how: str
) -> None:
    overwrite(db, how)
    for argv in (("report",), ("history", "list", "--all")):
        out = ds4(db, *argv)
        assert out.returncode == 2, out
        assert out.stderr.startswith(f"error: {db}: the database is damaged (")
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    checked = ds4(db, "db", "check")
    assert checked.returncode == 1 and "damaged: " in checked.stdout

    repaired = ds4(db, "db", "repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "recovered" in repaired.stdout and "Traceback" not in repaired.stderr
    kept = ledger_count(db)
    if how == "header":
        assert kept == ROWS  # only the magic was hit: every row comes back
    else:
        assert 0 < kept < ROWS
    assert ds4(db, "db", "check").returncode == 0
    report = ds4(db, "report", "--format", "json")
    assert report.returncode == 0 and report.stderr == ""
    assert f'"requests": {kept}' in report.stdout


def test_repair_without_the_sqlite3_shell_copies_rows_around_a_damaged_page(db: Path) -> None:
    overwrite(db, "pages")
    assert check(db).problems
    result = repair(db, sqlite_shell=None)
    assert result.recovered and result.method == "row by row"
    assert 0 < result.ledger_rows < ROWS
    assert check(db).healthy
    with Ledger(db) as ledger:  # migrations and the summary work on the repaired file
        assert ledger.count() == result.ledger_rows
        assert ledger.usage_totals(MONTH)[0] == result.ledger_rows
