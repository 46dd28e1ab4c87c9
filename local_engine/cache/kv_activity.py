"""What the KV caches of this process did: lookups, hits, tokens restored, writes, disk use.

Process-wide counters that every :class:`~local_engine.cache.kv_store.KVStore` of the
process adds to, read as one :class:`KVActivity` snapshot (the TUI's status line).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class _Activity:
    """Process-wide counters (for a status line): every store opened in this process."""

    lookups: int = 0
    hits: int = 0
    cached_tokens: int = 0
    writes: int = 0
    written_bytes: int = 0
    faults: int = 0
    stores: dict[str, tuple[int, int]] = field(default_factory=dict)  # root -> (entries, bytes)


@dataclass(frozen=True)
class KVActivity:
    """What the KV caches of this process did: lookups, hits, tokens restored, disk use."""

    lookups: int
    hits: int
    cached_tokens: int
    writes: int
    written_bytes: int
    faults: int
    entries: int
    stored_bytes: int


_ACTIVITY = _Activity()
_ACTIVITY_LOCK = threading.Lock()


def activity() -> KVActivity:
    """A snapshot of this process's KV cache counters."""
    with _ACTIVITY_LOCK:
        a = _ACTIVITY
        entries = sum(e for e, _ in a.stores.values())
        stored = sum(b for _, b in a.stores.values())
        return KVActivity(
            a.lookups, a.hits, a.cached_tokens, a.writes, a.written_bytes, a.faults, entries, stored
        )


def tally(**deltas: int) -> None:
    """Add to this process's counters (``lookups=1``, ``faults=1``, ...)."""
    with _ACTIVITY_LOCK:
        for name, value in deltas.items():
            setattr(_ACTIVITY, name, getattr(_ACTIVITY, name) + value)


def record_store(root: str, entries: int, nbytes: int) -> None:
    """What the store at ``root`` holds now (its entries and bytes count in the snapshot)."""
    with _ACTIVITY_LOCK:
        _ACTIVITY.stores[root] = (entries, nbytes)
