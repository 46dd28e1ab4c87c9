"""Random device-side weights in a recipe's layout read exactly what ``engine plan`` says."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from local_engine.checkpoint.plan import memory_plan
from local_engine.checkpoint.random_device import random_weights
from local_engine.checkpoint.random_weights import preset_config
from local_engine.checkpoint.recipes import load_recipe
from local_engine.model.transformer import Model
from local_engine.model.weights import QuantizedWeight


@pytest.mark.parametrize("recipe", ["q2", "q4"])
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_bytes_read_and_resident_equal_the_plan(recipe: str, preset: str) -> None:
    cfg = preset_config(preset)
    rec = load_recipe(recipe)
    model = Model(cfg, random_weights(cfg, 0, dtype=mx.bfloat16, recipe=rec), dtype=mx.bfloat16)
    plan = memory_plan(cfg, rec)
    assert model.weight_bytes_per_token() == plan.bytes_read_per_token
    assert sum(model.weight_bytes_by_dtype().values()) == plan.resident_weight_bytes


def test_the_layout_is_the_recipes_and_activations_stay_finite() -> None:
    cfg = preset_config("tiny")
    weights = random_weights(cfg, 1, dtype=mx.bfloat16, recipe=load_recipe("q2"))
    layer = weights.layers[-1]
    gate_up = layer.moe.experts.gate_up
    assert isinstance(gate_up, QuantizedWeight)
    assert (gate_up.mode, gate_up.bits, gate_up.group_size) == ("affine", 2, 64)
    assert gate_up.scales.dtype == mx.bfloat16 and gate_up.biases is not None
    assert isinstance(layer.attn.wq_a, QuantizedWeight) and layer.attn.wq_a.mode == "mxfp8"
    assert isinstance(weights.head, QuantizedWeight) and weights.head.bits == 8
    assert weights.embed.dtype == mx.bfloat16
    logits = np.array(Model(cfg, weights, dtype=mx.bfloat16)(mx.array([[5, 6, 7]])))
    assert np.isfinite(logits).all() and 0.3 < logits.std() < 3
