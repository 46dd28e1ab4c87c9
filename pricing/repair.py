"""Checking and repairing the database: ``ds4router db check`` and ``db repair``.

:func:`check` reads the whole file (``PRAGMA integrity_check``, not the quick
check done on every open), compares the monthly cube with the ledger rows it
sums (:func:`cube_disagreements`, also run by ``report``) and counts the rows
still ``started``.

:func:`repair` first copies the database (with its ``-wal``) to a dated backup
beside it, then:

- a healthy file whose cube disagrees with its rows: the cube is rebuilt from
  the rows, in one transaction;
- a damaged file: SQLite's own recovery (the ``.recover`` command of the sqlite3
  shell, which reads every page it can, row by row) writes what survives into a
  new file; where that shell is not installed, the tables are copied row by row
  with Python's sqlite3, skipping what cannot be read. A wrong header magic is
  written back first, so a file whose first bytes were overwritten is read too.
  The new file replaces the old one, and its cube is rebuilt from its rows.

The components' migrations run on the next open as usual (tables that were lost
are created again, empty).
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pricing.db import DatabaseError, health_check, transaction
from pricing.errors import PricingError
from pricing.ledger import CUBE_KEYS, CUBE_MEASURES_ALL

_MAGIC = b"SQLite format 3\x00"
# Cube measures compared with the rows in checks (the rest follow from the same triggers).
_COMPARED = ("requests", "input_tokens", "output_tokens", "cost_usd")


@dataclass(frozen=True)
class CheckResult:
    path: Path
    problems: tuple[str, ...]
    cube: tuple[str, ...]
    started: int

    @property
    def healthy(self) -> bool:
        return not self.problems and not self.cube


@dataclass(frozen=True)
class RepairResult:
    backup: Path
    recovered: bool  # the file was damaged and was rebuilt from what could be read
    method: str  # "cube" | "sqlite3 .recover" | "row by row"
    ledger_rows: int
    messages: int


def cube_disagreements(conn: sqlite3.Connection, month: str | None = None) -> list[str]:
    """Months where the cube's sums differ from the ledger rows' (empty: they agree)."""
    where, params = ("WHERE month = ?", (month,)) if month else ("", ())
    exprs = dict((name, expr.format(r="ledger")) for name, _, expr in CUBE_MEASURES_ALL)
    row_sums = ", ".join(f"TOTAL({exprs[name]})" for name in _COMPARED)
    cube_sums = ", ".join(f"TOTAL({name})" for name in _COMPARED)
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            f"SELECT month, {row_sums} FROM ledger {where} GROUP BY month", params
        )
    }
    cube = {
        r[0]: r[1:]
        for r in conn.execute(
            f"SELECT month, {cube_sums} FROM ledger_cube {where} GROUP BY month", params
        )
    }
    found = []
    for m in sorted(set(rows) | set(cube)):
        got, want = cube.get(m, (0.0,) * len(_COMPARED)), rows.get(m, (0.0,) * len(_COMPARED))
        diffs = [
            f"{name} {g:g} in the summary, {w:g} in the rows"
            for name, g, w in zip(_COMPARED, got, want, strict=True)
            if abs(g - w) > 1e-9 * max(1.0, abs(w))
        ]
        if diffs:
            found.append(f"{m}: " + ", ".join(diffs))
    return found


def check(path: Path) -> CheckResult:
    """Read the whole database; what is wrong with it (nothing: ``healthy``)."""
    if not path.exists():
        raise PricingError(f"no database at {path} yet; nothing to check")
    try:
        health_check(path)
    except DatabaseError as exc:
        return CheckResult(path, (str(exc),), (), 0)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
        if problems != ["ok"]:
            return CheckResult(path, tuple(problems), (), 0)
        tables = _tables(conn)
        if not {"ledger", "ledger_cube"} <= tables:
            return CheckResult(path, (), (), 0)
        cube = tuple(cube_disagreements(conn))
        started = conn.execute("SELECT COUNT(*) FROM ledger WHERE status = 'started'").fetchone()
        return CheckResult(path, (), cube, int(started[0]))
    except sqlite3.DatabaseError as exc:
        return CheckResult(path, (str(exc),), (), 0)
    finally:
        conn.close()


def rebuild_cube(conn: sqlite3.Connection) -> None:
    """The cube summed anew from the ledger rows (one transaction)."""
    keys = ", ".join(name for name, _ in CUBE_KEYS)
    names = ", ".join(name for name, _, _ in CUBE_MEASURES_ALL)
    key_exprs = ", ".join(expr.format(r="ledger") for _, expr in CUBE_KEYS)
    sums = ", ".join(
        f"{'SUM' if kind == 'INTEGER' else 'TOTAL'}({expr.format(r='ledger')})"
        for _, kind, expr in CUBE_MEASURES_ALL
    )
    with transaction(conn):
        conn.execute("DELETE FROM ledger_cube")
        conn.execute(
            f"INSERT INTO ledger_cube ({keys}, {names}) "
            f"SELECT {key_exprs}, {sums} FROM ledger GROUP BY {key_exprs}"
        )


def repair(path: Path, *, sqlite_shell: str | None = "sqlite3") -> RepairResult:
    """Back the database up, then repair it (see the module docstring).

    ``sqlite_shell``: the sqlite3 shell to recover with (None: Python only).
    Close other ds4router processes first: the file is replaced.
    """
    if not path.exists():
        raise PricingError(f"no database at {path}; nothing to repair")
    backup = _backup(path)
    damaged = bool(check(path).problems)
    method = "cube"
    if damaged:
        method = _recover(path, backup, shutil.which(sqlite_shell) if sqlite_shell else None)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        tables = _tables(conn)
        if {"ledger", "ledger_cube"} <= tables:
            rebuild_cube(conn)
        ledger_rows = _count(conn, "ledger", tables)
        messages = _count(conn, "messages", tables)
    finally:
        conn.close()
    return RepairResult(backup, damaged, method, ledger_rows, messages)


def _backup(path: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    try:
        for suffix in ("", "-wal"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                shutil.copyfile(source, f"{backup}{suffix}")
                Path(f"{backup}{suffix}").chmod(0o600)
    except OSError as exc:
        raise PricingError(
            f"cannot back up {path} to {backup} ({exc.strerror}); nothing was changed"
        ) from None
    return backup


def _recover(path: Path, backup: Path, shell: str | None) -> str:
    """Write what can be read of ``backup`` into a new file that replaces ``path``."""
    work = path.with_name(path.name + ".reading")
    fresh = path.with_name(path.name + ".recovered")
    for leftover in (work, fresh, Path(f"{work}-wal"), Path(f"{fresh}-wal")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(backup, work)
    if Path(f"{backup}-wal").exists():
        shutil.copyfile(f"{backup}-wal", f"{work}-wal")
    _restore_magic(work)
    _pad_to_header_size(work)
    try:
        if shell is not None:
            dump = subprocess.run(
                [shell, str(work), ".recover"], capture_output=True, text=True, timeout=600
            )
            load = subprocess.run(
                [shell, str(fresh)], input=dump.stdout, capture_output=True, text=True, timeout=600
            )
            method = "sqlite3 .recover"
            if dump.returncode != 0 or load.returncode != 0 or not fresh.exists():
                fresh.unlink(missing_ok=True)
                _copy_rows(work, fresh)
                method = "row by row"
        else:
            _copy_rows(work, fresh)
            method = "row by row"
        fresh.chmod(0o600)
        for stale in ("-wal", "-shm"):
            Path(f"{path}{stale}").unlink(missing_ok=True)
        fresh.replace(path)
    finally:
        for leftover in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            leftover.unlink(missing_ok=True)
    return method


def _restore_magic(path: Path) -> None:
    with path.open("r+b") as fh:
        head = fh.read(len(_MAGIC))
        if len(head) == len(_MAGIC) and head != _MAGIC:
            fh.seek(0)
            fh.write(_MAGIC)


def _pad_to_header_size(path: Path) -> None:
    """Zero pages up to the size the header gives: a truncated copy then opens, and
    the missing pages read as damaged ones, which recovery skips."""
    with path.open("r+b") as fh:
        header = fh.read(100)
        if len(header) < 100:
            return
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        want = int.from_bytes(header[28:32], "big") * page_size
        size = fh.seek(0, 2)
        if size < want:
            fh.truncate(want)  # extends with zero bytes


def _copy_rows(source: Path, target: Path) -> None:
    """The schema and every readable row of ``source`` into a new ``target``."""
    old = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    new = sqlite3.connect(str(target), isolation_level=None)
    try:
        try:
            schema = old.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'table' DESC"
            ).fetchall()
        except sqlite3.DatabaseError:
            schema = []  # the schema itself is lost: the migrations start afresh
        for kind, _, sql in schema:
            if kind == "table":
                new.execute(sql)
        for kind, name, _ in schema:
            if kind == "table":
                _copy_table(old, new, name)
        for kind, _, sql in schema:
            if kind in ("index", "trigger"):
                new.execute(sql)
    finally:
        old.close()
        new.close()


def _copy_table(old: sqlite3.Connection, new: sqlite3.Connection, name: str) -> None:
    """Rows of ``name`` from the front until a damaged page, then from the back."""
    seen: set[int] = set()
    new.execute("BEGIN")
    for order in ("ASC", "DESC"):
        try:
            for row in old.execute(f'SELECT rowid, * FROM "{name}" ORDER BY rowid {order}'):
                if row[0] in seen:
                    break
                seen.add(row[0])
                marks = ", ".join("?" for _ in row[1:])
                new.execute(f'INSERT OR IGNORE INTO "{name}" VALUES ({marks})', row[1:])
        except sqlite3.DatabaseError:
            continue
    new.execute("COMMIT")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _count(conn: sqlite3.Connection, table: str, tables: set[str]) -> int:
    if table not in tables:
        return 0
    return int(conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])


__all__ = ["CheckResult", "RepairResult", "check", "cube_disagreements", "rebuild_cube", "repair"]
