"""Eight processes writing to one database at once: every row arrives, nobody sees a lock.

Each child opens the ledger (migrations and recovery race on a fresh file too) and
writes a fixed number of requests the way a session does (a write-ahead row, its
progress, its final row) plus plain rows, as fast as it can; a bounded count of
writes, not a time window, so the test means the same on any machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WRITERS = 8
REQUESTS = 400  # per writer; each is four short transactions (about 15 s in all here)

CHILD = """
import datetime as dt, sys
from pricing import write_ahead
from pricing.ledger import Ledger, LedgerRow
from pricing.recovery import owner_fields
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
now = dt.datetime.now(dt.UTC)
with Ledger(path) as ledger:
    for i in range(count):
        rid = write_ahead.begin(ledger, LedgerRow(time=now, project=name, route="cloud",
            model="m", status="started", input_tokens=10, usage_estimated=True,
            **owner_fields()))
        write_ahead.progress(ledger, rid, 3)
        write_ahead.finish(ledger, rid, LedgerRow(time=now, project=name, route="cloud",
            model="m", input_tokens=10, output_tokens=5, cost_usd=0.001))
        ledger.record(LedgerRow(time=now, project=name, route="local", model="l"))
print("done", name)
"""


def test_eight_writers_lose_nothing_and_never_see_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), f"p{n}", str(REQUESTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(WRITERS)
    ]
    results = [(child.communicate(timeout=600), child.returncode) for child in children]
    for (out, err), code in results:
        assert code == 0, err
        assert "locked" not in err and "busy" not in err.lower()
        assert out.startswith("done")

    from pricing.ledger import Ledger
    from pricing.repair import cube_disagreements

    with Ledger(path) as ledger:
        rows = ledger.conn.execute(
            "SELECT project, route, status, COUNT(*) FROM ledger GROUP BY 1, 2, 3"
        ).fetchall()
        assert sorted(rows) == sorted(
            [(f"p{n}", "cloud", "ok", REQUESTS) for n in range(WRITERS)]
            + [(f"p{n}", "local", "ok", REQUESTS) for n in range(WRITERS)]
        )
        assert cube_disagreements(ledger.conn) == []  # the summary kept up with every write
