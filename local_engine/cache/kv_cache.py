"""Decode state: what each layer keeps between calls, and its exact snapshot / restore.

Per layer (ENGINE.md, "Decode state per layer"):

* every layer: the last ``sliding_window - 1`` raw KV rows (K = V, after norm
  and RoPE) -- with the new rows of a call they make the sliding window;
* HCA and CSA layers: a compressor state -- compressed rows emitted so far, the
  projected kv/gate of tokens waiting for their window to close (fewer than
  ``ratio``), and for CSA the previous window's "A" series (kv and gate) that
  the next window overlaps with;
* CSA layers also an indexer state of the same shape at ``index_head_dim``.

The state cannot be rewound, so prefix reuse goes through snapshots. A
snapshot is a flat ``dict`` of named ``mx.array`` and ``int`` values (nothing
else), so the SSD cache can write it with ``mx.save_safetensors`` plus the ints
as metadata. At positions that are multiples of 128 (and of every ratio) all
pending buffers are empty: those are the cheap snapshot points.

``ModelCache.enable_tiering`` bounds the bytes held in RAM: beyond the budget the
oldest compressed CSA rows move to memory-mapped files (``local_engine.cache.tiered``),
with identical logits. ``state_nbytes`` is the architecture's byte count of the
state, used by the benchmarks and checked against live caches by the tests.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx

from local_engine.errors import CacheError
from local_engine.model.config import CSA, HCA, ModelConfig

if TYPE_CHECKING:
    from local_engine.cache.tiered import TieredRows, TierPolicy

SNAPSHOT_FORMAT = 1
Snapshot = dict[str, "mx.array | int"]


class RowBuffer:
    """Append-only rows ``[count, width]`` in a buffer that grows by doubling.

    Appending one compressed row per window would otherwise copy every row
    emitted so far (quadratic over a long context).
    """

    def __init__(self, width: int, dtype: mx.Dtype, step: int = 256) -> None:
        self.width = width
        self.dtype = dtype
        self.step = step
        self.count = 0
        self._data: mx.array | None = None

    @property
    def rows(self) -> mx.array:
        if self._data is None:
            return mx.zeros((0, self.width), dtype=self.dtype)
        return self._data[: self.count]

    @property
    def nbytes(self) -> int:
        return self.count * self.width * self.dtype.size

    def append(self, new: mx.array) -> None:
        k = new.shape[0]
        if k == 0:
            return
        need = self.count + k
        capacity = 0 if self._data is None else self._data.shape[0]
        if need > capacity:
            grown = max(capacity * 2, -(-need // self.step) * self.step)
            data = mx.zeros((grown, self.width), dtype=self.dtype)
            if self.count:
                assert self._data is not None
                data[: self.count] = self._data[: self.count]
            self._data = data
        assert self._data is not None
        self._data[self.count : need] = new.astype(self.dtype)
        self.count = need

    def load(self, rows: mx.array) -> None:
        """Replace the contents (a fresh buffer: later appends never touch ``rows``)."""
        self._data = None
        self.count = 0
        self.append(rows)

    def arrays(self) -> list[mx.array]:
        return [] if self._data is None else [self._data]

    def gather(self, indices: mx.array) -> mx.array:
        """``rows[indices]``: ``[T, k]`` row indices (all below ``count``) -> ``[T, k, width]``."""
        if self._data is None:
            raise CacheError("cannot gather rows from an empty buffer")
        return self._data[indices]


@dataclass(frozen=True)
class CompressorShape:
    """Sizes of one compressor: window ``ratio``, projection ``width``, output ``row_width``."""

    ratio: int
    width: int
    row_width: int
    overlap: bool


class CompressorState:
    """One compressor's running state (the main CSA/HCA compressor or the indexer's)."""

    def __init__(self, shape: CompressorShape, dtype: mx.Dtype) -> None:
        self.shape = shape
        self.dtype = dtype
        self.pending_kv = mx.zeros((0, shape.width), dtype=dtype)
        self.pending_gate = mx.zeros((0, shape.width), dtype=dtype)
        # Previous window's A series (kv, gate after position bias), CSA only.
        self.overlap_kv: mx.array | None = None
        self.overlap_gate: mx.array | None = None
        # A TieredRows (local_engine.cache.tiered) when the cache keeps old rows on disk.
        self.buffer: RowBuffer | TieredRows = RowBuffer(shape.row_width, dtype)

    @property
    def count(self) -> int:
        """Compressed entries emitted so far."""
        return self.buffer.count

    @property
    def rows(self) -> mx.array:
        return self.buffer.rows

    @property
    def nbytes(self) -> int:
        n = self.buffer.nbytes + self.pending_kv.nbytes + self.pending_gate.nbytes
        if self.overlap_kv is not None and self.overlap_gate is not None:
            n += self.overlap_kv.nbytes + self.overlap_gate.nbytes
        return n

    def arrays(self) -> list[mx.array]:
        out = [self.pending_kv, self.pending_gate, *self.buffer.arrays()]
        if self.overlap_kv is not None and self.overlap_gate is not None:
            out += [self.overlap_kv, self.overlap_gate]
        return out

    def snapshot(self, prefix: str) -> Snapshot:
        s = self.shape
        empty = mx.zeros((0, s.row_width), dtype=self.dtype)
        return {
            f"{prefix}.count": self.count,
            f"{prefix}.rows": mx.array(self.rows),
            f"{prefix}.pending_kv": self.pending_kv,
            f"{prefix}.pending_gate": self.pending_gate,
            f"{prefix}.overlap_kv": empty if self.overlap_kv is None else self.overlap_kv,
            f"{prefix}.overlap_gate": empty if self.overlap_gate is None else self.overlap_gate,
        }

    def restore(self, snap: Mapping[str, mx.array | int], prefix: str, tokens: int) -> None:
        s = self.shape
        count = _int(snap, f"{prefix}.count")
        rows = _array(snap, f"{prefix}.rows", (count, s.row_width))
        pending = tokens - count * s.ratio
        if not 0 <= pending < s.ratio:
            raise CacheError(
                f"snapshot {prefix}: {count} compressed rows do not fit {tokens} tokens at"
                f" ratio {s.ratio}"
            )
        pending_kv = _array(snap, f"{prefix}.pending_kv", (pending, s.width))
        pending_gate = _array(snap, f"{prefix}.pending_gate", (pending, s.width))
        ov_kv = _array(snap, f"{prefix}.overlap_kv", None)
        ov_gate = _array(snap, f"{prefix}.overlap_gate", None)
        has_overlap = s.overlap and count > 0
        want = (s.ratio if has_overlap else 0, s.row_width)
        for name, arr in (("overlap_kv", ov_kv), ("overlap_gate", ov_gate)):
            if tuple(arr.shape) != want:
                raise CacheError(
                    f"snapshot {prefix}.{name} has shape {list(arr.shape)}, expected {list(want)}"
                )
        self.buffer.load(rows)
        self.pending_kv = mx.array(pending_kv).astype(self.dtype)
        self.pending_gate = mx.array(pending_gate).astype(self.dtype)
        self.overlap_kv = mx.array(ov_kv).astype(self.dtype) if has_overlap else None
        self.overlap_gate = mx.array(ov_gate).astype(self.dtype) if has_overlap else None


class LayerCache:
    """One layer's decode state; ``kind`` is the layer type from the config."""

    def __init__(
        self,
        kind: str,
        *,
        head_dim: int,
        window: int,
        dtype: mx.Dtype,
        compressor: CompressorShape | None = None,
        indexer: CompressorShape | None = None,
    ) -> None:
        self.kind = kind
        self.head_dim = head_dim
        self.window_size = window
        self.dtype = dtype
        self.tokens = 0
        self.window = mx.zeros((0, head_dim), dtype=dtype)
        self.compressor = CompressorState(compressor, dtype) if compressor else None
        self.indexer = CompressorState(indexer, dtype) if indexer else None

    @property
    def nbytes(self) -> int:
        """Bytes of live state (what a snapshot of this layer holds)."""
        n = self.window.nbytes
        for part in (self.compressor, self.indexer):
            if part is not None:
                n += part.nbytes
        return n

    def arrays(self) -> list[mx.array]:
        out = [self.window]
        for part in (self.compressor, self.indexer):
            if part is not None:
                out += part.arrays()
        return out

    def push_window(self, full: mx.array) -> None:
        """Keep the last ``window - 1`` rows of this call's full raw KV for the next call."""
        keep = self.window_size - 1
        self.window = full[-keep:] if keep > 0 else full[:0]

    def snapshot(self, prefix: str = "layer") -> Snapshot:
        snap: Snapshot = {
            f"{prefix}.tokens": self.tokens,
            f"{prefix}.ratio": self.ratio_code,
            f"{prefix}.window": self.window,
        }
        if self.compressor is not None:
            snap.update(self.compressor.snapshot(f"{prefix}.compressor"))
        if self.indexer is not None:
            snap.update(self.indexer.snapshot(f"{prefix}.indexer"))
        return snap

    @property
    def ratio_code(self) -> int:
        return 0 if self.compressor is None else self.compressor.shape.ratio

    def restore(self, snap: Mapping[str, mx.array | int], prefix: str = "layer") -> None:
        ratio = _int(snap, f"{prefix}.ratio")
        if ratio != self.ratio_code:
            raise CacheError(
                f"snapshot {prefix} is for a layer with ratio {ratio}; this layer"
                f" ({self.kind}) has ratio {self.ratio_code}"
            )
        tokens = _int(snap, f"{prefix}.tokens")
        rows = min(tokens, self.window_size - 1)
        window = _array(snap, f"{prefix}.window", (rows, self.head_dim))
        if self.compressor is not None:
            self.compressor.restore(snap, f"{prefix}.compressor", tokens)
        if self.indexer is not None:
            self.indexer.restore(snap, f"{prefix}.indexer", tokens)
        self.window = mx.array(window).astype(self.dtype)
        self.tokens = tokens


