"""Tiered long context: compressed CSA rows beyond a RAM budget live in memory-mapped files.

At a million tokens the CSA layers' compressed rows are most of the decode state
(~6.4 GB in bf16 for Flash), yet each query reads only the ``index_topk`` rows the
lightning indexer selects. So when the cache's resident bytes exceed ``ram_bytes``
the oldest compressed rows of each CSA layer move, in blocks, to an append-only
file per layer, and attention gathers the selected rows from a memory map of it.
Index keys (read in full by the indexer every token), sliding-window rows, HCA rows
and pending buffers always stay in RAM.

Rows are written and read back bit for bit (bfloat16 as its uint16 pattern), and a
gather picks the same rows in the same order, so logits are identical to the
all-RAM cache. The budget is enforced when rows are appended (i.e. between model
calls for the rows already there), so it can be exceeded by one call's new rows.

Spilling needs the rows' values on the host: it evaluates them on the calling
thread (the generation thread, which owns them). Gathering from disk needs the
selected indices on the host too: one sync per CSA layer per call, the price of
keeping the rows off the device.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

# Rows move to disk in multiples of this many (per layer), so files grow in sizeable
# appends and the RAM part is not re-copied for every new row.
SPILL_BLOCK = 64


def _storage(dtype: mx.Dtype) -> np.dtype[Any]:
    """The numpy dtype that holds ``dtype``'s bits (bfloat16 has no numpy twin)."""
    if dtype == mx.bfloat16:
        return np.dtype("<u2")
    return np.dtype({mx.float32: "<f4", mx.float16: "<f2"}[dtype])


def to_host(rows: mx.array) -> np.ndarray:
    """The exact bits of ``rows`` as a contiguous numpy array (evaluates ``rows``)."""
    if rows.dtype == mx.bfloat16:
        rows = rows.view(mx.uint16)
    mx.eval(rows)
    return np.ascontiguousarray(np.asarray(rows))


def from_host(data: np.ndarray, dtype: mx.Dtype) -> mx.array:
    arr = mx.array(data)
    return arr.view(mx.bfloat16) if dtype == mx.bfloat16 else arr


class TierPolicy:
    """The RAM budget of one model cache and the directory its row files go to.

    ``resident`` returns the cache's bytes in RAM. The directory (a fresh one under
    ``base_dir``, else under the system temp dir) is made at the first spill and
    removed with its files when the policy is garbage-collected or ``close``-d.
    """

    def __init__(
        self, ram_bytes: int, base_dir: str | Path | None, resident: Callable[[], int]
    ) -> None:
        if ram_bytes < 0:
            raise ValueError("ram_bytes must be >= 0")
        self.ram_bytes = ram_bytes
        self.base_dir = Path(base_dir).expanduser() if base_dir is not None else None
        self.resident = resident
        # Weak, so that buffers -> policy is the only strong link (no cycle: the files
        # go as soon as the cache that owns them is dropped).
        self.buffers: weakref.WeakSet[TieredRows] = weakref.WeakSet()
        # [directory, open files]: shared with the finalizer, which must not hold self.
        self._owned: list[Any] = [None, []]
        self._finalizer = weakref.finalize(self, _remove_owned, self._owned)

    @property
    def directory(self) -> Path | None:
        return self._owned[0]

    def open_file(self, name: str) -> Any:
        if self._owned[0] is None:
            if self.base_dir is not None:
                from local_engine.cache.kv_store import private_dir

                private_dir(self.base_dir)
            base = None if self.base_dir is None else str(self.base_dir)
            self._owned[0] = Path(tempfile.mkdtemp(prefix=f"tier-{os.getpid()}-", dir=base))
        # mkdtemp's directory is 0700; the spill file, rows of a prompt's state, 0600.
        # open() with an opener, not os.fdopen: the file object keeps its path as .name,
        # which the disk tier's np.memmap opens.
        fh = open(  # kept open for the buffer's life; the finalizer closes it
            self._owned[0] / name, "w+b", opener=lambda path, flags: os.open(path, flags, 0o600)
        )
        self._owned[1].append(fh)
        return fh

    def over(self) -> int:
        """Bytes above the budget now (<= 0: within it)."""
        return self.resident() - self.ram_bytes

    @property
    def disk_bytes(self) -> int:
        return sum(b.disk_nbytes for b in self.buffers)

    def close(self) -> None:
        self._finalizer()


