"""The MLX engine gives the transformers reference's logits on the same weights (float32, CPU).

Two tiny configs, both with hc_mult 4, sinks, position biases, score-correction
biases and tid2eid randomized, hash and scored MoE layers:

* SMALL_RATIOS: sliding window 8, CSA ratio 4, HCA ratio 8; 72 tokens (9x the
  window, 18 CSA and 9 HCA windows).
* RATIO_128: sliding window 16, CSA ratio 4, HCA ratio 128; 300 tokens (> 3x
  the window, two full HCA windows and a partial one, 75 CSA windows).

``index_topk`` is at least the number of compressed entries, except in the
small-top-k test, which compares the selected sets instead (ReLU zeros make
ties whose order is arbitrary).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hf_reference import (
    CSA,
    HCA,
    SLIDING,
    TinySpec,
    capture_indexer,
    reference_logits,
    reference_model,
    save_reference,
)

from local_engine import load_model
from local_engine.model.transformer import Model

TOL = 1e-4

SMALL_RATIOS = TinySpec(
    layer_types=(SLIDING, CSA, HCA, CSA, HCA),
    mlp_layer_types=("hash_moe", "hash_moe", "moe", "moe", "moe"),
    csa_ratio=4,
    hca_ratio=8,
    sliding_window=8,
    index_topk=64,
)
RATIO_128 = TinySpec(
    layer_types=(SLIDING, HCA, CSA),
    mlp_layer_types=("hash_moe", "moe", "moe"),
    csa_ratio=4,
    hca_ratio=128,
    sliding_window=16,
    index_topk=128,
)
SMALL_TOPK = TinySpec(
    layer_types=(SLIDING, CSA, CSA),
    mlp_layer_types=("hash_moe", "moe", "moe"),
    csa_ratio=4,
    hca_ratio=8,
    sliding_window=8,
    index_topk=5,
    index_n_heads=8,
)


class Case:
    """A reference model, its checkpoint loaded by our engine, tokens and reference logits."""

    def __init__(self, spec: TinySpec, length: int, path: Path, seed: int) -> None:
        self.spec = spec
        self.reference = reference_model(spec, seed)
        save_reference(self.reference, path)
        self.model: Model = load_model(path)
        rng = np.random.default_rng(seed)
        self.ids = rng.integers(0, spec.vocab_size, size=length)
        self.expected = reference_logits(self.reference, self.ids)

    def tokens(self, start: int = 0, stop: int | None = None) -> mx.array:
        return mx.array(self.ids[start:stop][None].astype(np.int32))


def max_delta(a: mx.array | np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.array(a) - b).max())


@pytest.fixture(scope="module")
def small_ratios(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return Case(SMALL_RATIOS, 72, tmp_path_factory.mktemp("small_ratios"), seed=3)


@pytest.fixture(scope="module")
def ratio_128(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return Case(RATIO_128, 300, tmp_path_factory.mktemp("ratio_128"), seed=5)


@pytest.fixture(params=["small_ratios", "ratio_128"])
def case(request: pytest.FixtureRequest) -> Case:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    "param",
    [
        "model.layers.2.self_attn.compressor.position_bias",  # HCA compressor
        "model.layers.1.self_attn.compressor.position_bias",  # CSA compressor (overlap)
        "model.layers.3.self_attn.sinks",
        "model.layers.3.mlp.gate.e_score_correction_bias",
    ],
)
def test_the_reference_is_sensitive_to_what_we_compare(small_ratios: Case, param: str) -> None:
    """The tolerance means something: a random nudge to parameters that random init
    leaves at zero moves the logits by far more than 1e-4."""
    import torch

    ref = small_ratios.reference
    assert float(np.abs(small_ratios.expected).max()) > 1.0
    tensor = dict(ref.named_parameters()) | dict(ref.named_buffers())
    p = tensor[param]
    with torch.no_grad():
        saved = p.clone()
        p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
        moved = reference_logits(ref, small_ratios.ids)
        p.copy_(saved)
    assert np.abs(moved - small_ratios.expected).max() > 100 * TOL


def test_full_sequence_logits_match_reference(case: Case) -> None:
    got = case.model(case.tokens())
    assert got.shape == (1, len(case.ids), case.spec.vocab_size)
    delta = max_delta(got[0], case.expected)
    print(f"full-sequence max|delta| {case.spec.hca_ratio=}: {delta:.3g}")
    assert delta <= TOL


def test_prefill_then_token_by_token_decode_matches_reference(case: Case) -> None:
    model = case.model
    cache = model.make_cache()
    prefill = 13  # not aligned to any window: pending buffers carry over into decode
    outs = [model(case.tokens(0, prefill), cache=cache)[0]]
    for t in range(prefill, len(case.ids)):
        step = model(case.tokens(t, t + 1), cache=cache)
        assert step.shape == (1, 1, case.spec.vocab_size)
        outs.append(step[0])
    got = mx.concatenate(outs)
    delta = max_delta(got, case.expected)
    print(f"decode max|delta| {case.spec.hca_ratio=}: {delta:.3g}")
    assert delta <= TOL
    assert cache.offset == len(case.ids)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_prefill_equals_single_shot(case: Case, chunk: int) -> None:
    single = np.array(case.model(case.tokens())[0])
    chunked = case.model(case.tokens(), chunk_size=chunk)[0]
    delta = max_delta(chunked, single)
    print(f"chunk {chunk} vs single max|delta| {case.spec.hca_ratio=}: {delta:.3g}")
    assert delta <= TOL
    assert max_delta(chunked, case.expected) <= TOL


def test_prefill_method_returns_last_position_logits(ratio_128: Case) -> None:
    cache = ratio_128.model.make_cache()
    last = ratio_128.model.prefill(ratio_128.tokens(), cache, chunk_size=64)
    assert last.shape == (1, 1, ratio_128.spec.vocab_size)
    assert max_delta(last[0, 0], ratio_128.expected[-1]) <= TOL
    assert cache.offset == len(ratio_128.ids)


def test_snapshot_restore_mid_sequence_continues_identically(case: Case) -> None:
    model = case.model
    cut = 150 if len(case.ids) > 150 else 37  # mid-window for every ratio
    cache = model.make_cache()
    model(case.tokens(0, cut), cache=cache)
    snap = cache.snapshot()
    mx.eval([v for v in snap.values() if isinstance(v, mx.array)])
    first = np.array(model(case.tokens(cut), cache=cache)[0])

    fresh = model.make_cache()
    fresh.restore(snap)
    again = np.array(model(case.tokens(cut), cache=fresh)[0])
    assert np.array_equal(first, again)
    # The snapshot did not move when the original cache advanced past it.
    cache.restore(snap)
    third = np.array(model(case.tokens(cut), cache=cache)[0])
    assert np.array_equal(first, third)
    delta = max_delta(first, case.expected[cut:])
    print(f"snapshot/restore: identical continuation; vs reference max|delta| {delta:.3g}")
    assert delta <= TOL


def test_small_topk_selects_the_reference_sets(tmp_path: Path) -> None:
    """With index_topk < entries, each query's chosen compressed rows are the reference's.

    Rows whose k-th best score ties with the next (ReLU zeros) may legitimately
    differ in which tied entry is picked: there only the strictly-better
    entries and the count must agree.
    """
    spec = SMALL_TOPK
    ref = reference_model(spec, seed=11)
    picks, scores = capture_indexer(ref)
    ids = np.random.default_rng(11).integers(0, spec.vocab_size, size=96)
    expected = reference_logits(ref, ids)
    model = load_model(save_reference(ref, tmp_path / "ckpt"))
    model.record_indexer = True
    got = np.array(model(mx.array(ids[None].astype(np.int32)))[0])

    selections = [
        np.array(model.last_indexer_selection[i]) for i in sorted(model.last_indexer_selection)
    ]
    assert len(selections) == len(picks) == 2
    first_ambiguous = len(ids)
    checked = 0
    for sel, pick, score in zip(selections, picks, scores, strict=True):
        pick, score = pick[0].numpy(), score[0].numpy()
        t_len, n = sel.shape
        assert n == len(ids) // spec.csa_ratio and n > spec.index_topk
        for t in range(t_len):
            ref_set = np.zeros(n, dtype=bool)
            ref_set[pick[t][pick[t] >= 0]] = True
            visible = (t + 1) // spec.csa_ratio
            if visible <= spec.index_topk:
                assert sel[t].sum() == ref_set.sum() == visible
                assert np.array_equal(sel[t], ref_set)
                continue
            s = score[t, :visible]
            kth = np.sort(s)[::-1][spec.index_topk - 1]
            assert sel[t].sum() == ref_set.sum() == spec.index_topk
            above = s > kth + 1e-6
            assert np.array_equal(sel[t, :visible][above], ref_set[:visible][above])
            assert not sel[t, :visible][s < kth - 1e-6].any()
            if np.isclose(s, kth, atol=1e-6).sum() > 1:
                first_ambiguous = min(first_ambiguous, t)
            else:
                assert np.array_equal(sel[t], ref_set)
                checked += 1
    print(f"small top-k: {checked} unambiguous rows, first boundary tie at {first_ambiguous}")
    assert checked > 50
    # Positions before the first tie at the boundary see identical selections.
    assert first_ambiguous > 3 * spec.csa_ratio * spec.index_topk // 2
    full_delta = max_delta(got[:first_ambiguous], expected[:first_ambiguous])
    print(f"small top-k full-sequence max|delta|: {full_delta:.3g}")
    assert full_delta <= TOL
    # Decoding one token at a time reads the same gathered rows.
    cache = model.make_cache()
    steps = [np.array(model(mx.array(ids[None, :30].astype(np.int32)), cache=cache)[0])]
    for t in range(30, first_ambiguous):
        steps.append(
            np.array(model(mx.array(ids[None, t : t + 1].astype(np.int32)), cache=cache)[0])
        )
    decode_delta = max_delta(np.concatenate(steps), expected[:first_ambiguous])
    print(f"small top-k decode max|delta|: {decode_delta:.3g}")
    assert decode_delta <= TOL


def test_module_names_in_memory_load_to_the_same_model(small_ratios: Case) -> None:
    """transformers' in-memory names (self_attn.q_a_proj, fused experts) load too."""
    import torch

    from local_engine.checkpoint.loader import build_model
    from local_engine.checkpoint.safetensors import TensorInfo
    from local_engine.model.config import config_from_dict

    ref = small_ratios.reference
    state = {k: v for k, v in ref.state_dict().items() if "inv_freq" not in k}
    assert "model.layers.1.self_attn.q_a_proj.weight" in state
    assert "model.layers.1.mlp.experts.gate_up_proj" in state

    def info(name: str) -> TensorInfo:
        dtype = "F32" if state[name].dtype == torch.float32 else "I64"
        return TensorInfo(name, Path("<memory>"), dtype, tuple(state[name].shape), 0, 0)

    cfg = config_from_dict({"model_type": "deepseek_v4", **ref.config.to_dict()})
    model = build_model(
        cfg,
        [info(n) for n in state],
        [((info(n), t.numpy()) for n, t in state.items())],
    )
    assert max_delta(model(small_ratios.tokens())[0], small_ratios.expected) <= TOL
    # Same parameter count as the reference (its routing bias is a buffer there).
    biases = sum(b.numel() for n, b in ref.named_buffers() if n.endswith("correction_bias"))
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters()) + biases
