"""Ledger benchmark: insert rates and the monthly report over a million rows.

Prints one JSON line:

* ``insert_rows_per_s_batched`` — ``Ledger.record_many`` in batches of 1,000
  (target >= 5,000 rows/s);
* ``insert_rows_per_s_single`` — ``Ledger.record``, one transaction a row
  (target >= 500 rows/s);
* ``report_1m_rows_s`` — ``build_report`` + the table rendering of a month
  holding 1,000,000 rows (target < 1.5 s). The million rows are generated in SQL
  (3 projects, 3 routes, 8 models, 9 tasks, 30 days, random tokens and costs),
  since building them through Python objects would only time the generator;
  the report is timed on a freshly opened connection, best of 3.

Run: ``python bench/ledger.py [--rows 1000000]``. The database lives in a
temporary directory (on local disk, like the user data dir) and is removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pricing.ledger import Ledger, LedgerRow  # noqa: E402
from pricing.report import build_report, render  # noqa: E402

MONTH = "2026-11"
MODELS = [
    "deepseek/deepseek-v4-flash",
    "anthropic/claude-opus-4-7",
    "openai/gpt-5",
    "openai/gpt-4.1",
    "gemini/gemini-2.5-pro",
    "xai/grok-4.3",
    "local",
    "acme/unpriced",
]
TASKS = [
    "boilerplate",
    "explain",
    "refactor",
    "tests",
    "debug",
    "architecture",
    "agent",
    "batch",
    "chat",
]


def sample_rows(count: int, seed: int) -> list[LedgerRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        inp = rng.randint(100, 40_000)
        out = rng.randint(10, 3_000)
        rows.append(
            LedgerRow(
                time=dt.datetime(2026, 11, 1 + i % 30, rng.randint(0, 23), tzinfo=dt.UTC),
                project=rng.choice(["acme", "beta", "gamma"]),
                route="cloud",
                provider="deepseek",
                model=rng.choice(MODELS),
                rule="routine",
                privacy="internal",
                task=rng.choice(TASKS),
                input_tokens=inp,
                cached_input_tokens=rng.randint(0, inp),
                output_tokens=out,
                ttft_s=0.3,
                duration_s=4.0,
                tok_s=60.0,
                cost_usd=rng.uniform(0, 0.05),
                cost_input_usd=0.01,
                cost_output_usd=0.01,
                counterfactual_usd=rng.uniform(0, 0.2),
                reference_model="anthropic/claude-opus-4-7",
                price_sheet="2026-11",
                price_as_of="2026-11-15",
                rate_input=0.3,
                rate_output=1.2,
            )
        )
    return rows


def bench_batched(path: Path, rows: list[LedgerRow], batch: int = 1_000) -> float:
    with Ledger(path) as ledger:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            ledger.record_many(rows[i : i + batch])
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed


def bench_single(path: Path, rows: list[LedgerRow]) -> float:
    with Ledger(path) as ledger:
        start = time.perf_counter()
        for row in rows:
            ledger.record(row)
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed


FILL_SQL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)
INSERT INTO ledger (time, month, day, project, route, provider, model, rule, privacy, task,
    input_tokens, cached_input_tokens, output_tokens, ttft_s, duration_s, tok_s,
    energy_j, energy_source, cost_usd, cost_input_usd, cost_output_usd,
    cost_electricity_usd, cost_amortization_usd, counterfactual_usd, reference_model,
    price_sheet, price_as_of, status)
SELECT printf('2026-11-%02dT%02d:00:00.000000Z', d, i % 24), '2026-11', printf('2026-11-%02d', d),
    p, r, 'prov', m, 'rule', 'internal', t,
    tin, tin / 2, 10 + abs(random()) % 3000, 0.3, 4.0, 60.0,
    CASE r WHEN 'local' THEN 300.0 END, CASE r WHEN 'local' THEN 'configured' END,
    CASE WHEN m = 'acme/unpriced' AND r = 'cloud' THEN NULL
         WHEN r = 'refused' THEN 0.0 ELSE (abs(random()) % 50000) / 1e6 END,
    0.01, 0.01,
    CASE r WHEN 'local' THEN 0.0001 END, CASE r WHEN 'local' THEN 0.001 END,
    (abs(random()) % 200000) / 1e6, 'anthropic/claude-opus-4-7', '2026-11', '2026-11-15',
    CASE abs(random()) % 20 WHEN 0 THEN 'error' WHEN 1 THEN 'cancelled' ELSE 'ok' END
FROM (
    SELECT i,
        1 + abs(random()) % 30 AS d,
        CASE abs(random()) % 3 WHEN 0 THEN 'acme' WHEN 1 THEN 'beta' ELSE 'gamma' END AS p,
        CASE abs(random()) % 5 WHEN 0 THEN 'local' WHEN 1 THEN 'refused' ELSE 'cloud' END AS r,
        CASE abs(random()) % 8 WHEN 0 THEN 'deepseek/deepseek-v4-flash'
            WHEN 1 THEN 'anthropic/claude-opus-4-7' WHEN 2 THEN 'openai/gpt-5'
            WHEN 3 THEN 'openai/gpt-4.1' WHEN 4 THEN 'gemini/gemini-2.5-pro'
            WHEN 5 THEN 'xai/grok-4.3' WHEN 6 THEN 'local' ELSE 'acme/unpriced' END AS m,
        CASE abs(random()) % 9 WHEN 0 THEN 'boilerplate' WHEN 1 THEN 'explain'
            WHEN 2 THEN 'refactor' WHEN 3 THEN 'tests' WHEN 4 THEN 'debug'
            WHEN 5 THEN 'architecture' WHEN 6 THEN 'agent' WHEN 7 THEN 'batch'
            ELSE 'chat' END AS t,
        100 + abs(random()) % 40000 AS tin
    FROM n
)
"""


def bench_report(path: Path, count: int) -> tuple[float, int]:
    with Ledger(path) as ledger:
        ledger.conn.execute("BEGIN")
        ledger.conn.execute(FILL_SQL, {"count": count})
        ledger.conn.execute("COMMIT")
    best = float("inf")
    requests = 0
    for _ in range(3):
        with Ledger(path) as ledger:
            start = time.perf_counter()
            report = build_report(ledger, MONTH)
            render(report, "table")
            best = min(best, time.perf_counter() - start)
            requests = report.total.requests
    return best, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the report month")
    parser.add_argument("--batched", type=int, default=50_000, help="rows for the batched insert")
    parser.add_argument("--single", type=int, default=2_000, help="rows for one-per-transaction")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ds4-ledger-bench-") as tmp:
        root = Path(tmp)
        batched = bench_batched(root / "batched.sqlite3", sample_rows(args.batched, 1))
        single = bench_single(root / "single.sqlite3", sample_rows(args.single, 2))
        report_s, requests = bench_report(root / "report.sqlite3", args.rows)
    print(
        json.dumps(
            {
                "insert_rows_per_s_batched": round(batched),
                "insert_rows_per_s_single": round(single),
                "report_1m_rows_s": round(report_s, 3),
                "report_rows": requests,
                "targets": {
                    "insert_rows_per_s_batched": ">= 5000",
                    "insert_rows_per_s_single": ">= 500",
                    "report_1m_rows_s": "< 1.5",
                },
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
