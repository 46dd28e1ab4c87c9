"""The memory plan equals what the converter writes, what the loader holds, and what the cache
keeps -- exactly, on the tiny config -- and agrees with ENGINE.md's figures for Flash."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from local_engine import load_model
from local_engine.checkpoint.convert import convert
from local_engine.checkpoint.names import parse_name
from local_engine.checkpoint.plan import kv_plan, memory_plan, preset_model_config
from local_engine.checkpoint.recipes import component_of, load_recipe
from local_engine.checkpoint.safetensors import list_shards, read_header
from local_engine.errors import EngineError
from local_engine.model.config import CSA, HCA, SLIDING, load_config

VARIANTS = {
    "q2": {},
    "q4": {},
    "q2-g32-down4": {"group_size": 32, "down_bits": 4},
    "q2-affine8": {"eight_bit": "affine"},
}


def recipe_of(variant: str):  # noqa: ANN201 - a Recipe
    return load_recipe(variant.split("-")[0]).with_options(**VARIANTS[variant])


def stored_by_component(model_dir: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for shard in list_shards(model_dir):
        for name, info in read_header(shard)[0].items():
            parsed = parse_name(name)
            assert parsed is not None
            component = component_of(parsed.path)
            out[component] = out.get(component, 0) + info.end - info.start
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_plan_equals_the_converted_bytes_and_the_loaded_model(
    variant: str, official_tiny: Path, tmp_path: Path
) -> None:
    recipe = recipe_of(variant)
    out = convert(official_tiny, tmp_path / variant, recipe).dst
    plan = memory_plan(load_config(out), recipe)
    measured = stored_by_component(out)
    assert measured == {c.component: c.stored_bytes for c in plan.components}
    assert sum(measured.values()) == plan.total_weight_bytes
    # bf16 compute, as on the Mac: what the loader holds and what a token reads.
    model = load_model(out, dtype="bfloat16")
    assert sum(model.weight_bytes_by_dtype().values()) == plan.resident_weight_bytes
    assert model.weight_bytes_per_token() == plan.bytes_read_per_token


@pytest.mark.parametrize("tokens", [256, 301])  # a snapshot point; pending buffers non-empty
def test_kv_plan_equals_the_cache_the_model_keeps(official_tiny: Path, tokens: int) -> None:
    model = load_model(official_tiny)  # float32 on this CPU
    cache = model.make_cache()
    ids = mx.array(np.random.default_rng(0).integers(0, 129280, (1, tokens)).astype(np.int32))
    model.prefill(ids, cache, chunk_size=100)
    plan = kv_plan(model.config, tokens, dtype_bytes=4)
    assert [layer.nbytes for layer in cache] == list(plan.per_layer)
    assert plan.total_bytes == cache.nbytes
    kinds = set(model.config.layer_types)
    assert kinds == {SLIDING, CSA, HCA} and all(plan.by_layer_type[k] > 0 for k in kinds)


def test_flash_plan_matches_engine_md() -> None:
    """ENGINE.md: 284 B parameters, 6.49 B routed + 6.78 B other active a token, experts
    ~86.6 GB at affine 2-bit group 64 and ~77.9 GB at group 128, 3,440 KV values a token."""
    cfg = preset_model_config("deepseek-v4-flash")
    q2 = memory_plan(cfg, load_recipe("q2"))
    params = {c.component: c.parameters for c in q2.components}
    experts = params["routed_experts"] + params["routed_experts_down"]
    assert round(q2.parameters / 1e9) == 284
    assert round(experts * 6 / 256 / 1e9, 2) == 6.49
    other_active = q2.parameters - experts - params["embed"]
    assert round(other_active / 1e9, 2) == pytest.approx(6.78, abs=0.01)

    def expert_gb(plan) -> float:  # noqa: ANN001
        by = {c.component: c.stored_bytes for c in plan.components}
        return (by["routed_experts"] + by["routed_experts_down"]) / 1e9

    assert expert_gb(q2) == pytest.approx(86.6, abs=0.05)
    g128 = memory_plan(cfg, load_recipe("q2").with_options(group_size=128))
    assert expert_gb(g128) == pytest.approx(77.9, abs=0.05)
    growth = kv_plan(cfg, 2**20 + 1024).total_bytes - kv_plan(cfg, 2**20).total_bytes
    assert growth == 1024 * 3440 * 2  # bf16
    print(
        f"q2 full model: {q2.total_weight_bytes / 1e9:.2f} GB of weights, "
        f"{q2.bytes_read_per_token / 1e9:.2f} GB read a token"
    )


def test_fit_on_a_128_gb_mac() -> None:
    cfg = preset_model_config("deepseek-v4-flash")
    q2 = memory_plan(cfg, load_recipe("q2"), context=65536)
    assert q2.fits and q2.usable_bytes < q2.memory_bytes == 128 * 1024**3
    assert q2.needed_bytes == q2.resident_weight_bytes + q2.overhead_bytes + q2.kv.total_bytes
    assert not memory_plan(cfg, load_recipe("q4")).fits
    assert not memory_plan(cfg, load_recipe("q2"), memory_gb=96).fits
    long = memory_plan(cfg, load_recipe("q2"), context=1_000_000)
    assert long.kv.total_bytes > 10 * q2.kv.total_bytes
    with pytest.raises(EngineError, match="exceeds"):
        memory_plan(cfg, load_recipe("q2"), usable_gb=200)
    with pytest.raises(EngineError, match="unknown preset"):
        preset_model_config("deepseek-v5")
