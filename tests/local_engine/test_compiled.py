"""The compiled graph (the GPU default) and the [out, in] layout give the same logits."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from local_engine import load_model
from local_engine.weights import TransposedWeight


def test_compiled_gpu_layout_model_matches_the_cpu_default(official_tiny: Path) -> None:
    plain = load_model(official_tiny)
    assert not plain.compiled
    assert isinstance(plain.weights.layers[1].attn.compressor.wkv, TransposedWeight)
    fused = load_model(official_tiny, compile=True, layout="gpu")
    assert fused.compiled
    assert isinstance(fused.weights.layers[1].attn.compressor.wkv, mx.array)
    ids = mx.array(np.random.default_rng(4).integers(0, 129280, size=(1, 24)).astype(np.int32))
    caches = plain.make_cache(), fused.make_cache()
    a = [plain(ids[:, :20], cache=caches[0])]
    b = [fused(ids[:, :20], cache=caches[1])]
    for t in range(20, 24):
        a.append(plain(ids[:, t : t + 1], cache=caches[0]))
        b.append(fused(ids[:, t : t + 1], cache=caches[1]))
    delta = float(mx.abs(mx.concatenate(a, axis=1) - mx.concatenate(b, axis=1)).max())
    assert delta <= 1e-5
