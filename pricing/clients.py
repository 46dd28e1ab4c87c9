"""A month broken down by the client that sent each request through ``ds4router serve``.

The ledger's ``client`` column names the agent (a key's name, the ``x-ds4router-client``
header, or the agent's User-Agent); the TUI and ``ask`` leave it empty. The monthly summary
table is keyed without it, so this breakdown is summed from the rows (an index on
``(month, client)`` keeps that cheap).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

_SQL = """
SELECT client,
       COUNT(*),
       SUM(status = 'ok' AND route != 'refused'),
       SUM(route = 'refused'),
       SUM(status IN ('error', 'cancelled', 'interrupted')),
       SUM(input_tokens),
       SUM(output_tokens),
       SUM(COALESCE(cost_usd, 0)),
       SUM(cost_usd IS NULL AND route != 'refused')
FROM ledger
WHERE month = ? {project} AND client IS NOT NULL
GROUP BY client
ORDER BY SUM(COALESCE(cost_usd, 0)) DESC, client
"""


@dataclass(frozen=True)
class ClientTotals:
    client: str
    requests: int
    ok: int
    refused: int
    failed: int  # error, cancelled or interrupted
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_totals(
    conn: sqlite3.Connection, month: str, project: str | None = None
) -> tuple[ClientTotals, ...]:
    """Each client's requests in ``month`` (UTC), most expensive first."""
    where = "AND project = ?" if project is not None else ""
    params: tuple[Any, ...] = (month, project) if project is not None else (month,)
    rows = conn.execute(_SQL.format(project=where), params).fetchall()
    return tuple(
        ClientTotals(str(r[0]), *(int(v or 0) for v in r[1:7]), float(r[7] or 0.0), int(r[8] or 0))
        for r in rows
    )


def render_clients(totals: tuple[ClientTotals, ...], fmt: str) -> str:
    """The breakdown as a text table (``table``) or Markdown (``md``); empty when none."""
    if not totals:
        return ""
    head = ("client", "requests", "ok", "refused", "failed", "in tok", "out tok", "cost")
    body = [
        (
            t.client,
            str(t.requests),
            str(t.ok),
            str(t.refused),
            str(t.failed),
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"${t.cost_usd:.4f}" + (f" (+{t.unpriced} unpriced)" if t.unpriced else ""),
        )
        for t in totals
    ]
    if fmt == "md":
        lines = ["## By client", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    lines = ["By client (requests through ds4router serve)"]
    for row in (head, *body):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(lines) + "\n"
