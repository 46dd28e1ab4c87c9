"""An agent's logged requests added to the ledger as ``imported`` rows.

Each request is priced like a request ds4router ran (its model's rates at its start
time: tier and time window included, and on the reference model for the
counterfactual) and written with ``origin`` (``claude-code``, ``codex``) and the log's own
id, so importing the same logs again adds nothing. The rows' project is the agent's
name: imported spend shows in the month's report as its own project and never counts
against a ds4router project's budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pricing.agent_logs import CLAUDE_CODE, AgentLog, LoggedRequest
from pricing.catalog import PriceCatalog
from pricing.ledger import Ledger, LedgerRow

_PROVIDERS = {CLAUDE_CODE: "anthropic"}


@dataclass(frozen=True)
class Imported:
    origin: str
    added: int
    known: int
    unpriced: int

    def describe(self) -> str:
        unpriced = f", {self.unpriced} unpriced" if self.unpriced else ""
        return (
            f"imported {self.added} {self.origin} requests "
            f"({self.known} already in the ledger{unpriced})"
        )


def ledger_rows(
    requests: Iterable[LoggedRequest], catalog: PriceCatalog, reference: str | None
) -> list[LedgerRow]:
    rows: list[LedgerRow] = []
    for request in requests:
        cost = catalog.price(request.model, request.usage, request.time)
        counterfactual = (
            catalog.price(reference, request.usage, request.time) if reference else None
        )
        rows.append(
            LedgerRow.for_cloud(
                time=request.time,
                project=request.origin,
                cost=cost,
                provider=_PROVIDERS.get(request.origin, "openai"),
                counterfactual=counterfactual,
                task=request.project,
                origin=request.origin,
                origin_id=request.origin_id,
            )
        )
    return rows


def import_log(
    ledger: Ledger, log: AgentLog, catalog: PriceCatalog, reference: str | None
) -> Imported:
    rows = ledger_rows(log.requests, catalog, reference)
    added = ledger.record_many(rows, skip_known=True)
    unpriced = sum(1 for row in rows if row.cost_usd is None)
    return Imported(log.origin, added, len(rows) - added, unpriced)
