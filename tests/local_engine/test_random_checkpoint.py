"""Random official-layout checkpoints and our safetensors reader/writer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from local_engine import load_model
from local_engine.checkpoint.random_weights import (
    bf16_to_float,
    preset_config,
    write_random_checkpoint,
)
from local_engine.checkpoint.safetensors import (
    SafetensorsFile,
    list_shards,
    read_header,
    write_safetensors,
)
from local_engine.errors import CheckpointError, EngineError
from local_engine.model.config import CSA, HCA, SLIDING, load_config


def test_tiny_preset_uses_the_real_vocabulary_and_is_marked_random(official_tiny: Path) -> None:
    cfg = load_config(official_tiny)
    assert cfg.vocab_size == 129280
    assert cfg.is_random and cfg.random_weights["preset"] == "tiny"
    assert set(cfg.layer_types) == {SLIDING, CSA, HCA}
    assert set(cfg.mlp_layer_types) == {"hash_moe", "moe"}
    raw = json.loads((official_tiny / "config.json").read_text())
    assert raw["quantization_config"]["fmt"] == "e4m3" and raw["expert_dtype"] == "fp4"
    index = json.loads((official_tiny / "model.safetensors.index.json").read_text())
    assert "layers.1.ffn.experts.7.w3.scale" in index["weight_map"]


def test_tiny_model_gives_finite_logits_for_every_special_token_id(official_tiny: Path) -> None:
    model = load_model(official_tiny)
    # DeepSeek V4's special tokens sit at the top of the vocabulary.
    ids = mx.array([[0, 1, 128798, 128799, 128800, 128821, 129279]], dtype=mx.int32)
    logits = model(ids)
    assert logits.shape == (1, 7, 129280)
    assert bool(mx.isfinite(logits).all())
    # Not degenerate: different inputs give different next-token choices.
    assert len(set(np.array(mx.argmax(logits[0], axis=-1)).tolist())) > 3


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = write_random_checkpoint(
        tmp_path / "a", "tiny", seed=1, num_layers=2, quantized=False, dtype="float32"
    )
    b = write_random_checkpoint(
        tmp_path / "b", "tiny", seed=1, num_layers=2, quantized=False, dtype="float32"
    )
    c = write_random_checkpoint(
        tmp_path / "c", "tiny", seed=2, num_layers=2, quantized=False, dtype="float32"
    )
    shard = "model-00001-of-00001.safetensors"
    assert (a / shard).read_bytes() == (b / shard).read_bytes()
    assert (a / shard).read_bytes() != (c / shard).read_bytes()
    model = load_model(a)
    assert model.weight_bytes_by_dtype().keys() <= {"float32", "int32"}
    assert model.config.num_hidden_layers == 2


def test_presets_have_the_sizes_they_promise() -> None:
    full = preset_config("full-layer", num_layers=3)
    assert (full.hidden_size, full.n_routed_experts, full.moe_intermediate_size) == (
        4096,
        256,
        2048,
    )
    assert (full.num_attention_heads, full.head_dim, full.q_lora_rank) == (64, 512, 1024)
    assert full.layer_types == (SLIDING, SLIDING, CSA)
    small = preset_config("small")
    assert small.num_hidden_layers == 8 and small.vocab_size == 129280
    with pytest.raises(EngineError, match="unknown preset"):
        preset_config("huge")


def test_safetensors_round_trip_keeps_every_encoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "f32": ("F32", rng.standard_normal((3, 4)).astype(np.float32)),
        "bf16": ("BF16", rng.integers(0, 2**16, (5,), dtype=np.uint16)),
        "fp8": ("F8_E4M3", rng.integers(0, 256, (2, 8), dtype=np.uint8)),
        "e8m0": ("F8_E8M0", rng.integers(100, 140, (2, 1), dtype=np.uint8)),
        "packed": ("I8", rng.integers(-128, 128, (4, 2), dtype=np.int8)),
        "ids": ("I32", rng.integers(0, 9, (7, 2), dtype=np.int32)),
        "empty": ("F32", np.zeros((0, 3), dtype=np.float32)),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, {"format": "pt"})
    infos, meta = read_header(path)
    assert meta == {"format": "pt"}
    with SafetensorsFile(path) as f:
        for name, (dtype, arr) in tensors.items():
            assert infos[name].dtype == dtype and infos[name].shape == arr.shape
            assert np.array_equal(f.read(name), arr)
    # bf16 bits decode to the float they encode
    assert bf16_to_float(np.array([0x3F80], dtype=np.uint16))[0] == 1.0


def test_corrupt_files_are_reported_with_their_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x01")
    with pytest.raises(CheckpointError, match="too short"):
        read_header(bad)
    header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 4)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: tensor 'x'.*truncated"):
        read_header(bad)
    header = json.dumps({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    with pytest.raises(CheckpointError, match="unsupported dtype 'C64'"):
        read_header(bad)
    with pytest.raises(CheckpointError, match="no \\*\\.safetensors"):
        list_shards(tmp_path / "nothing")
