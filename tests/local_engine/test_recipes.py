"""Recipes are data: the built-in q2/q4, their options, their errors, and what each tensor is."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_engine.checkpoint.names import expected_shapes
from local_engine.checkpoint.random_weights import preset_config
from local_engine.checkpoint.recipes import (
    COMPONENTS,
    HASH_TABLE,
    Format,
    RecipeError,
    builtin_recipes,
    component_of,
    load_recipe,
    recipe_from_dict,
)

REPO = Path(__file__).resolve().parents[2]


def test_builtin_recipes_are_the_yaml_files_in_configs() -> None:
    names = builtin_recipes()
    assert {"q2", "q4"} <= set(names)
    assert names == sorted(p.stem for p in (REPO / "configs" / "recipes").glob("*.yaml"))


def test_q2_is_the_asymmetric_mix_the_issue_asks_for() -> None:
    q2 = load_recipe("q2")
    f = q2.format_for
    assert f("routed_experts") == Format("affine", 2, 64)
    assert f("routed_experts_down") == Format("affine", 2, 64)
    for component in ("attention", "shared_experts", "head"):
        assert f(component).bits == 8, component
    for component in ("embed", "router", "compressor", "indexer"):
        assert f(component) == Format("bf16"), component
    for component in ("norms", "sinks", "mhc"):
        assert f(component) == Format("f32"), component


def test_q4_differs_from_q2_only_in_the_routed_experts() -> None:
    q2, q4 = load_recipe("q2"), load_recipe("q4")
    assert q4.format_for("routed_experts") == Format("affine", 4, 64)
    assert q4.format_for("routed_experts_down") == Format("affine", 4, 64)
    others = [c for c in COMPONENTS if not c.startswith("routed_experts")]
    assert [q2.format_for(c) for c in others] == [q4.format_for(c) for c in others]


def test_options_change_the_experts_group_the_down_bits_and_the_8bit_mode() -> None:
    q2 = load_recipe("q2")
    g32 = q2.with_options(group_size=32)
    assert g32.format_for("routed_experts") == Format("affine", 2, 32)
    assert g32.format_for("routed_experts_down") == Format("affine", 2, 32)
    down4 = q2.with_options(down_bits=4)
    assert down4.format_for("routed_experts") == Format("affine", 2, 64)
    assert down4.format_for("routed_experts_down") == Format("affine", 4, 64)
    affine8 = q2.with_options(eight_bit="affine")
    for component in ("attention", "shared_experts", "head"):
        assert affine8.format_for(component) == Format("affine", 8, 64)
    mx8 = q2.with_options(eight_bit="mxfp8")
    assert mx8.format_for("head") == Format("mxfp8")
    assert q2.with_options() is q2
    assert "g32" in g32.name and "down4" in down4.name


def test_bits_per_weight_of_the_formats() -> None:
    # affine: bits + a bf16 scale and a bf16 bias per group; mx: bits + one byte per 32.
    assert Format("affine", 2, 64).bits_per_weight() == 2 + 32 / 64
    assert Format("affine", 2, 128).bits_per_weight() == 2 + 32 / 128
    assert Format("mxfp8").bits_per_weight() == 8 + 8 / 32
    assert Format("bf16").bits_per_weight() == 16


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"norms": {"format": "affine", "bits": 2, "group_size": 64}}, "must stay f32 or bf16"),
        ({"attention": {"format": "affine", "bits": 7, "group_size": 64}}, "bits must be one of"),
        ({"attention": {"format": "affine", "bits": 4, "group_size": 48}}, "group_size must be"),
        ({"attention": {"format": "int4"}}, "unknown format"),
        ({"attention": {"format": "affine", "bits": 4, "groups": 64}}, "unknown keys"),
        ({"atention": "bf16"}, "unknown component 'atention'"),
    ],
)
def test_invalid_recipes_name_the_key_and_the_problem(change: dict, message: str) -> None:
    raw = load_recipe("q2").to_dict()
    raw["components"].update(change)
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(raw, where="my.yaml")


def test_a_recipe_must_cover_every_component(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("name: partial\ncomponents:\n  routed_experts: bf16\n")
    with pytest.raises(RecipeError, match="does not say how to store") as info:
        load_recipe(str(path))
    assert "attention" in str(info.value) and str(path) in str(info.value)


def test_unknown_recipe_lists_the_builtin_ones() -> None:
    with pytest.raises(RecipeError, match="built-in recipes: .*q2.*q4"):
        load_recipe("q3")


def test_down_bits_need_affine_experts() -> None:
    raw = load_recipe("q2").to_dict()
    raw["components"]["routed_experts"] = {"format": "mxfp4"}
    raw["components"]["routed_experts_down"] = {"format": "mxfp4"}
    with pytest.raises(RecipeError, match="--down-bits needs affine"):
        recipe_from_dict(raw).with_options(down_bits=4)


def test_every_tensor_of_the_architecture_has_a_component() -> None:
    cfg = preset_config("tiny")
    seen = {component_of(path) for path in expected_shapes(cfg)}
    assert seen == set(COMPONENTS) | {HASH_TABLE}
    assert component_of("layers.2.attn.indexer.compressor.wkv") == "compressor"
    assert component_of("layers.2.attn.indexer.compressor.norm") == "norms"
    assert component_of("layers.2.attn.indexer.wq_b") == "indexer"
    assert component_of("layers.2.attn.compressor.ape") == "position_bias"
    assert component_of("layers.2.moe.experts.down") == "routed_experts_down"
    assert component_of("layers.2.moe.experts.gate_up") == "routed_experts"
    assert component_of("hc_head.fn") == "mhc"
    with pytest.raises(RecipeError):
        component_of("layers.2.mystery")
