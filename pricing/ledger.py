"""The cost ledger: one row per request, in the shared SQLite database.

A row says where a request went and why (route, model, rule, privacy level,
task), how it went (tokens, time to first token, duration, tok/s, status,
error kind), what it cost (total and parts: input/cached/cache-write/output/
reasoning for cloud, electricity/amortization for local; NULL when unpriced),
the counterfactual cost on the project's reference model, and which prices
were used (sheet, as-of date and the rates), so a month can be re-priced later.
``usage_estimated`` marks a row whose token counts were counted afterwards, not
reported by the provider or engine that ran it (see :class:`TokenUsage`): its
token figures, and the costs priced from them, are estimates.

It never holds prompt or answer text: the only free-form field, ``error_kind``,
must be a short identifier (``timeout``, ``rate_limit``), not an error message
that could quote a secret.

Times are stored in UTC; ``month`` and ``day`` are UTC too, like provider bills.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pricing.cost import CloudCost
from pricing.db import Step, apply_migrations, connect, transaction
from pricing.errors import PricingError
from pricing.ledger_v6 import MEASURES_V6
from pricing.ledger_v6 import migrate as migrate_v6
from pricing.local_cost import LocalCost
from pricing.recovery import recover_interrupted
from pricing.usage import TokenUsage

ROUTES = ("local", "cloud", "refused")
STATUSES = ("ok", "error", "cancelled", "started", "interrupted")
# A request ends in one of these; ``started`` is the write-ahead row of one still
# running (or of a process that died: ``pricing.recovery`` marks it ``interrupted``).
FINAL_STATUSES = ("ok", "error", "cancelled", "interrupted")
_ERROR_KIND = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

# The monthly cube: the ledger summed by month x project x route x model x task x
# day x reference model, kept up to date by triggers on every insert, update and
# delete, so reports, budgets and the estimator read a few thousand cells instead
# of scanning a million rows. These tuples define the released migration v3:
# never edit them; add a new step instead.
CUBE_KEYS: tuple[tuple[str, str], ...] = (
    ("month", "{r}.month"),
    ("project", "{r}.project"),
    ("route", "{r}.route"),
    ("model", "COALESCE({r}.model, '')"),
    ("task", "COALESCE({r}.task, '')"),
    ("day", "{r}.day"),
    ("reference_model", "COALESCE({r}.reference_model, '')"),
)
CUBE_MEASURES: tuple[tuple[str, str, str], ...] = (
    ("requests", "INTEGER", "1"),
    ("ok", "INTEGER", "{r}.status = 'ok'"),
    ("errors", "INTEGER", "{r}.status = 'error'"),
    ("cancelled", "INTEGER", "{r}.status = 'cancelled'"),
    ("input_tokens", "INTEGER", "{r}.input_tokens"),
    ("cached_input_tokens", "INTEGER", "{r}.cached_input_tokens"),
    ("cache_write_tokens", "INTEGER", "{r}.cache_write_tokens"),
    ("output_tokens", "INTEGER", "{r}.output_tokens"),
    ("reasoning_tokens", "INTEGER", "{r}.reasoning_tokens"),
    ("cost_usd", "REAL", "COALESCE({r}.cost_usd, 0.0)"),
    # Refused requests ran nothing: never unpriced, whatever their cost column says.
    ("unpriced_requests", "INTEGER", "({r}.cost_usd IS NULL AND {r}.route != 'refused')"),
    ("electricity_usd", "REAL", "COALESCE({r}.cost_electricity_usd, 0.0)"),
    ("amortization_usd", "REAL", "COALESCE({r}.cost_amortization_usd, 0.0)"),
    ("counterfactual_usd", "REAL", "COALESCE({r}.counterfactual_usd, 0.0)"),
    ("savings_usd", "REAL", "COALESCE({r}.counterfactual_usd - {r}.cost_usd, 0.0)"),
    ("energy_j", "REAL", "COALESCE({r}.energy_j, 0.0)"),
    ("duration_s", "REAL", "COALESCE({r}.duration_s, 0.0)"),
)
# Migration v4 adds these measures to the cube (the v3 tuples above stay as released).
CUBE_MEASURES_V4: tuple[tuple[str, str, str], ...] = (
    # Rows whose token counts were estimated: their tokens and counterfactual are estimates.
    ("estimated_requests", "INTEGER", "{r}.usage_estimated"),
    # Of those, cloud rows: their cost was priced from estimated tokens too (a local
    # row's cost comes from energy and time, not tokens).
    ("estimated_cloud_requests", "INTEGER", "({r}.usage_estimated AND {r}.route = 'cloud')"),
)
# Migration v6 (write-ahead rows, pricing.ledger_v6) counts the two new statuses apart.
CUBE_MEASURES_V6 = MEASURES_V6
# The cube's measures today, in column order (reports read them in this order).
CUBE_MEASURES_ALL: tuple[tuple[str, str, str], ...] = (
    CUBE_MEASURES + CUBE_MEASURES_V4 + CUBE_MEASURES_V6
)


def _cube_upsert(
    row: str, sign: str, measures: tuple[tuple[str, str, str], ...] = CUBE_MEASURES
) -> str:
    keys = ", ".join(name for name, _ in CUBE_KEYS)
    names = ", ".join(name for name, _, _ in measures)
    key_values = ", ".join(expr.format(r=row) for _, expr in CUBE_KEYS)
    values = ", ".join(f"{sign}({expr.format(r=row)})" for _, _, expr in measures)
    updates = ", ".join(f"{name} = {name} + excluded.{name}" for name, _, _ in measures)
    return (
        f"INSERT INTO ledger_cube ({keys}, {names}) VALUES ({key_values}, {values}) "
        f"ON CONFLICT ({keys}) DO UPDATE SET {updates};"
    )


def _cube_migration() -> str:
    keys = ", ".join(name for name, _ in CUBE_KEYS)
    columns = ",\n".join(
        [f"    {name} TEXT NOT NULL" for name, _ in CUBE_KEYS]
        + [f"    {name} {kind} NOT NULL DEFAULT 0" for name, kind, _ in CUBE_MEASURES]
    )
    names = ", ".join(name for name, _, _ in CUBE_MEASURES)
    key_exprs = ", ".join(expr.format(r="ledger") for _, expr in CUBE_KEYS)
    sums = ", ".join(
        f"{'SUM' if kind == 'INTEGER' else 'TOTAL'}({expr.format(r='ledger')})"
        for _, kind, expr in CUBE_MEASURES
    )
    return f"""
    CREATE TABLE ledger_cube (
{columns},
    PRIMARY KEY ({keys})
    ) WITHOUT ROWID;
    INSERT INTO ledger_cube ({keys}, {names})
        SELECT {key_exprs}, {sums} FROM ledger GROUP BY {key_exprs};
    CREATE TRIGGER ledger_cube_insert AFTER INSERT ON ledger BEGIN
        {_cube_upsert("NEW", "+")}
    END;
    CREATE TRIGGER ledger_cube_delete AFTER DELETE ON ledger BEGIN
        {_cube_upsert("OLD", "-")}
    END;
    CREATE TRIGGER ledger_cube_update AFTER UPDATE ON ledger BEGIN
        {_cube_upsert("OLD", "-")}
        {_cube_upsert("NEW", "+")}
    END;
    """


def _estimated_migration() -> str:
    """v4: ``usage_estimated`` on rows, its counts in the cube, the triggers redone.

    Every row written before v4 had its usage reported (nothing marked it otherwise),
    so the new columns' default 0 is their true value and nothing needs re-summing.
    """
    all_ = CUBE_MEASURES + CUBE_MEASURES_V4  # as released: not the later measures
    columns = "\n".join(
        f"    ALTER TABLE ledger_cube ADD COLUMN {name} {kind} NOT NULL DEFAULT 0;"
        for name, kind, _ in CUBE_MEASURES_V4
    )
    return f"""
    ALTER TABLE ledger ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0
        CHECK (usage_estimated IN (0, 1));
{columns}
    DROP TRIGGER ledger_cube_insert;
    DROP TRIGGER ledger_cube_delete;
    DROP TRIGGER ledger_cube_update;
    CREATE TRIGGER ledger_cube_insert AFTER INSERT ON ledger BEGIN
        {_cube_upsert("NEW", "+", all_)}
    END;
    CREATE TRIGGER ledger_cube_delete AFTER DELETE ON ledger BEGIN
        {_cube_upsert("OLD", "-", all_)}
    END;
    CREATE TRIGGER ledger_cube_update AFTER UPDATE ON ledger BEGIN
        {_cube_upsert("OLD", "-", all_)}
        {_cube_upsert("NEW", "+", all_)}
    END;
    """


# Forward migrations of the ledger table; released steps never change.
LEDGER_MIGRATIONS: tuple[Step, ...] = (
    # v1: the first layout.
    """
    CREATE TABLE ledger (
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
        status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
        error_kind TEXT
    );
    CREATE INDEX ledger_month ON ledger(month);
    """,
    # v2: cache-write tokens and their cost, the rates used (to re-price later),
    # and an index for per-project months.
    """
    ALTER TABLE ledger ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0
        CHECK (cache_write_tokens >= 0);
    ALTER TABLE ledger ADD COLUMN cost_cache_write_usd REAL;
    ALTER TABLE ledger ADD COLUMN rate_input REAL;
    ALTER TABLE ledger ADD COLUMN rate_cached_input REAL;
    ALTER TABLE ledger ADD COLUMN rate_cache_write REAL;
    ALTER TABLE ledger ADD COLUMN rate_output REAL;
    ALTER TABLE ledger ADD COLUMN rate_reasoning REAL;
    CREATE INDEX ledger_month_project ON ledger(month, project);
    """,
    # v3: the monthly cube and its triggers (see CUBE_KEYS), filled from existing rows.
    _cube_migration(),
    # v4: whether a row's token counts were estimated (CUBE_MEASURES_V4).
    _estimated_migration(),
    # v5: 1-hour cache writes and their rate; the prompt-size tier and time-of-day window
    # whose rates applied; rows imported from an agent's logs (origin, the log's own id,
    # unique so that importing the same log twice adds nothing).
    """
    ALTER TABLE ledger ADD COLUMN cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0
        CHECK (cache_write_1h_tokens >= 0);
    ALTER TABLE ledger ADD COLUMN rate_cache_write_1h REAL;
    ALTER TABLE ledger ADD COLUMN price_tier TEXT;
    ALTER TABLE ledger ADD COLUMN price_window TEXT;
    ALTER TABLE ledger ADD COLUMN origin TEXT;
    ALTER TABLE ledger ADD COLUMN origin_id TEXT;
    CREATE UNIQUE INDEX ledger_origin_id ON ledger(origin, origin_id)
        WHERE origin_id IS NOT NULL;
    """,
    # v6: write-ahead rows (statuses started/interrupted, the writing process), see
    # pricing.ledger_v6.
    lambda conn: migrate_v6(conn, _cube_upsert, CUBE_MEASURES + CUBE_MEASURES_V4),
    # v7: a cloud request sent with its detector findings replaced by placeholders
    # (privacy.on_detected: redact), and how many.
    """
    ALTER TABLE ledger ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0
        CHECK (redacted IN (0, 1));
    ALTER TABLE ledger ADD COLUMN redacted_findings INTEGER NOT NULL DEFAULT 0
        CHECK (redacted_findings >= 0);
    """,
    # v8: the client that sent a request through the gateway (a key's name, an agent).
    """
    ALTER TABLE ledger ADD COLUMN client TEXT;
    CREATE INDEX ledger_month_client ON ledger(month, client);
    """,
)


@dataclass(frozen=True)
class LedgerRow:
    """One request as the ledger keeps it (no prompt text, no secret)."""

    time: dt.datetime
    project: str
    route: str
    status: str = "ok"
    conversation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    rule: str | None = None
    privacy: str | None = None
    task: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    ttft_s: float | None = None
    duration_s: float | None = None
    tok_s: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    cost_usd: float | None = None
    cost_input_usd: float | None = None
    cost_cached_input_usd: float | None = None
    cost_cache_write_usd: float | None = None
    cost_output_usd: float | None = None
    cost_reasoning_usd: float | None = None
    cost_electricity_usd: float | None = None
    cost_amortization_usd: float | None = None
    counterfactual_usd: float | None = None
    reference_model: str | None = None
    price_sheet: str | None = None
    price_as_of: str | None = None
    rate_input: float | None = None
    rate_cached_input: float | None = None
    rate_cache_write: float | None = None
    rate_output: float | None = None
    rate_reasoning: float | None = None
    error_kind: str | None = None
    usage_estimated: bool = False
    cache_write_1h_tokens: int = 0
    rate_cache_write_1h: float | None = None
    price_tier: str | None = None
    price_window: str | None = None
    # Where an imported row came from (``claude-code``, ``codex``) and its id there;
    # None for requests ds4router ran.
    origin: str | None = None
    origin_id: str | None = None
    # The process that wrote a ``started`` row (pid, its start mark, the host), so a
    # later start can tell a running request from one whose process died.
    pid: int | None = None
    process_mark: str | None = None
    host: str | None = None
    # Sent to a cloud model with this many detector findings replaced by placeholders.
    redacted: bool = False
    redacted_findings: int = 0
    # Who sent it through ``ds4router serve`` (None: the TUI or ``ask``).
    client: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.time, dt.datetime):
            raise PricingError(f"ledger time must be a datetime, got {self.time!r}")
        if self.time.tzinfo is None:
            # A naive time is local wall-clock time; store it as UTC.
            object.__setattr__(self, "time", self.time.astimezone(dt.UTC))
        if not self.project:
            raise PricingError("a ledger row needs a project name")
        if self.route not in ROUTES:
            raise PricingError(f"route must be one of {', '.join(ROUTES)}, got {self.route!r}")
        if self.status not in STATUSES:
            raise PricingError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.error_kind is not None and not _ERROR_KIND.match(self.error_kind):
            raise PricingError(
                f"error_kind must be a short identifier like 'timeout' (never an error "
                f"message, which could quote a secret); got {self.error_kind[:40]!r}"
            )
        if not isinstance(self.usage_estimated, bool):
            raise PricingError(
                f"usage_estimated must be True or False, got {self.usage_estimated!r}"
            )
        TokenUsage(  # the same token rules as everywhere (cached within input, ...)
            self.input_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
        )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise PricingError(f"ledger {f.name} must be a finite number, got {value!r}")

    @property
    def usage(self) -> TokenUsage:
        return TokenUsage(
            self.input_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            estimated=self.usage_estimated,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
        )

    @property
    def month(self) -> str:
        return self.time.astimezone(dt.UTC).strftime("%Y-%m")

    @property
    def day(self) -> str:
        return self.time.astimezone(dt.UTC).strftime("%Y-%m-%d")

    # --- builders for the three routes ------------------------------------------

    @classmethod
    def for_cloud(
        cls,
        *,
        time: dt.datetime,
        project: str,
        cost: CloudCost,
        provider: str | None = None,
        counterfactual: CloudCost | None = None,
        **extra: Any,
    ) -> LedgerRow:
        """A cloud request: tokens, cost parts and rates from ``cost``."""
        rates = cost.rates
        return cls(
            time=time,
            project=project,
            route="cloud",
            provider=provider,
            model=cost.model,
            input_tokens=cost.usage.input_tokens,
            cached_input_tokens=cost.usage.cached_input_tokens,
            cache_write_tokens=cost.usage.cache_write_tokens,
            output_tokens=cost.usage.output_tokens,
            reasoning_tokens=cost.usage.reasoning_tokens,
            cache_write_1h_tokens=cost.usage.cache_write_1h_tokens,
            usage_estimated=cost.usage.estimated,
            cost_usd=cost.total_usd,
            cost_input_usd=cost.input_usd,
            cost_cached_input_usd=cost.cached_input_usd,
            cost_cache_write_usd=cost.cache_write_usd,
            cost_output_usd=cost.output_usd,
            cost_reasoning_usd=cost.reasoning_usd,
            price_sheet=cost.sheet,
            price_as_of=cost.as_of,
            rate_input=None if rates is None else rates.input,
            rate_cached_input=None if rates is None else rates.effective_cached_input,
            rate_cache_write=None if rates is None else rates.effective_cache_write,
            rate_output=None if rates is None else rates.output,
            rate_reasoning=None if rates is None else rates.effective_reasoning,
            rate_cache_write_1h=None if rates is None else rates.effective_cache_write_1h,
            price_tier=cost.tier,
            price_window=cost.window,
            **_counterfactual_fields(counterfactual),
            **extra,
        )

    @classmethod
    def for_local(
        cls,
        *,
        time: dt.datetime,
        project: str,
        usage: TokenUsage,
        cost: LocalCost,
        model: str = "local",
        counterfactual: CloudCost | None = None,
        **extra: Any,
    ) -> LedgerRow:
        """A local request: electricity and amortization from ``cost``."""
        return cls(
            time=time,
            project=project,
            route="local",
            provider="local",
            model=model,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            usage_estimated=usage.estimated,
            energy_j=cost.energy_j,
            energy_source=cost.energy_source,
            cost_usd=cost.total_usd,
            cost_electricity_usd=cost.electricity_usd,
            cost_amortization_usd=cost.amortization_usd,
            **_counterfactual_fields(counterfactual),
            **extra,
        )

    @classmethod
    def for_refused(cls, *, time: dt.datetime, project: str, **extra: Any) -> LedgerRow:
        """A refused request: nothing ran, nothing was spent."""
        extra.setdefault("cost_usd", 0.0)
        return cls(time=time, project=project, route="refused", **extra)


def _counterfactual_fields(cost: CloudCost | None) -> dict[str, Any]:
    if cost is None:
        return {}
    return {"counterfactual_usd": cost.total_usd, "reference_model": cost.model}


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))
assert _FIELDS[0] == "time"
_COLUMNS: tuple[str, ...] = ("month", "day", *_FIELDS)
_INSERT = f"INSERT INTO ledger ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM ledger"


def _time_text(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _params(row: LedgerRow) -> tuple[Any, ...]:
    utc = row.time.astimezone(dt.UTC)
    values = [getattr(row, name) for name in _FIELDS]
    values[0] = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # "time" is the first field
    return (utc.strftime("%Y-%m"), utc.strftime("%Y-%m-%d"), *values)


def _from_db(record: Sequence[Any]) -> LedgerRow:
    values = dict(zip(_FIELDS, record, strict=True))
    values["time"] = dt.datetime.strptime(values["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.UTC
    )
    values["usage_estimated"] = bool(values["usage_estimated"])  # SQLite keeps 0/1
    values["redacted"] = bool(values["redacted"])
    return LedgerRow(**values)


def check_month(month: str) -> str:
    if not _MONTH.match(month):
        raise PricingError(f"month must look like 2026-11, got {month!r}")
    return month


class Ledger:
    """The ledger table in the database at ``path`` (created and migrated on open)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.conn: sqlite3.Connection = connect(self.path)
        try:
            self.version = apply_migrations(
                self.conn, "ledger", LEDGER_MIGRATIONS, mirror_user_version=True
            )
            # The next start after a crash: rows of processes that died are interrupted.
            self.recovered = recover_interrupted(self.conn)
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------

    def record(self, row: LedgerRow) -> int:
        """Append one row in its own transaction; returns its id."""
        with transaction(self.conn):
            cursor = self.conn.execute(_INSERT, _params(row))
        rowid = cursor.lastrowid
        assert rowid is not None
        return rowid

    def record_many(self, rows: Iterable[LedgerRow], *, skip_known: bool = False) -> int:
        """Append rows in one transaction; returns how many were added. ``skip_known``:
        leave out rows whose (origin, origin_id) the ledger already has (re-imports)."""
        params = [_params(row) for row in rows]
        sql = _INSERT.replace("INSERT", "INSERT OR IGNORE", 1) if skip_known else _INSERT
        with transaction(self.conn):
            # rowcount sums the rows each insert added (not the cube's trigger writes).
            added = self.conn.executemany(sql, params).rowcount
        return max(added, 0) if params else 0

    # --- reading ------------------------------------------------------------------

    def month_rows(self, month: str, project: str | None = None) -> list[LedgerRow]:
        """The month's rows (UTC month), oldest first, optionally one project's."""
        return list(self.iter_month(month, project))

    def iter_month(self, month: str, project: str | None = None) -> Iterator[LedgerRow]:
        sql, params = _month_filter(month, project)
        for record in self.conn.execute(f"{_SELECT} WHERE {sql} ORDER BY time, id", params):
            yield _from_db(record)

    def spent(self, month: str, project: str | None = None) -> float:
        """Cloud spend of a month (what budgets cap): priced cloud rows' cost.

        Local cost (electricity, amortization) is not billed by anyone, so it
        does not count against the budget; it is reported apart. Read from the
        monthly cube: constant time however long the ledger grows.
        """
        sql, params = _month_filter(month, project)
        row = self.conn.execute(
            f"SELECT TOTAL(cost_usd) FROM ledger_cube WHERE {sql} AND route = 'cloud'",
            params,
        ).fetchone()
        return float(row[0])

    def usage_totals(self, month: str, project: str | None = None) -> tuple[int, TokenUsage]:
        """Request count and summed tokens of a month (re-pricing in the estimator);
        the usage is ``estimated`` when any of the month's rows was."""
        sql, params = _month_filter(month, project)
        row = self.conn.execute(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(input_tokens), 0), "
            "COALESCE(SUM(cached_input_tokens), 0), COALESCE(SUM(cache_write_tokens), 0), "
            "COALESCE(SUM(output_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), "
            "COALESCE(SUM(estimated_requests), 0) "
            f"FROM ledger_cube WHERE {sql} AND route != 'refused'",
            params,
        ).fetchone()
        inp, cached, written, out, reasoning = (int(v) for v in row[1:6])
        usage = TokenUsage(inp, cached, written, out, reasoning, estimated=int(row[6]) > 0)
        return int(row[0]), usage

    def months(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT month FROM ledger ORDER BY 1")]

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])


def _month_filter(month: str, project: str | None) -> tuple[str, tuple[Any, ...]]:
    check_month(month)
    if project is None:
        return "month = ?", (month,)
    return "month = ? AND project = ?", (month, project)
