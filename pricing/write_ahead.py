"""Write-ahead ledger rows: begun before a request is sent, finished when it ends.

:func:`begin` writes the request's row with status ``started`` (route, model, the
prompt's token count, the rates it will be priced at and the writing process,
``pricing.recovery.owner_fields``) before the first byte leaves for a backend;
:func:`progress` keeps its output count current while it streams; :func:`finish`
replaces it with the final row. A process that dies between the two leaves the
``started`` row, which the next open of the ledger marks ``interrupted``
(:mod:`pricing.recovery`). Each call is one short transaction.
"""

from __future__ import annotations

from pricing.db import transaction
from pricing.errors import PricingError
from pricing.ledger import _COLUMNS, FINAL_STATUSES, Ledger, LedgerRow, _params

_UPDATE = f"UPDATE ledger SET {', '.join(c + ' = ?' for c in _COLUMNS)} WHERE id = ?"


def begin(ledger: Ledger, row: LedgerRow) -> int:
    """Write ``row`` (status ``started``) before anything is sent; returns its id."""
    if row.status != "started":
        raise PricingError(f"a write-ahead row has status 'started', not {row.status!r}")
    return ledger.record(row)


def progress(ledger: Ledger, ledger_id: int, output_tokens: int) -> None:
    """The output counted so far, so a process killed mid-stream leaves it (estimated)."""
    with transaction(ledger.conn):
        ledger.conn.execute(
            "UPDATE ledger SET output_tokens = ?, usage_estimated = 1 "
            "WHERE id = ? AND status = 'started'",
            (max(0, int(output_tokens)), ledger_id),
        )


def finish(ledger: Ledger, ledger_id: int, row: LedgerRow) -> None:
    """Replace the write-ahead row ``ledger_id`` with the request's final ``row``."""
    if row.status not in FINAL_STATUSES:
        raise PricingError(f"a finished row's status is one of {', '.join(FINAL_STATUSES)}")
    with transaction(ledger.conn):
        cursor = ledger.conn.execute(_UPDATE, (*_params(row), ledger_id))
    if cursor.rowcount != 1:
        raise PricingError(f"{ledger.path}: no ledger row {ledger_id} to finish")


__all__ = ["begin", "finish", "progress"]