class ModelCache:
    """All layers' decode state plus the number of tokens seen."""

    def __init__(self, layers: list[LayerCache]) -> None:
        self.layers = layers
        self.tier: TierPolicy | None = None

    def enable_tiering(self, ram_bytes: int, directory: str | Path | None = None) -> None:
        """Keep at most ``ram_bytes`` of state in RAM: older compressed CSA rows go to
        memory-mapped files under ``directory`` (a temp dir when None).

        Index keys, window rows, HCA rows and pending buffers stay in RAM whatever the
        budget; logits are identical to the all-RAM cache.
        """
        from local_engine.cache.tiered import TieredRows, TierPolicy

        if self.tier is not None:
            raise CacheError("this cache is tiered already")
        me = weakref.ref(self)  # the policy must not keep its cache alive (files go with it)

        def resident() -> int:
            cache = me()
            return 0 if cache is None else cache.resident_nbytes

        policy = TierPolicy(ram_bytes, directory, resident)
        self.tier = policy
        for i, layer in enumerate(self.layers):
            comp = layer.compressor
            if layer.kind == CSA and comp is not None:
                rows = comp.rows
                tiered = TieredRows(comp.shape.row_width, comp.dtype, policy, f"layer{i}.rows")
                comp.buffer = tiered
                tiered.load(rows)

    @property
    def resident_nbytes(self) -> int:
        """Bytes of state held in RAM (``nbytes`` minus the rows on disk)."""
        return self.nbytes - self.disk_nbytes

    @property
    def disk_nbytes(self) -> int:
        """Bytes of compressed rows kept in memory-mapped files (0 unless tiered)."""
        return 0 if self.tier is None else self.tier.disk_bytes

    @property
    def offset(self) -> int:
        """Tokens processed so far (the next token's position)."""
        return self.layers[0].tokens if self.layers else 0

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def __iter__(self) -> Iterator[LayerCache]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    def arrays(self) -> list[mx.array]:
        """Every array of the state: ``mx.eval(*cache.arrays())`` materializes it."""
        return [a for layer in self.layers for a in layer.arrays()]

    def snapshot(self) -> Snapshot:
        """A flat dict of named arrays and ints; restoring it continues identically.

        The arrays may still be lazy: ``mx.eval`` them on this thread before
        handing the snapshot to another one (a disk writer, say).
        """
        snap: Snapshot = {
            "format": SNAPSHOT_FORMAT,
            "tokens": self.offset,
            "num_layers": len(self.layers),
        }
        for i, layer in enumerate(self.layers):
            snap.update(layer.snapshot(f"layers.{i}"))
        return snap

    def restore(self, snap: Mapping[str, mx.array | int]) -> None:
        fmt = _int(snap, "format")
        if fmt != SNAPSHOT_FORMAT:
            raise CacheError(f"snapshot format {fmt} is not supported (expected {SNAPSHOT_FORMAT})")
        n = _int(snap, "num_layers")
        if n != len(self.layers):
            raise CacheError(f"snapshot has {n} layers, the model has {len(self.layers)}")
        expected = {"format", "tokens", "num_layers"}
        for i, layer in enumerate(self.layers):
            expected |= set(layer.snapshot(f"layers.{i}"))
        extra = sorted(set(snap) - expected)
        if extra:
            raise CacheError(f"snapshot has unexpected entries {extra[:5]}")
        for i, layer in enumerate(self.layers):
            layer.restore(snap, f"layers.{i}")
        tokens = _int(snap, "tokens")
        if any(layer.tokens != tokens for layer in self.layers):
            raise CacheError("snapshot layers disagree on the number of tokens seen")


