"""Helpers shared by the session tests: the backend factory, one send's events, the ledger.

(Kept apart from ``conftest.py`` so test modules import them by a unique name.)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from scripted import ScriptedBackend

from ds4router import paths
from ds4router.backends.cloud import CloudBackend
from ds4router.config.loader import LoadedConfig
from ds4router.sessions.session import BackendUnavailable, Session
from ds4router.targets import (
    LocalEngine,
    Sendable,
)
from pricing.ledger import Ledger, LedgerRow


def factory(local: ScriptedBackend | None) -> Any:
    """Local: the scripted backend (None: unavailable). Cloud: the real backend, with
    retries that back off in milliseconds."""

    def make(target: Sendable, loaded: LoadedConfig) -> Any:
        if isinstance(target, LocalEngine):
            if local is None:
                raise BackendUnavailable("no local engine in this test")
            return local
        return CloudBackend(
            loaded.config.cloud,
            backoff_base_s=0.01,
            backoff_max_s=0.02,
            jitter_s=0.0,
            retry_after_max_s=0.01,
        )

    return make


async def collect(session: Session, text: str, **kwargs: Any) -> list[Any]:
    """Every event of one ``session.send``."""
    return [event async for event in session.send(text, **kwargs)]


def ledger_rows() -> list[LedgerRow]:
    """This month's rows (UTC, as the ledger's months are) of the test's database."""
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    with Ledger(paths.database_path()) as ledger:
        return ledger.month_rows(month)
