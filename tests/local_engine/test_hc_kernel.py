"""The fused mHC kernel is used only where it was checked; elsewhere the MLX ops run."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from local_engine import load_model
from local_engine.errors import EngineError
from local_engine.model.hyper_connections import fused_kernel_ready, fused_weights, mix_weights
from local_engine.model.transformer import Model


def test_on_cpu_the_kernel_is_not_ready_and_models_use_the_mlx_ops(official_tiny: Path) -> None:
    assert mx.default_device() == mx.cpu
    assert not fused_kernel_ready(hc=4, sinkhorn_iters=20, hc_eps=1e-6)
    assert load_model(official_tiny).fused_hc is False
    with pytest.raises(RuntimeError, match="CUDA or Metal"):
        fused_weights(
            mx.zeros((1, 24)), mx.zeros((24,)), mx.ones((3,)), hc=4, sinkhorn_iters=3, hc_eps=1e-6
        )


def test_asking_for_the_kernel_where_it_cannot_run_is_an_error(official_tiny: Path) -> None:
    model = load_model(official_tiny)
    with pytest.raises(EngineError, match="fused_hc=True needs"):
        Model(model.config, model.weights, fused_hc=True)


def test_mix_weights_are_close_to_doubly_stochastic() -> None:
    mix = mx.random.normal((9, 24), key=mx.random.key(0)) * 3
    pre, post, comb = mix_weights(
        mix, mx.zeros((24,)), mx.ones((3,)), hc=4, sinkhorn_iters=20, hc_eps=1e-6
    )
    assert pre.shape == post.shape == (9, 4) and comb.shape == (9, 4, 4)
    assert float(mx.abs(comb.sum(axis=-2) - 1).max()) < 1e-4  # columns: normalized last
    assert float(mx.abs(comb.sum(axis=-1) - 1).max()) < 5e-2  # rows: 20 iterations, close
    assert float(post.min()) > 0 and float(post.max()) < 2


def test_the_self_checks_float64_reference_is_the_mlx_ops_function() -> None:
    # The GPU self-check compares the kernels with this host reference (the MLX ops
    # are not exact on CUDA: TF32 matmuls); here, on the CPU, the ops are exact fp32.
    import numpy as np

    from local_engine.model.hyper_connections import _mix_weights_f64, _post_f64, hc_post

    mix = mx.random.normal((5, 24), key=mx.random.key(1)) * 2
    base = mx.random.normal((24,), key=mx.random.key(2))
    scale = mx.array([0.5, 1.5, 3.0])
    kw = {"hc": 4, "sinkhorn_iters": 20, "hc_eps": 1e-6}
    ops = mix_weights(mix, base, scale, **kw)
    ref = _mix_weights_f64(np.array(mix), np.array(base), np.array(scale), **kw)
    for a, b in zip(ops, ref, strict=True):
        assert np.abs(np.array(a) - b).max() < 1e-5
    streams = mx.random.normal((5, 4, 64), key=mx.random.key(3))
    out = mx.random.normal((5, 64), key=mx.random.key(4))
    got = np.array(hc_post(streams, out, ops[1], ops[2]))
    want = _post_f64(streams, out, ops[1], ops[2])
    assert np.abs(got - want).max() < 1e-5
    # A wrong reference would be caught: swapping comb's axes changes the result.
    swapped = _post_f64(streams, out, ops[1], ops[2].swapaxes(-1, -2))
    assert np.abs(got - swapped).max() > 1e-2
