"""The ledger and the shared database: private file, WAL, migrations, concurrent writers."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pricing.cost import price_request
from pricing.db import apply_migrations, connect, schema_version
from pricing.errors import PricingError
from pricing.ledger import LEDGER_MIGRATIONS, Ledger, LedgerRow
from pricing.local_cost import LocalCostModel
from pricing.rates import Rates
from pricing.usage import TokenUsage

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.UTC)
FLASH = Rates(
    "deepseek/deepseek-v4-flash",
    input=0.30,
    output=1.20,
    cached_input=0.006,
    sheet="2026-11",
    as_of="2026-11-15",
)
OPUS = Rates("anthropic/claude-opus-4-7", input=5.0, output=25.0, cached_input=0.5)


def cloud_row(when: dt.datetime = T0, project: str = "acme") -> LedgerRow:
    usage = TokenUsage(input_tokens=4_000, cached_input_tokens=3_000, output_tokens=500)
    return LedgerRow.for_cloud(
        time=when,
        project=project,
        provider="deepseek",
        cost=price_request(usage, FLASH),
        counterfactual=price_request(usage, OPUS),
        rule="routine",
        privacy="internal",
        task="explain",
        conversation_id="c-1",
        ttft_s=0.4,
        duration_s=3.0,
        tok_s=170.0,
    )


def test_database_file_is_private_wal_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "data" / "ds4router.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(cloud_row())
        assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ledger.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert ledger.conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        wal = path.with_name(path.name + "-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_world_readable_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.touch()
    os.chmod(path, 0o644)
    connect(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rows_round_trip_with_costs_rates_and_counterfactual(tmp_path: Path) -> None:
    row = cloud_row()
    with Ledger(tmp_path / "db") as ledger:
        rowid = ledger.record(row)
        back = ledger.month_rows("2026-11")
    assert rowid == 1
    assert back == [row]
    got = back[0]
    assert got.cost_usd == pytest.approx((1_000 * 0.30 + 3_000 * 0.006 + 500 * 1.20) / 1e6)
    assert got.counterfactual_usd == pytest.approx((1_000 * 5 + 3_000 * 0.5 + 500 * 25) / 1e6)
    assert (got.reference_model, got.price_sheet, got.price_as_of) == (
        "anthropic/claude-opus-4-7",
        "2026-11",
        "2026-11-15",
    )
    assert (got.rate_input, got.rate_cached_input, got.rate_output) == (0.30, 0.006, 1.20)


def test_unpriced_local_and_refused_rows(tmp_path: Path) -> None:
    machine = LocalCostModel(90, 0.17, 4800, 3, 8, 1.0)
    local = LedgerRow.for_local(
        time=T0,
        project="acme",
        usage=TokenUsage(input_tokens=100, output_tokens=10),
        cost=machine.local_cost(2.0),
        model="ds4-flash-q2",
        status="cancelled",
    )
    unpriced = LedgerRow.for_cloud(
        time=T0,
        project="acme",
        cost=price_request(TokenUsage(10, 0, 0, 5, 0), None, model="x/y"),
        status="error",
        error_kind="timeout",
    )
    refused = LedgerRow.for_refused(time=T0, project="acme", privacy="secret", rule="no-cloud")
    with Ledger(tmp_path / "db") as ledger:
        ledger.record_many([local, unpriced, refused])
        rows = ledger.month_rows("2026-11", "acme")
        spent = ledger.spent("2026-11", "acme")
    assert [r.route for r in rows] == ["local", "cloud", "refused"]
    assert rows[0].cost_electricity_usd == pytest.approx(180 / 3.6e6 * 0.17)
    assert rows[0].energy_source == "configured"
    assert rows[1].cost_usd is None and rows[1].rate_input is None
    assert rows[2].cost_usd == 0.0
    assert spent == 0.0  # local cost is not billed; the unpriced cloud row has no cost


def test_spent_counts_priced_cloud_rows_of_the_month_and_project(tmp_path: Path) -> None:
    with Ledger(tmp_path / "db") as ledger:
        ledger.record_many(
            [
                cloud_row(),
                cloud_row(),
                cloud_row(project="other"),
                cloud_row(when=dt.datetime(2026, 10, 31, 23, 59, tzinfo=dt.UTC)),
            ]
        )
        one = cloud_row().cost_usd
        assert one is not None
        assert ledger.spent("2026-11", "acme") == pytest.approx(2 * one)
        assert ledger.spent("2026-11") == pytest.approx(3 * one)
        assert ledger.months() == ["2026-10", "2026-11"]


def test_the_monthly_cube_follows_updates_and_deletes(tmp_path: Path) -> None:
    # Re-pricing rewrites costs and pruning deletes rows: the cube's triggers must follow,
    # or reports and budgets would drift from the rows.
    with Ledger(tmp_path / "db") as ledger:
        ledger.record_many([cloud_row(), cloud_row(project="other"), cloud_row()])
        conn = ledger.conn
        conn.execute("UPDATE ledger SET cost_usd = 1.25, project = 'moved' WHERE id = 1")
        conn.execute("DELETE FROM ledger WHERE id = 2")
        one = cloud_row().cost_usd
        assert one is not None
        assert ledger.spent("2026-11", "acme") == pytest.approx(one)
        assert ledger.spent("2026-11", "moved") == pytest.approx(1.25)
        assert ledger.spent("2026-11", "other") == 0.0
        direct = conn.execute(
            "SELECT project, COUNT(*), SUM(output_tokens), TOTAL(cost_usd) FROM ledger "
            "GROUP BY project ORDER BY project"
        ).fetchall()
        cube = conn.execute(
            "SELECT project, SUM(requests), SUM(output_tokens), TOTAL(cost_usd) FROM ledger_cube "
            "WHERE requests != 0 GROUP BY project ORDER BY project"
        ).fetchall()
        assert [row[:3] for row in cube] == [row[:3] for row in direct]
        assert [row[3] for row in cube] == pytest.approx([row[3] for row in direct])


def test_error_kind_must_be_an_identifier_not_a_message() -> None:
    with pytest.raises(PricingError, match="short identifier"):
        LedgerRow(
            time=T0,
            project="p",
            route="cloud",
            status="error",
            error_kind="AuthenticationError: key sk-live-123 rejected",
        )
    with pytest.raises(PricingError, match="route"):
        LedgerRow(time=T0, project="p", route="moon")


def test_migrating_a_version_1_ledger_keeps_its_rows(tmp_path: Path) -> None:
    # A database written when the ledger had only its first layout and versions lived
    # in PRAGMA user_version alone (no schema_versions table yet).
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(LEDGER_MIGRATIONS[0])
    old.execute(
        "INSERT INTO ledger (time, month, day, project, route, model, input_tokens, "
        "output_tokens, cost_usd, status) VALUES "
        "('2026-11-02T10:00:00.000000Z', '2026-11', '2026-11-02', 'acme', 'cloud', "
        "'openai/gpt-4.1', 1000, 100, 0.0028, 'ok')"
    )
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()

    with Ledger(path) as ledger:
        assert ledger.version == len(LEDGER_MIGRATIONS)
        assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == len(LEDGER_MIGRATIONS)
        assert schema_version(ledger.conn, "ledger") == len(LEDGER_MIGRATIONS)
        rows = ledger.month_rows("2026-11")
        assert len(rows) == 1
        assert (rows[0].model, rows[0].cost_usd, rows[0].cache_write_tokens) == (
            "openai/gpt-4.1",
            0.0028,
            0,
        )
        # The monthly cube (v3) was filled from the old rows, and keeps up with new ones.
        assert ledger.spent("2026-11", "acme") == pytest.approx(0.0028)
        ledger.record(cloud_row())
        assert ledger.count() == 2
        assert ledger.spent("2026-11", "acme") == pytest.approx(0.0028 + cloud_row().cost_usd)
        assert ledger.usage_totals("2026-11")[1].input_tokens == 1_000 + 4_000


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Ledger(path).close()
    conn = connect(path)
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'ledger'")
    conn.close()
    with pytest.raises(PricingError, match="upgrade ds4router"):
        Ledger(path)


def test_other_components_migrate_their_own_tables_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Ledger(path).close()
    steps = [
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT);",
        """CREATE TABLE messages (id INTEGER PRIMARY KEY,
               conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
               body TEXT);
           CREATE TRIGGER no_empty BEFORE INSERT ON messages
               WHEN NEW.body = '' BEGIN SELECT RAISE(ABORT, 'empty; really'); END;""",
    ]
    conn = connect(path)
    assert apply_migrations(conn, "history", steps[:1]) == 1
    assert apply_migrations(conn, "history", steps) == 2
    assert apply_migrations(conn, "history", steps) == 2  # nothing left to run
    assert schema_version(conn, "history") == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(
        LEDGER_MIGRATIONS
    )  # still the ledger's
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced
        conn.execute("INSERT INTO messages (conversation_id, body) VALUES ('nope', 'x')")
    conn.close()


WRITER = textwrap.dedent(
    """
    import datetime as dt, os, sys, time
    from pricing.ledger import Ledger, LedgerRow
    path, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with Ledger(path) as ledger:
        while not os.path.exists(go):  # start writing together with the other process
            time.sleep(0.005)
        for i in range(count):
            ledger.record(LedgerRow(time=dt.datetime.now(dt.UTC), project=name, route="local",
                                    output_tokens=i, cost_usd=0.001))
    """
)


def test_two_processes_append_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    Ledger(path).close()
    count = 1_000
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(count), str(go)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("tui", "cli")
    ]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with Ledger(path) as ledger:
        month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
        rows = ledger.month_rows(month)
    assert len(rows) == 2 * count
    for name in ("tui", "cli"):
        assert sorted(r.output_tokens for r in rows if r.project == name) == list(range(count))