def _int(snap: Mapping[str, mx.array | int], key: str) -> int:
    if key not in snap:
        raise CacheError(f"snapshot is missing {key!r}")
    value = snap[key]
    if isinstance(value, mx.array):
        if value.size != 1:
            raise CacheError(f"snapshot {key!r} should be an integer")
        item = value.astype(mx.int64).item()
        assert isinstance(item, int)
        return item
    return int(value)


def _array(snap: Mapping[str, mx.array | int], key: str, shape: tuple[int, int] | None) -> mx.array:
    if key not in snap:
        raise CacheError(f"snapshot is missing {key!r}")
    value = snap[key]
    if not isinstance(value, mx.array):
        raise CacheError(f"snapshot {key!r} should be an array")
    if shape is not None and tuple(value.shape) != shape:
        raise CacheError(f"snapshot {key!r} has shape {list(value.shape)}, expected {list(shape)}")
    return value


def state_nbytes(cfg: ModelConfig, tokens: int, value_bytes: int) -> int:
    """Bytes of the decode state after ``tokens`` tokens -- what a snapshot holds -- from the
    architecture alone (ENGINE.md's state table): window rows, compressed rows, pending
    tokens' kv/gate and the CSA overlap series, for the main and the indexer compressor."""
    values = 0
    for kind in cfg.layer_types:
        values += min(tokens, cfg.sliding_window - 1) * cfg.head_dim
        if kind == HCA:
            r = cfg.hca_ratio
            values += (tokens // r) * cfg.head_dim + 2 * (tokens % r) * cfg.head_dim
        elif kind == CSA:
            r = cfg.csa_ratio
            for width in (cfg.head_dim, cfg.index_head_dim):
                values += (tokens // r) * width
                values += 2 * (tokens % r) * 2 * width  # pending kv + gate, series A | B
                values += 2 * r * width if tokens >= r else 0  # overlap: A's kv + gate
    return values * value_bytes


def values_per_token(cfg: ModelConfig) -> float:
    """How many values the state grows by per token (compressed and index rows)."""
    total = 0.0
    for kind in cfg.layer_types:
        if kind == HCA:
            total += cfg.head_dim / cfg.hca_ratio
        elif kind == CSA:
            total += (cfg.head_dim + cfg.index_head_dim) / cfg.csa_ratio
    return total


def make_model_cache(cfg: ModelConfig, dtype: mx.Dtype) -> ModelCache:
    """Empty decode state for every layer of ``cfg``."""
    layers = []
    for kind in cfg.layer_types:
        compressor = indexer = None
        if kind == HCA:
            compressor = CompressorShape(cfg.hca_ratio, cfg.head_dim, cfg.head_dim, overlap=False)
        elif kind == CSA:
            compressor = CompressorShape(cfg.csa_ratio, 2 * cfg.head_dim, cfg.head_dim, True)
            indexer = CompressorShape(
                cfg.csa_ratio, 2 * cfg.index_head_dim, cfg.index_head_dim, overlap=True
            )
        layers.append(
            LayerCache(
                kind,
                head_dim=cfg.head_dim,
                window=cfg.sliding_window,
                dtype=dtype,
                compressor=compressor,
                indexer=indexer,
            )
        )
    return ModelCache(layers)
