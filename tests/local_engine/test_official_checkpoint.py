"""Official-layout checkpoints: FP4/FP8 load bit-exactly as mxfp4/mxfp8, errors say what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from transformers import DeepseekV4ForCausalLM

from local_engine import load_model
from local_engine.checkpoint.official import (
    decode_e4m3,
    dequantize_fp4_rows,
    dequantize_fp8_blocks,
    encode_e2m1,
    encode_e4m3,
    quantize_fp4_rows,
    quantize_fp8_blocks,
)
from local_engine.checkpoint.safetensors import SafetensorsFile, list_shards, write_safetensors
from local_engine.errors import CheckpointError, EngineError
from local_engine.model.weights import QuantizedWeight

SEQ = 300  # > 2 HCA windows of 128 and 75 CSA windows


def tokens(n: int = SEQ, seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 129280, size=(1, n)).astype(np.int32))


@pytest.fixture(scope="module")
def quantized(official_tiny: Path):  # noqa: ANN201 - a Model
    return load_model(official_tiny)


@pytest.fixture(scope="module")
def twin(official_tiny_twin: Path):  # noqa: ANN201
    return load_model(official_tiny_twin)


def test_fp4_and_fp8_tensors_load_as_mx_formats_byte_for_byte(
    official_tiny: Path, quantized
) -> None:
    by_dtype = quantized.weight_bytes_by_dtype()
    assert by_dtype["mxfp4"] > 0 and by_dtype["mxfp8"] > 0
    layer = quantized.weights.layers[2]
    experts = layer.moe.experts.gate_up
    assert isinstance(experts, QuantizedWeight) and experts.mode == "mxfp4"
    wq_a = layer.attn.wq_a
    assert isinstance(wq_a, QuantizedWeight) and wq_a.mode == "mxfp8"
    with SafetensorsFile(list_shards(official_tiny)[0]) as f:
        w1 = f.read("layers.2.ffn.experts.5.w1.weight")
        s1 = f.read("layers.2.ffn.experts.5.w1.scale")
        fp8 = f.read("layers.2.attn.wq_a.weight")
        fp8_scale = f.read("layers.2.attn.wq_a.scale")
    inter = quantized.config.moe_intermediate_size
    packed = np.array(experts.weight[5, :inter]).view(np.uint8)
    assert np.array_equal(packed, w1.view(np.uint8))  # the file's bytes, untouched
    assert np.array_equal(np.array(experts.scales[5, :inter]), s1)
    assert np.array_equal(np.array(wq_a.weight).view(np.uint8), fp8)
    # One 128x128 block scale spread over its rows and four 32-wide groups.
    assert np.array_equal(np.array(wq_a.scales)[::128, ::4], fp8_scale)


def test_quantized_checkpoint_matches_its_dequantized_twin(quantized, twin) -> None:
    ids = tokens()
    a, b = quantized(ids), twin(ids)
    delta = float(mx.abs(a - b).max())
    print(f"FP4/FP8 vs dequantized twin max|delta|: {delta:.3g}")
    assert delta <= 1e-3
    assert float(mx.abs(b).max()) > 1.0  # a meaningful scale for that tolerance


def test_official_names_mean_what_transformers_says(official_tiny_twin: Path, quantized) -> None:
    """The twin (official names, float32) loaded by transformers gives our FP4/FP8 logits."""
    ref = DeepseekV4ForCausalLM.from_pretrained(official_tiny_twin, dtype=torch.float32).eval()
    ids = tokens(seed=1)
    with torch.no_grad():
        expected = ref(torch.from_numpy(np.array(ids).astype(np.int64))).logits[0].numpy()
    delta = float(np.abs(np.array(quantized(ids)[0]) - expected).max())
    print(f"FP4/FP8 engine vs transformers on the dequantized twin max|delta|: {delta:.3g}")
    assert delta <= 1e-3


def test_numpy_codecs_round_trip() -> None:
    rng = np.random.default_rng(0)
    codes = np.arange(256, dtype=np.uint8)
    finite = codes[~np.isnan(decode_e4m3(codes))]
    assert np.array_equal(
        encode_e4m3(decode_e4m3(finite)) & 0xFF, np.where(finite == 0x80, 0, finite)
    )
    nib = np.arange(16, dtype=np.uint8)
    from local_engine.checkpoint.official import decode_e2m1

    assert np.array_equal(encode_e2m1(decode_e2m1(nib)), np.where(nib == 8, 0, nib))
    w = rng.standard_normal((200, 96)).astype(np.float32)
    c8, s8 = quantize_fp8_blocks(w)
    assert s8.shape == (2, 1)
    assert np.abs(dequantize_fp8_blocks(c8, s8) - w).max() <= np.abs(w).max() * 2**-3
    p4, s4 = quantize_fp4_rows(w)
    assert p4.shape == (200, 48) and s4.shape == (200, 3)
    assert np.abs(dequantize_fp4_rows(p4, s4) - w).max() <= np.abs(w).max() * 0.5


# -- errors name the file, the tensor and what was expected ------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(ckpt: Path, edit) -> Path:  # noqa: ANN001
    shard = list_shards(ckpt)[0]
    with SafetensorsFile(shard) as f:
        tensors = {name: (info.dtype, f.read(name)) for name, info in f.infos.items()}
    edit(tensors)
    write_safetensors(shard, tensors)
    return ckpt


def test_missing_tensor_is_named(official_tiny: Path, tmp_path: Path) -> None:
    ckpt = _rewrite(
        _copy(official_tiny, tmp_path / "c"), lambda t: t.pop("layers.1.attn.compressor.ape")
    )
    with pytest.raises(
        CheckpointError, match=r"missing .*layers\.1\.attn\.compressor\.ape \[4, 128\]"
    ):
        load_model(ckpt)


def test_wrong_shape_names_file_tensor_and_expected_shape(
    official_tiny: Path, tmp_path: Path
) -> None:
    def edit(t: dict) -> None:
        dtype, arr = t["layers.0.attn.attn_sink"]
        t["layers.0.attn.attn_sink"] = (dtype, arr[:3])

    ckpt = _rewrite(_copy(official_tiny, tmp_path / "c"), edit)
    with pytest.raises(
        CheckpointError,
        match=r"model-00001-of-00001\.safetensors: tensor 'layers\.0\.attn\.attn_sink' has shape"
        r" \[3\], expected \[4\]",
    ):
        load_model(ckpt)


def test_fp8_weight_without_scale_is_reported(official_tiny: Path, tmp_path: Path) -> None:
    ckpt = _rewrite(
        _copy(official_tiny, tmp_path / "c"), lambda t: t.pop("layers.3.attn.wo_b.scale")
    )
    with pytest.raises(
        CheckpointError, match=r"'layers\.3\.attn\.wo_b\.weight' is F8_E4M3 but its"
    ):
        load_model(ckpt)


def test_packed_fp4_with_wrong_width_is_reported(official_tiny: Path, tmp_path: Path) -> None:
    def edit(t: dict) -> None:
        dtype, arr = t["layers.1.ffn.experts.0.w2.weight"]
        t["layers.1.ffn.experts.0.w2.weight"] = (dtype, np.ascontiguousarray(arr[:, :16]))

    ckpt = _rewrite(_copy(official_tiny, tmp_path / "c"), edit)
    with pytest.raises(
        CheckpointError, match=r"packed FP4\) has shape \[128, 16\], expected \[128, 32\]"
    ):
        load_model(ckpt)


def test_unexpected_and_out_of_range_names_are_errors(official_tiny: Path, tmp_path: Path) -> None:
    def extra(t: dict) -> None:
        t["layers.0.attn.mystery.weight"] = ("F32", np.zeros((2,), np.float32))

    ckpt = _rewrite(_copy(official_tiny, tmp_path / "a"), extra)
    with pytest.raises(CheckpointError, match=r"'layers\.0\.attn\.mystery\.weight' is not part of"):
        load_model(ckpt)

    def beyond(t: dict) -> None:
        t["layers.9.attn_norm.weight"] = ("F32", np.ones((128,), np.float32))

    ckpt = _rewrite(_copy(official_tiny, tmp_path / "b"), beyond)
    with pytest.raises(
        CheckpointError, match=r"belongs to layer 9, but config\.json says num_hidden_layers=4"
    ):
        load_model(ckpt)


def test_mtp_tensors_are_skipped(official_tiny: Path, tmp_path: Path, quantized) -> None:
    ckpt = _rewrite(
        _copy(official_tiny, tmp_path / "c"),
        lambda t: t.update({"mtp.0.attn_norm.weight": ("F32", np.ones((128,), np.float32))}),
    )
    assert load_model(ckpt).num_parameters() == quantized.num_parameters()


def test_directory_and_config_problems_are_engine_errors(
    tmp_path: Path, official_tiny: Path
) -> None:
    with pytest.raises(EngineError, match="not a directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match=r"config\.json not found"):
        load_model(tmp_path / "empty")
    ckpt = _copy(official_tiny, tmp_path / "c")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["compress_ratios"][1] = 16
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineError, match=r"compress_ratios\[1\] is 16"):
        load_model(ckpt)
    for shard in list_shards(ckpt):
        shard.unlink()
    with pytest.raises(EngineError, match=r"no \*\.safetensors"):
        cfg["compress_ratios"][1] = 4
        (ckpt / "config.json").write_text(json.dumps(cfg))
        load_model(ckpt)


def test_truncated_shard_is_reported(official_tiny: Path, tmp_path: Path) -> None:
    ckpt = _copy(official_tiny, tmp_path / "c")
    shard = list_shards(ckpt)[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        load_model(ckpt)
