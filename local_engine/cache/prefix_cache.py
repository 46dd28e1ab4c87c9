"""Prefix reuse: the engine's side of the on-disk KV cache.

:class:`PrefixCache` joins a :class:`~local_engine.cache.kv_store.KVStore` to one model
(its fingerprint). ``restore`` finds the longest cached prefix of a prompt and
rebuilds a decode state from it (into a fresh cache, so a failure half-way leaves
nothing behind); ``save`` snapshots a cache and hands the snapshot to a writer
thread, so the disk never holds up prefill or decode.

MLX arrays belong to the thread that made them: ``save`` evaluates the snapshot's
arrays (bfloat16 ones viewed as uint16, which numpy can read) on the calling
thread before queueing them; the writer only reads their bytes. A snapshot is a
copy (``ModelCache.snapshot``), so the generation thread may keep appending to the
cache meanwhile.

Exactness: a restored state is bit-for-bit the state that was saved, so continuing
it gives the logits that continuing the live state would have given. A fresh
prefill of a longer prompt may split the same tokens into different calls (e.g. a
reply decoded token by token, then prefilled in one chunk), which MLX computes with
different rounding: equal to float precision, not bit for bit.

Nothing here raises into a generation: a state that will not restore or save is
logged as one warning line and the engine prefills as if nothing was cached.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from local_engine.cache.kv_cache import ModelCache
from local_engine.cache.kv_store import KVStore, RawArray, StoredState
from local_engine.errors import CacheError
from local_engine.runtime.worker import SerialWorker

log = logging.getLogger("local_engine.cache.kv_cache")

# During a long prefill a snapshot is saved every this many tokens (a multiple of 128,
# where every pending buffer is empty), so a later prompt that shares only the start
# of this one -- a long document with another question -- still skips most prefill.
DEFAULT_SNAPSHOT_EVERY = 4096
# Snapshots waiting for the writer; a full queue makes the generation thread wait
# rather than hold an unbounded number of state copies in memory.
MAX_PENDING = 4
# Entries that fail to rebuild a state before a lookup gives up (each is removed).
RESTORE_ATTEMPTS = 3

_MX_DTYPES = {
    "float32": mx.float32,
    "float16": mx.float16,
    "bfloat16": mx.bfloat16,
    "int32": mx.int32,
    "int64": mx.int64,
    "uint16": mx.uint16,
    "uint32": mx.uint32,
    "uint8": mx.uint8,
}


@dataclass(frozen=True, eq=False)
class Restored:
    """A decode state rebuilt from disk: ``cache`` has seen the first ``tokens`` ids."""

    cache: Any
    tokens: int
    logits: mx.array  # [1, vocab], the last cached position's
    read_s: float
    nbytes: int


def _dtype_name(dtype: mx.Dtype) -> str:
    for name, value in _MX_DTYPES.items():
        if value == dtype:
            return name
    raise CacheError(f"cannot store arrays of dtype {dtype}")


def _raw(arr: mx.array) -> tuple[RawArray, mx.array]:
    """The array to write for ``arr`` and the (lazy) array to evaluate before writing."""
    name = _dtype_name(arr.dtype)
    host = arr.view(mx.uint16) if arr.dtype == mx.bfloat16 else arr
    return RawArray(name, tuple(arr.shape), host), host


def _to_mx(data: np.ndarray, dtype: str) -> mx.array:
    arr = mx.array(data)
    return arr.view(mx.bfloat16) if dtype == "bfloat16" else arr


def _log_failed_write(exc: Exception) -> None:
    # A failed write must not kill the writer, nor reach the generation that queued it.
    log.warning("kv cache: a snapshot could not be written (%s)", exc)


_LIVE: weakref.WeakSet[PrefixCache] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # Writer threads are daemons: without this, a snapshot queued just before the
    # interpreter exits would be lost (never half-written: the rename never happens).
    for cache in list(_LIVE):
        cache.flush(timeout=60)


class PrefixCache:
    """Prefix reuse for one model (``fingerprint``) in one ``store``."""

    def __init__(
        self,
        store: KVStore,
        fingerprint: str,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    ) -> None:
        if snapshot_every < 0 or snapshot_every % 128:
            raise CacheError(
                f"snapshot_every must be a multiple of 128 (0: off), got {snapshot_every}"
            )
        self.store = store
        self.fingerprint = fingerprint
        self.snapshot_every = snapshot_every
        self._writer = SerialWorker(
            "local-engine-kv-writer", maxsize=MAX_PENDING, on_error=_log_failed_write
        )
        _LIVE.add(self)

    @property
    def root(self) -> Path:
        return self.store.root

    # -- restore ----------------------------------------------------------------------------
    def restore(
        self, prompt_ids: Sequence[int], make_cache: Callable[[], ModelCache]
    ) -> Restored | None:
        """The longest cached prefix of ``prompt_ids`` as a live cache, or None.

        An entry that reads back whole but does not rebuild a state of this model is
        removed with a warning and the next longest is tried.
        """
        ids = np.asarray(prompt_ids, dtype=np.int32)
        for _ in range(RESTORE_ATTEMPTS):
            try:
                state = self.store.lookup(self.fingerprint, ids)
            except Exception as exc:  # an unreadable store is a miss, never a failed request
                log.warning("kv cache: lookup in %s failed (%s); prefilling", self.root, exc)
                return None
            if state is None:
                return None
            try:
                cache = make_cache()
                cache.restore(self._snapshot_of(state))
                if cache.offset != state.info.tokens:
                    raise CacheError(f"it rebuilds {cache.offset} tokens, not {state.info.tokens}")
                logits = _to_mx(state.logits, "float32")
                mx.eval(logits, *cache.arrays())
            except Exception as exc:  # CacheError mostly; whatever it is, prefilling is safe
                log.warning(
                    "kv cache: entry %s (%d tokens) does not fit this model (%s); removed it, "
                    "prefilling instead",
                    state.info.key[:12],
                    state.info.tokens,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                self._discard(state)
                continue
            return Restored(cache, state.info.tokens, logits, state.read_s, state.info.nbytes)
        return None

    @staticmethod
    def _snapshot_of(state: StoredState) -> dict[str, mx.array | int]:
        snap: dict[str, mx.array | int] = dict(state.ints)
        for name, data in state.arrays.items():
            snap[name] = _to_mx(data, state.dtypes[name])
        return snap

    def _discard(self, state: StoredState) -> None:
        try:
            self.store.remove(state.info)
        except Exception as exc:
            log.debug("kv cache: could not remove entry %s: %s", state.info.key[:12], exc)

    # -- save -----------------------------------------------------------------------------
    def has(self, token_ids: Sequence[int] | np.ndarray) -> bool:
        try:
            return self.store.has(self.fingerprint, np.asarray(token_ids, dtype=np.int32))
        except Exception:
            return False

    def save(self, cache: ModelCache, token_ids: Sequence[int], logits: mx.array) -> bool:
        """Queue a snapshot of ``cache`` (which has seen exactly ``token_ids``) for writing.

        Returns False when nothing was queued (already stored, or the snapshot failed).
        """
        ids = np.asarray(token_ids, dtype=np.int32)
        if len(ids) == 0 or cache.offset != len(ids) or self.has(ids):
            return False
        try:
            snap = cache.snapshot()
            raws: dict[str, RawArray] = {}
            ints: dict[str, int] = {}
            pending: list[mx.array] = []
            for name, value in snap.items():
                if isinstance(value, mx.array):
                    raws[name], host = _raw(value)
                    pending.append(host)
                else:
                    ints[name] = int(value)
            raw_logits, host_logits = _raw(logits.astype(mx.float32))
            pending.append(host_logits)
            # Computed here, on the thread that owns them; the writer only reads bytes.
            mx.eval(*pending)
        except Exception as exc:
            log.warning("kv cache: could not snapshot %d tokens (%s); not saved", len(ids), exc)
            return False
        fingerprint, store = self.fingerprint, self.store
        self._writer.submit(lambda: store.put(fingerprint, ids, raws, ints, raw_logits))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for queued snapshots to reach the disk; False if ``timeout`` ran out."""
        return self._writer.flush(timeout)

    @property
    def pending(self) -> int:
        return self._writer.pending
