"""Decode state: what it holds, its size, and exact snapshot / restore (also through a file)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from local_engine import load_model
from local_engine.cache.kv_cache import ModelCache
from local_engine.errors import CacheError
from local_engine.model.config import CSA, HCA, SLIDING


@pytest.fixture(scope="module")
def model(official_tiny: Path):  # noqa: ANN201
    return load_model(official_tiny)


def ids(n: int, seed: int = 3) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 129280, size=(1, n)).astype(np.int32))


def expected_nbytes(model, tokens: int) -> int:  # noqa: ANN001
    """Bytes the architecture needs after ``tokens`` tokens (ENGINE.md's state table), fp32."""
    c = model.config
    total = 0
    for kind in c.layer_types:
        values = min(tokens, c.sliding_window - 1) * c.head_dim
        if kind == HCA:
            r = c.hca_ratio
            values += (tokens // r) * c.head_dim + 2 * (tokens % r) * c.head_dim
        if kind == CSA:
            r = c.csa_ratio
            for width in (c.head_dim, c.index_head_dim):
                values += (tokens // r) * width  # compressed rows
                values += 2 * (tokens % r) * 2 * width  # pending kv + gate, two series
                values += 2 * r * width if tokens >= r else 0  # overlap A series kv + gate
        total += values * 4
    return total


def test_state_holds_exactly_what_the_architecture_needs(model) -> None:  # noqa: ANN001
    assert set(model.config.layer_types) == {SLIDING, CSA, HCA}
    cache = model.make_cache()
    assert cache.nbytes == 0
    model(ids(130), cache=cache)
    assert cache.offset == 130
    assert cache.nbytes == expected_nbytes(model, 130)
    for _ in range(3):
        model(ids(1, seed=_), cache=cache)
    assert cache.nbytes == expected_nbytes(model, 133)
    # The window never grows past sliding_window - 1 rows.
    assert all(layer.window.shape[0] == model.config.sliding_window - 1 for layer in cache)


def test_snapshot_is_flat_named_arrays_and_ints(model) -> None:  # noqa: ANN001
    cache = model.make_cache()
    model(ids(70), cache=cache)
    snap = cache.snapshot()
    assert all(isinstance(k, str) for k in snap)
    assert all(isinstance(v, mx.array | int) for v in snap.values())
    assert snap["tokens"] == 70 and snap["num_layers"] == len(model.config.layer_types)
    assert "layers.1.indexer.overlap_kv" in snap and "layers.2.compressor.pending_kv" in snap
    sizes = sum(v.nbytes for v in snap.values() if isinstance(v, mx.array))
    assert sizes == cache.nbytes


def test_pending_buffers_are_empty_at_multiples_of_128(model) -> None:  # noqa: ANN001
    cache = model.make_cache()
    model(ids(256), cache=cache, chunk_size=100)
    snap = cache.snapshot()
    pending = [v for k, v in snap.items() if "pending" in k]
    assert pending and all(isinstance(v, mx.array) and v.shape[0] == 0 for v in pending)


def test_snapshot_survives_a_file_round_trip(model, tmp_path: Path) -> None:  # noqa: ANN001
    cache = model.make_cache()
    model(ids(150), cache=cache)
    snap = cache.snapshot()
    arrays = {k: v for k, v in snap.items() if isinstance(v, mx.array)}
    ints = {k: str(v) for k, v in snap.items() if isinstance(v, int)}
    path = tmp_path / "state.safetensors"
    mx.save_safetensors(str(path), arrays, metadata=ints)
    loaded, meta = mx.load(str(path), return_metadata=True)
    restored: dict[str, mx.array | int] = dict(loaded)
    restored.update({k: int(v) for k, v in meta.items()})

    follow = ids(40, seed=9)
    expected = np.array(model(follow, cache=cache))
    fresh = model.make_cache()
    fresh.restore(restored)
    assert np.array_equal(np.array(model(follow, cache=fresh)), expected)


def test_restore_rejects_a_snapshot_that_does_not_fit(model) -> None:  # noqa: ANN001
    cache = model.make_cache()
    model(ids(20), cache=cache)
    snap = cache.snapshot()
    with pytest.raises(CacheError, match="layers"):
        ModelCache(model.make_cache().layers[:2]).restore(snap)
    bad = dict(snap)
    bad["layers.2.compressor.pending_kv"] = mx.zeros((5, 64))
    with pytest.raises(CacheError, match=r"layers\.2\.compressor\.pending_kv' has shape \[5, 64\]"):
        model.make_cache().restore(bad)
    bad = dict(snap)
    bad["layers.0.ratio"] = 4
    with pytest.raises(CacheError, match="ratio 4"):
        model.make_cache().restore(bad)
    bad = dict(snap)
    del bad["layers.1.indexer.rows"]
    with pytest.raises(CacheError, match="missing"):
        model.make_cache().restore(bad)


def test_model_rejects_bad_inputs(model) -> None:  # noqa: ANN001
    from local_engine.errors import EngineError

    with pytest.raises(EngineError, match=r"shape \[1, T\]"):
        model(mx.array([1, 2, 3]))
    with pytest.raises(EngineError, match="empty"):
        model(mx.zeros((1, 0), dtype=mx.int32))
    with pytest.raises(EngineError, match="make_cache"):
        model(ids(3), cache=ModelCache(model.make_cache().layers[:1]))
