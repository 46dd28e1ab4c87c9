"""``compare``: per-position KL and top-1, and what the recipes cost on a tiny random model.

The reference is the float32 twin of the tiny official checkpoint (FP8/FP4 decoded). The
asymmetric q2 (8-bit attention, shared expert and head) must be closer to it than the same
model with everything at 2 bits, and q4 closer than q2. The figures are printed (-s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from local_engine.checkpoint.compare import (
    DEFAULT_PROMPTS,
    compare_models,
    kl_and_top1,
    log_softmax,
    read_prompts_file,
    tokenize_prompts,
)
from local_engine.checkpoint.convert import convert
from local_engine.checkpoint.recipes import Recipe, load_recipe, recipe_from_dict
from local_engine.errors import EngineError

MAX_TOKENS = 48


def all_two_bit() -> Recipe:
    """q2 with the 8-bit components at 2 bits too: what the asymmetric mix is up against."""
    raw = load_recipe("q2").to_dict()
    raw["name"] = "all-2bit"
    two = {"format": "affine", "bits": 2, "group_size": 64}
    raw["components"].update(attention=two, shared_experts=two, head=two)
    return recipe_from_dict(raw)


def test_kl_and_top1_agree_with_torch() -> None:
    rng = np.random.default_rng(0)
    a = log_softmax(rng.standard_normal((7, 50)).astype(np.float32) * 3)
    b = log_softmax(rng.standard_normal((7, 50)).astype(np.float32) * 3)
    kl, agree = kl_and_top1(a, b)
    want = torch.nn.functional.kl_div(
        torch.from_numpy(b), torch.from_numpy(a), log_target=True, reduction="none"
    ).sum(-1)
    assert np.allclose(kl, want.numpy(), rtol=1e-4, atol=1e-6)
    assert np.array_equal(agree, a.argmax(-1) == b.argmax(-1))
    same, all_agree = kl_and_top1(a, a)
    assert np.allclose(same, 0, atol=1e-6) and all_agree.all()
    with pytest.raises(EngineError, match="disagree on shapes"):
        kl_and_top1(a, b[:, :10])


@pytest.fixture(scope="module")
def conversions(official_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipes")
    recipes = {"q2": load_recipe("q2"), "q4": load_recipe("q4"), "all-2bit": all_two_bit()}
    return {name: convert(official_tiny, root / name, r).dst for name, r in recipes.items()}


def test_asymmetric_q2_beats_all_2bit_and_q4_beats_q2(
    official_tiny_twin: Path, conversions: dict[str, Path]
) -> None:
    results = {
        name: compare_models(official_tiny_twin, path, max_tokens=MAX_TOKENS)
        for name, path in conversions.items()
    }
    for name, r in results.items():
        print(
            f"{name:>8} vs f32: mean KL {r.mean_kl:.4f} nats (p95 {r.kl_quantile(0.95):.4f},"
            f" max {r.max_kl:.4f}), top-1 {100 * r.top1_agreement:.1f} % over {r.positions}"
            " positions"
        )
    q2, q4, all2 = results["q2"], results["q4"], results["all-2bit"]
    assert q2.mean_kl < all2.mean_kl  # the 8-bit non-expert weights earn their bytes
    assert q4.mean_kl < q2.mean_kl
    assert q4.top1_agreement >= q2.top1_agreement
    lengths = q2.prompt_lengths
    assert len(lengths) == len(DEFAULT_PROMPTS) and q2.positions == sum(lengths)
    assert all(0 < n <= MAX_TOKENS for n in lengths)


def test_a_model_against_itself_is_identical(conversions: dict[str, Path]) -> None:
    r = compare_models(conversions["q2"], conversions["q2"], ["one two three four"])
    assert r.max_kl < 1e-6 and r.top1_agreement == 1.0
    d = r.to_dict()
    assert d["positions"] == len(d["per_position"]["kl"]) == r.positions


def test_prompts_come_from_lines_or_blank_line_blocks(tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("first prompt\nsecond prompt\n\n")
    assert read_prompts_file(lines) == ["first prompt", "second prompt"]
    blocks = tmp_path / "blocks.txt"
    blocks.write_text("def f():\n    return 1\n\nclass A:\n    pass\n")
    assert read_prompts_file(blocks) == ["def f():\n    return 1", "class A:\n    pass"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(EngineError, match="is empty"):
        read_prompts_file(empty)
    with pytest.raises(EngineError, match="cannot read prompts file"):
        read_prompts_file(tmp_path / "missing.txt")


def test_prompts_are_cut_to_max_tokens(official_tiny: Path) -> None:
    seqs = tokenize_prompts(official_tiny, ["word " * 100, "short"], 10)
    assert len(seqs[0]) == 10 and 0 < len(seqs[1]) < 10
