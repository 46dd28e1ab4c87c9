"""The official-graph switches: off by default; on, they round the way their docstring says."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from local_engine import load_model
from local_engine.model.graph_options import (
    GraphOptions,
    fp4_roundtrip,
    fp8_roundtrip,
    indexer_rotate_fp4,
    kv_fp8_roundtrip,
)
from local_engine.model.transformer import Model

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)


def blocks(x: np.ndarray, size: int) -> np.ndarray:
    return x.reshape(*x.shape[:-1], -1, size)


def test_fp8_roundtrip_error_is_within_e4m3_precision() -> None:
    x = np.random.default_rng(0).standard_normal((16, 448)).astype(np.float32) * 3
    y = np.array(fp8_roundtrip(mx.array(x)))
    bx, by = blocks(x, 64), blocks(y, 64)
    amax = np.abs(bx).max(-1, keepdims=True)
    # 3 mantissa bits: relative error at most 2^-4 for normal values, tiny below.
    assert np.all(np.abs(by - bx) <= np.maximum(np.abs(bx) * 2**-4, amax * 2**-12))
    assert not np.array_equal(x, y)
    # Already-rounded values stay put.
    assert np.array_equal(np.array(fp8_roundtrip(mx.array(y))), y)


def test_kv_fp8_roundtrip_leaves_the_rope_channels_exact() -> None:
    x = mx.random.normal((5, 512), key=mx.random.key(1))
    y = kv_fp8_roundtrip(x, 64)
    assert np.array_equal(np.array(y[:, -64:]), np.array(x[:, -64:]))
    assert not np.array_equal(np.array(y[:, :-64]), np.array(x[:, :-64]))


def test_fp4_roundtrip_lands_on_the_e2m1_grid_times_a_power_of_two() -> None:
    x = np.random.default_rng(2).standard_normal((8, 128)).astype(np.float32)
    y = blocks(np.array(fp4_roundtrip(mx.array(x))), 32)
    bx = blocks(x, 32)
    scale = 2.0 ** np.ceil(np.log2(np.abs(bx).max(-1, keepdims=True) / 6))
    codes = np.abs(y / scale)
    assert np.all(np.isin(codes, E2M1))
    # Nearest grid point: the error is at most half the widest step (2) times the scale.
    assert np.all(np.abs(y - bx) <= scale * 1.0 + 1e-7)


def test_hadamard_rotation_preserves_dot_products_before_rounding() -> None:
    q = mx.random.normal((4, 128), key=mx.random.key(3))
    k = mx.random.normal((6, 128), key=mx.random.key(4))
    hq, hk = mx.hadamard_transform(q), mx.hadamard_transform(k)
    np.testing.assert_allclose(np.array(hq @ hk.T), np.array(q @ k.T), atol=1e-4)
    # With FP4 rounding the scores are close, not equal.
    approx = np.array(indexer_rotate_fp4(q) @ indexer_rotate_fp4(k).T)
    exact = np.array(q @ k.T)
    assert 0 < np.abs(approx - exact).max() < 0.25 * np.abs(exact).max() + 1.0


@pytest.fixture(scope="module")
def base(official_tiny: Path) -> Model:
    return load_model(official_tiny)


def tokens(n: int, seed: int = 5) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 129280, size=(1, n)).astype(np.int32))


def test_switches_are_off_by_default(base: Model) -> None:
    assert base.graph == GraphOptions() and not base.graph.fp8_kv and not base.graph.indexer_fp4
    assert GraphOptions.official() == GraphOptions(fp8_kv=True, indexer_fp4=True)


def test_fp8_kv_changes_logits_and_stays_consistent_across_calls(base: Model) -> None:
    model = Model(base.config, base.weights, graph=GraphOptions(fp8_kv=True))
    ids = tokens(200)
    full = np.array(model(ids)[0])
    plain = np.array(base(ids)[0])
    assert np.isfinite(full).all()
    assert np.abs(full - plain).max() > 1e-3  # the switch does something
    cache = model.make_cache()
    parts = [np.array(model(ids[:, :150], cache=cache)[0])]
    for t in range(150, 200):
        parts.append(np.array(model(ids[:, t : t + 1], cache=cache)[0]))
    assert np.abs(np.concatenate(parts) - full).max() <= 1e-4


def test_indexer_fp4_changes_the_selection_only_a_little(base: Model) -> None:
    cfg = base.config.with_overrides(index_topk=8)
    off = Model(cfg, base.weights)
    on = Model(cfg, base.weights, graph=GraphOptions(indexer_fp4=True))
    off.record_indexer = on.record_indexer = True
    ids = tokens(160)
    a, b = np.array(off(ids)), np.array(on(ids))
    assert np.isfinite(b).all() and not np.array_equal(a, b)
    sel_off = np.array(off.last_indexer_selection[1])
    sel_on = np.array(on.last_indexer_selection[1])
    rows = sel_off.sum(-1) == 8
    assert rows.sum() > 100
    overlap = (sel_off & sel_on)[rows].sum() / sel_off[rows].sum()
    assert 0.5 < overlap < 1.0
    assert np.array_equal(np.array(on(ids)), b)  # deterministic