def _remove_owned(owned: list[Any]) -> None:
    directory, files = owned
    for fh in files:
        with contextlib.suppress(Exception):
            fh.close()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


class TieredRows:
    """Append-only rows ``[count, width]``: the oldest ``spilled`` on disk, the rest in RAM.

    Same interface as :class:`~local_engine.cache.kv_cache.RowBuffer` (``rows``, ``count``,
    ``nbytes``, ``append``, ``load``, ``arrays``, ``gather``).
    """

    def __init__(self, width: int, dtype: mx.Dtype, policy: TierPolicy, name: str) -> None:
        from local_engine.cache.kv_cache import RowBuffer

        self.width = width
        self.dtype = dtype
        self.policy = policy
        self.ram = RowBuffer(width, dtype)
        self.spilled = 0
        self._storage = _storage(dtype)
        self._row_bytes = width * self._storage.itemsize
        self._name = name
        self._file: Any = None  # opened at the first spill: most caches never need one
        self._map: np.memmap[Any, Any] | None = None
        policy.buffers.add(self)

    # -- sizes ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self.spilled + self.ram.count

    @property
    def nbytes(self) -> int:
        """Bytes of all rows (both tiers): what a snapshot of them holds."""
        return self.count * self.width * self.dtype.size

    @property
    def ram_nbytes(self) -> int:
        return self.ram.nbytes

    @property
    def disk_nbytes(self) -> int:
        return self.spilled * self._row_bytes

    # -- contents ---------------------------------------------------------------------------
    def _disk(self) -> np.ndarray:
        if self._map is None or self._map.shape[0] != self.spilled:
            self._file.flush()
            self._map = np.memmap(
                self._file.name, dtype=self._storage, mode="r", shape=(self.spilled, self.width)
            )
        return self._map

    @property
    def rows(self) -> mx.array:
        """Every row (reads the disk tier in full: the dense path and snapshots only)."""
        if self.spilled == 0:
            return self.ram.rows
        disk = from_host(np.array(self._disk()), self.dtype)
        return mx.concatenate([disk, self.ram.rows], axis=0)

    def arrays(self) -> list[mx.array]:
        return self.ram.arrays()

    def append(self, new: mx.array) -> None:
        self._fit_budget()
        self.ram.append(new)

    def load(self, rows: mx.array) -> None:
        """Replace the contents; whatever does not fit the budget goes straight to disk."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
        self._map = None
        self.spilled = 0
        self.ram.load(rows)
        self._fit_budget()

    def gather(self, indices: mx.array) -> mx.array:
        """``rows[indices]`` (``[T, k]`` -> ``[T, k, width]``), reading disk rows from the map."""
        if self.spilled == 0:
            return self.ram.gather(indices)
        idx = np.asarray(indices).astype(np.int64)
        on_disk = idx < self.spilled
        if not on_disk.any():
            return self.ram.gather(mx.array(idx - self.spilled, dtype=mx.int32))
        picked = np.zeros((*idx.shape, self.width), dtype=self._storage)
        wanted, where = np.unique(idx[on_disk], return_inverse=True)
        picked[on_disk] = self._disk()[wanted][where.reshape(-1)]
        disk = from_host(picked, self.dtype)
        if not self.ram.count:
            return disk
        ram_idx = mx.array(np.where(on_disk, 0, idx - self.spilled), dtype=mx.int32)
        return mx.where(mx.array(on_disk)[..., None], disk, self.ram.gather(ram_idx))

    # -- spilling -------------------------------------------------------------------------
    def _fit_budget(self) -> None:
        over = self.policy.over()
        if over <= 0 or self.ram.count == 0:
            return
        share = math.ceil(over / max(1, len(self.policy.buffers)) / self._row_bytes)
        k = min(self.ram.count, math.ceil(share / SPILL_BLOCK) * SPILL_BLOCK)
        self._spill(k)

    def _spill(self, k: int) -> None:
        rows = self.ram.rows
        if self._file is None:
            self._file = self.policy.open_file(self._name)
        self._file.seek(0, os.SEEK_END)
        self._file.write(to_host(rows[:k]).tobytes())
        self._file.flush()
        self.spilled += k
        self._map = None
        self.ram.load(rows[k:])
