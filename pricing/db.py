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

Faults become one actionable line (:func:`database_error`): a damaged file
(:class:`DatabaseDamaged`, found by :func:`health_check` when it is opened, before
any request is sent), a full disk or size limit (:class:`DatabaseFull`), a
read-only file or directory (:class:`DatabaseReadOnly`), and a lock that outlasts
the busy timeout and its retries (:class:`DatabaseBusy`). SQLite hands some
lock conflicts back at once instead of waiting (switching to WAL, recovering a
WAL after a crash), so taking the write lock is retried with a short backoff.
A failed write rolls back whole: earlier rows are never lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from pricing.errors import PricingError

BUSY_TIMEOUT_MS = 30_000
# Retries of a lock SQLite refused without waiting; backoff doubles from 10 ms to 0.5 s.
BUSY_RETRIES = 40
# Databases up to this size get a full ``PRAGMA quick_check`` when opened (~30 ms
# per 10 MiB); larger ones get the header, size and schema checks only.
QUICK_CHECK_MAX_BYTES = 32 * 1024 * 1024
_HEADER = b"SQLite format 3\x00"

# SQLite's primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


class DatabaseError(PricingError):
    """The database cannot be used as it is; the message says which file and what to do."""


class DatabaseDamaged(DatabaseError):
    """The file is not a healthy SQLite database (corrupt pages, bad header, truncated)."""


class DatabaseFull(DatabaseError):
    """The disk (or the database's size limit) is full."""


class DatabaseReadOnly(DatabaseError):
    """The file or its directory cannot be written."""


class DatabaseBusy(DatabaseError):
    """Another process held the write lock past the busy timeout and the retries."""


def damaged(path: Path | str, detail: str) -> DatabaseDamaged:
    return DatabaseDamaged(
        f"{path}: the database is damaged ({detail}); run `ds4router db repair` "
        "(it keeps a backup and recovers what it can)"
    )


def database_error(exc: sqlite3.Error, path: Path | str) -> DatabaseError:
    """The one-line error for an ``sqlite3`` exception on the database at ``path``."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        return damaged(path, text)
    if primary == _FULL:
        return DatabaseFull(
            f"{path}: cannot write, the disk is full ({text}); free some space and try "
            "again (rows already written are kept)"
        )
    if primary in (_READONLY, _CANTOPEN) or (primary == _IOERR and not os.access(path, os.W_OK)):
        return DatabaseReadOnly(
            f"{path}: cannot write, the database or its directory is read-only ({text}); "
            "make it writable or set DS4ROUTER_DB to a writable file"
        )
    if primary in (_BUSY, _LOCKED):
        return DatabaseBusy(
            f"{path}: another ds4router process kept the database locked ({text}); "
            "try again when it is done"
        )
    return DatabaseError(f"{path}: the database failed ({text})")


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_BUSY, _LOCKED)


def retry_busy(action: Callable[[], T]) -> T:
    """``action()``, retried with backoff while SQLite answers busy or locked at once."""
    delay = 0.01
    for _ in range(BUSY_RETRIES):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    return action()


Step = str | Callable[[sqlite3.Connection], None]
T = TypeVar("T")


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database at ``path`` (file mode 0600, WAL, foreign keys, busy timeout),
    after :func:`health_check`; a fault is a :class:`DatabaseError` (one line).

    The connection is in autocommit mode; use :func:`transaction` for writes.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise PricingError(f"no database at {path}")
    else:
        _create_private(path)
    health_check(path)
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise database_error(exc, path) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            mode = retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise PricingError(
                    f"{path}: SQLite could not switch to WAL mode (got {mode}); "
                    "put the database on a local disk (set DS4ROUTER_DB)"
                )
            # WAL makes NORMAL durable against application crashes; only a power
            # cut can lose the last transactions, which is fine for a cost log.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _check_contents(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise database_error(exc, path) from None
    except BaseException:
        conn.close()
        raise
    return conn


def health_check(path: Path | str) -> None:
    """Cheap checks of the file before SQLite opens it: the header and the size the
    header promises (a truncated copy). Raises :class:`DatabaseDamaged`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatabaseReadOnly(f"{path}: cannot read the database ({exc.strerror})") from None
    if size == 0:
        return  # new: SQLite writes the header on the first transaction
    if len(header) < 100 or not header.startswith(_HEADER):
        raise damaged(path, "it does not start with an SQLite header")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid when the "version-valid-for" number matches the
    # change counter (SQLite's file format, section 1.3.7).
    # With a write-ahead log beside it, another process may be checkpointing: SQLite
    # writes page 1 (with the new count) before the pages after the old end, so the file
    # is briefly shorter than its header says. quick_check on open covers that case.
    if _wal_in_use(path):
        return
    if header[24:28] == header[92:96] and size < pages * page_size:
        raise damaged(path, f"the file is truncated: {size} bytes of {pages * page_size}")


def _wal_in_use(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _check_contents(conn: sqlite3.Connection, path: Path) -> None:
    """Read the schema (always) and run ``quick_check`` on databases small enough."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    try:
        small = path.stat().st_size <= QUICK_CHECK_MAX_BYTES
    except OSError:
        small = False
    if small:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise damaged(path, "; ".join(problems)[:200])


def _create_private(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file 0600 before SQLite opens it, so it is never readable by
        # others even for a moment (SQLite gives -wal/-shm the same mode).
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        if os.name == "posix" and (path.stat().st_mode & 0o077):
            os.chmod(path, 0o600)
    except OSError as exc:
        raise _os_error(exc, path) from None


def _os_error(exc: OSError, path: Path) -> DatabaseError:
    if exc.errno == errno.ENOSPC:
        return DatabaseFull(f"{path}: cannot create the database, the disk is full")
    return DatabaseReadOnly(
        f"{path}: cannot create or open the database ({exc.strerror}); make the directory "
        "writable or set DS4ROUTER_DB to a writable file"
    )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error).

    IMMEDIATE takes the write lock up front, so a second writer waits on the
    busy timeout rather than failing halfway through. SQLite errors (other than a
    broken constraint, a bug to see as it is) become :class:`DatabaseError`.
    """
    try:
        retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
    except sqlite3.Error as exc:
        raise database_error(exc, _file_of(conn)) from None
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
            raise database_error(exc, _file_of(conn)) from None
        raise


def _file_of(conn: sqlite3.Connection) -> str:
    try:
        row = conn.execute("PRAGMA database_list").fetchone()
    except sqlite3.Error:
        return "the database"
    return str(row[2]) if row is not None and row[2] else "the database"


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
