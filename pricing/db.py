"""The one SQLite database: how to open it and how components migrate their tables.

:func:`connect` opens (creating if needed) the database file with mode 0600 from
the start, WAL journaling (readers never block the writer), ``foreign_keys=ON``
and a busy timeout, so two processes (the TUI and a one-shot ``ask``) can
append at once: a writer waits for the other's short transaction instead of
failing with "database is locked".

:func:`apply_migrations` gives each component (``ledger``, ``history`` ...)
its own schema version in ``schema_versions(component, version)``; a
component's migrations are an ordered list of SQL steps and only the missing
ones run, in one transaction. The ledger's version is mirrored in
``PRAGMA user_version`` (DESIGN.md), and a database that only has
``user_version`` (written before ``schema_versions`` existed) is adopted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pricing.errors import PricingError

BUSY_TIMEOUT_MS = 30_000

Step = str | Callable[[sqlite3.Connection], None]


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database at ``path`` (file mode 0600, WAL, foreign keys, busy timeout).

    The connection is in autocommit mode; use :func:`transaction` for writes.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise PricingError(f"no database at {path}")
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        _create_private(path)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PricingError(
                    f"{path}: SQLite could not switch to WAL mode (got {mode}); "
                    "put the database on a local disk (set DS4ROUTER_DB)"
                )
            # WAL makes NORMAL durable against application crashes; only a power
            # cut can lose the last transactions, which is fine for a cost log.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise PricingError(f"{path} is not a usable SQLite database: {exc}") from None
    return conn


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Create the file 0600 before SQLite opens it, so it is never readable by
    # others even for a moment (SQLite gives -wal/-shm the same mode).
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if os.name == "posix" and (path.stat().st_mode & 0o077):
        os.chmod(path, 0o600)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error).

    IMMEDIATE takes the write lock up front, so a second writer waits on the
    busy timeout rather than failing halfway through.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def split_statements(script: str) -> list[str]:
    """Split SQL text into complete statements (triggers and quoted ';' kept whole)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise PricingError(f"incomplete SQL statement in a migration: {buffer.strip()[:60]!r}")
    return statements


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    _ensure_versions_table(conn)
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def apply_migrations(
    conn: sqlite3.Connection,
    component: str,
    steps: Sequence[Step],
    *,
    mirror_user_version: bool = False,
) -> int:
    """Bring ``component``'s tables to version ``len(steps)``; returns that version.

    ``steps[i]`` migrates version ``i`` to ``i + 1``: SQL text (one or more
    statements) or a function of the connection. Steps never change once
    released; new ones are appended. A database newer than this code is refused.
    """
    with transaction(conn):
        _ensure_versions_table(conn)
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        if row is not None:
            current = int(row[0])
        elif mirror_user_version:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        else:
            current = 0
        if current > len(steps):
            raise PricingError(
                f"the database's {component} tables are version {current}, newer than this "
                f"ds4router understands ({len(steps)}); upgrade ds4router"
            )
        for step in steps[current:]:
            if callable(step):
                step(conn)
            else:
                for statement in split_statements(step):
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
            "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            (component, len(steps)),
        )
        if mirror_user_version:
            conn.execute(f"PRAGMA user_version = {int(len(steps))}")
    return len(steps)


def _ensure_versions_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY,"
        " version INTEGER NOT NULL CHECK (version >= 0))"
    )
