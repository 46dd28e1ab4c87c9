"""Ledger migration v6: write-ahead rows.

A request's row is written (status ``started``) before anything is sent and
updated when it ends; a process that dies leaves it, and the next start marks it
``interrupted`` (:mod:`pricing.recovery`). SQLite cannot change a column's CHECK
in place, so the table is rebuilt the way SQLite documents (new table, copy,
drop, rename), with three new columns naming the process that wrote the row
(``pid``, ``process_mark``, ``host``), a partial index of the ``started`` rows
(the recovery reads those alone), and the cube counting the two new statuses.

This step is released: never edit it; add a new step instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

# Every column of the v5 table, in its order (id first), then v6's.
_V5_COLUMNS = """
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    month TEXT NOT NULL,
    day TEXT NOT NULL,
    project TEXT NOT NULL,
    conversation_id TEXT,
    route TEXT NOT NULL CHECK (route IN ('local', 'cloud', 'refused')),
    provider TEXT,
    model TEXT,
    rule TEXT,
    privacy TEXT,
    task TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    cached_input_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    output_tokens INTEGER NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    reasoning_tokens INTEGER NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    ttft_s REAL,
    duration_s REAL,
    tok_s REAL,
    energy_j REAL,
    energy_source TEXT,
    cost_usd REAL,
    cost_input_usd REAL,
    cost_cached_input_usd REAL,
    cost_output_usd REAL,
    cost_reasoning_usd REAL,
    cost_electricity_usd REAL,
    cost_amortization_usd REAL,
    counterfactual_usd REAL,
    reference_model TEXT,
    price_sheet TEXT,
    price_as_of TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'cancelled', 'started', 'interrupted')),
    error_kind TEXT,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    cost_cache_write_usd REAL,
    rate_input REAL,
    rate_cached_input REAL,
    rate_cache_write REAL,
    rate_output REAL,
    rate_reasoning REAL,
    usage_estimated INTEGER NOT NULL DEFAULT 0 CHECK (usage_estimated IN (0, 1)),
    cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cache_write_1h_tokens >= 0),
    rate_cache_write_1h REAL,
    price_tier TEXT,
    price_window TEXT,
    origin TEXT,
    origin_id TEXT"""
_V6_COLUMNS = """,
    pid INTEGER,
    process_mark TEXT,
    host TEXT"""

# The measures v6 adds to the cube (released: never edit).
MEASURES_V6: tuple[tuple[str, str, str], ...] = (
    ("started", "INTEGER", "{r}.status = 'started'"),
    ("interrupted", "INTEGER", "{r}.status = 'interrupted'"),
)

CubeUpsert = Callable[[str, str, tuple[tuple[str, str, str], ...]], str]


def migrate(
    conn: sqlite3.Connection,
    cube_upsert: CubeUpsert,
    earlier: tuple[tuple[str, str, str], ...],
) -> None:
    """Rebuild ``ledger`` with the v6 statuses and columns, inside the migration's
    transaction. ``cube_upsert`` writes one trigger body and ``earlier`` are the
    cube's measures up to v5 (both from ``pricing.ledger``)."""
    measures = earlier + MEASURES_V6
    names = [row[1] for row in conn.execute("PRAGMA table_info(ledger)")]
    columns = ", ".join(names)
    for trigger in ("ledger_cube_insert", "ledger_cube_delete", "ledger_cube_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    conn.execute(f"CREATE TABLE ledger_v6 ({_V5_COLUMNS}{_V6_COLUMNS})")
    conn.execute(f"INSERT INTO ledger_v6 ({columns}) SELECT {columns} FROM ledger")
    conn.execute("DROP TABLE ledger")
    conn.execute("ALTER TABLE ledger_v6 RENAME TO ledger")
    conn.execute("CREATE INDEX ledger_month ON ledger(month)")
    conn.execute("CREATE INDEX ledger_month_project ON ledger(month, project)")
    conn.execute(
        "CREATE UNIQUE INDEX ledger_origin_id ON ledger(origin, origin_id) "
        "WHERE origin_id IS NOT NULL"
    )
    conn.execute("CREATE INDEX ledger_started ON ledger(id) WHERE status = 'started'")
    for name, kind, _ in MEASURES_V6:
        # No row had these statuses before v6, so 0 is every cell's true value.
        conn.execute(f"ALTER TABLE ledger_cube ADD COLUMN {name} {kind} NOT NULL DEFAULT 0")
    bodies = {
        "insert": cube_upsert("NEW", "+", measures),
        "delete": cube_upsert("OLD", "-", measures),
        "update": cube_upsert("OLD", "-", measures) + "\n" + cube_upsert("NEW", "+", measures),
    }
    for event, body in bodies.items():
        conn.execute(
            f"CREATE TRIGGER ledger_cube_{event} AFTER {event.upper()} ON ledger BEGIN\n{body}\nEND"
        )
