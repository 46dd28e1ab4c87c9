"""Compiled graphs (all calls on GPU, decode steps on CPU) and both layouts give the same logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from local_engine import load_model
from local_engine.errors import EngineError
from local_engine.model.weights import TransposedWeight


def prefill_then_decode(model: Any, ids: mx.array, cut: int) -> list[mx.array]:
    """Logits of a prefill of ``ids[:, :cut]``, then of each later token decoded alone."""
    cache = model.make_cache()
    out = [model(ids[:, :cut], cache=cache)]
    out += [model(ids[:, t : t + 1], cache=cache) for t in range(cut, ids.shape[1])]
    return out


def random_ids(seed: int, n: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 129280, size=(1, n)).astype(np.int32))


def max_delta(a: list[mx.array], b: list[mx.array]) -> float:
    return float(mx.abs(mx.concatenate(a, axis=1) - mx.concatenate(b, axis=1)).max())


def test_compiled_gpu_layout_model_matches_the_cpu_default(official_tiny: Path) -> None:
    plain = load_model(official_tiny, compile=False)
    assert not plain.compiled
    assert isinstance(plain.weights.layers[1].attn.compressor.wkv, TransposedWeight)
    fused = load_model(official_tiny, compile=True, layout="gpu")
    assert fused.compiled
    assert isinstance(fused.weights.layers[1].attn.compressor.wkv, mx.array)
    ids = random_ids(4, 24)
    assert (
        max_delta(prefill_then_decode(plain, ids, 20), prefill_then_decode(fused, ids, 20)) <= 1e-5
    )


def test_cpu_default_compiles_decode_steps_only_and_matches_uncompiled(official_tiny: Path) -> None:
    default = load_model(official_tiny)
    assert default.compiled == "decode"
    plain = load_model(official_tiny, compile=False)
    ids = random_ids(5, 30)
    a, b = prefill_then_decode(default, ids, 25), prefill_then_decode(plain, ids, 25)
    assert mx.array_equal(a[0], b[0])  # prefill is not compiled: the very same graph
    assert max_delta(a[1:], b[1:]) <= 1e-5


def test_an_unknown_compile_mode_is_a_clear_error(official_tiny: Path) -> None:
    with pytest.raises(EngineError, match="compile must be True, False or 'decode'"):
        load_model(official_tiny, compile="always")
