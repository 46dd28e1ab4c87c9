"""CPU prefill's per-expert grouping gives what the gather matmuls give."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from local_engine.model.moe import routed_experts
from local_engine.model.weights import ExpertWeights, QuantizedWeight, dense_expert_stack, quantize

E, D, INTER, K = 8, 128, 64, 3


def experts(kind: str) -> ExpertWeights:
    gu = mx.random.normal((E, 2 * INTER, D), key=mx.random.key(1)) * 0.1
    dn = mx.random.normal((E, D, INTER), key=mx.random.key(2)) * 0.1
    if kind == "dense":
        return ExpertWeights(dense_expert_stack(gu), dense_expert_stack(dn), E, INTER, D)
    mode = {"mxfp4": "mxfp4", "affine4": "affine"}[kind]
    a, b = quantize(gu, mode=mode), quantize(dn, mode=mode)
    assert isinstance(a, QuantizedWeight) and isinstance(b, QuantizedWeight)
    return ExpertWeights(a, b, E, INTER, D)


@pytest.mark.parametrize("kind", ["dense", "mxfp4", "affine4"])
@pytest.mark.parametrize("tokens", [1, 30, 200])
def test_host_grouping_equals_gather_matmuls(kind: str, tokens: int) -> None:
    ex = experts(kind)
    rng = np.random.default_rng(tokens)
    # Some experts get no token at all: only the first five are ever picked.
    idx = np.stack([rng.choice(5, K, replace=False) for _ in range(tokens)]).astype(np.uint32)
    x = mx.array(rng.normal(size=(tokens, D)).astype(np.float32))
    w = mx.array(rng.random((tokens, K)).astype(np.float32))
    gathered = routed_experts(x, mx.array(idx), w, ex, 7.0)
    grouped = routed_experts(x, mx.array(idx), w, ex, 7.0, host_grouping=True)
    assert grouped.shape == (tokens, D)
    assert float(mx.abs(grouped - gathered).max()) <= 1e-5 * float(mx.abs(gathered).max())


@pytest.mark.parametrize("recipe", ["q2", "q4"])
def test_every_expert_prefill_gives_the_same_logits_on_a_recipe_layout(recipe: str) -> None:
    from local_engine.checkpoint.random_device import random_weights
    from local_engine.checkpoint.random_weights import preset_config
    from local_engine.checkpoint.recipes import load_recipe
    from local_engine.model.moe import ExpertPrefill
    from local_engine.model.transformer import Model

    cfg = preset_config("tiny")
    weights = random_weights(cfg, 3, dtype=mx.float32, recipe=load_recipe(recipe))
    ids = mx.array([list(range(200, 260))])
    out = {}
    for mode in ExpertPrefill:
        model = Model(cfg, weights, dtype=mx.float32, compile=False, expert_prefill=mode)
        out[mode] = np.array(model(ids))
    base = out[ExpertPrefill.GATHER]
    assert np.abs(base).max() > 0.1
    for mode, logits in out.items():
        assert np.abs(logits - base).max() < 1e-3 * np.abs(base).max(), mode
