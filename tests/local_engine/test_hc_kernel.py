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
