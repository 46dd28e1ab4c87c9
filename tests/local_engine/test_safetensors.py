"""The one safetensors reader: mx.load for MLX-format shards, raw bytes for FP8/E8M0."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from local_engine.checkpoint.official import FP8_BLOCK
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.checkpoint.safetensors import (
    header_bytes,
    iter_tensors,
    list_shards,
    loads_with_mlx,
    read_header,
    read_shard,
    write_safetensors,
)
from local_engine.errors import CheckpointError


def test_an_mlx_format_shard_comes_from_mx_load_with_the_bytes_of_the_file(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    bf16 = rng.integers(0, 2**16, (4, 6), dtype=np.uint16)
    tensors = {
        "a.weight": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
        "b.weight": ("BF16", bf16),
        "c.codes": ("U32", rng.integers(0, 2**32, (2, 3), dtype=np.uint32)),
        "d.scales": ("U8", rng.integers(0, 256, (2, 4), dtype=np.uint8)),
        "e.tid2eid": ("I64", rng.integers(0, 9, (7,), dtype=np.int64)),
    }
    path = tmp_path / "mlx.safetensors"
    write_safetensors(path, tensors)
    infos, _ = read_header(path)
    assert loads_with_mlx(infos)
    raw = dict(iter_tensors(path))
    got = {info.name: value for info, value in read_shard(path)}
    assert list(got) == sorted(tensors)
    for name, value in got.items():
        assert isinstance(value, mx.array), name
        info = infos[name]
        assert tuple(value.shape) == info.shape
        as_bits = value.view(mx.uint16) if value.dtype == mx.bfloat16 else value
        expected = next(v for i, v in raw.items() if i.name == name)
        assert np.array_equal(np.array(as_bits), expected), name
    assert got["b.weight"].dtype == mx.bfloat16


def test_fp8_and_e8m0_shards_come_through_the_raw_reader_untouched(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    tensors = {
        "w.weight": ("F8_E4M3", rng.integers(0, 256, (FP8_BLOCK, FP8_BLOCK), dtype=np.uint8)),
        "w.scale": ("F8_E8M0", rng.integers(100, 140, (1, 1), dtype=np.uint8)),
        "n.weight": ("BF16", rng.integers(0, 2**16, (8,), dtype=np.uint16)),
    }
    path = tmp_path / "official.safetensors"
    write_safetensors(path, tensors)
    assert not loads_with_mlx(read_header(path)[0])
    got = {info.name: (info.dtype, value) for info, value in read_shard(path)}
    for name, (dtype, array) in tensors.items():
        got_dtype, value = got[name]
        assert got_dtype == dtype and isinstance(value, np.ndarray)
        assert value.dtype.itemsize == array.dtype.itemsize
        assert np.array_equal(value, array)


def test_a_random_checkpoint_reads_the_same_both_ways(tmp_path: Path) -> None:
    # A float checkpoint (quantized=False): every shard takes the mx.load path,
    # and each tensor equals the raw reader's bytes.
    model = write_random_checkpoint(tmp_path / "f", preset="tiny", seed=1, quantized=False)
    shards = list_shards(model)
    for shard in shards:
        infos, _ = read_header(shard)
        assert loads_with_mlx(infos)
        raw = {info.name: value for info, value in iter_tensors(shard)}
        for info, value in read_shard(shard, infos):
            assert isinstance(value, mx.array)
            bits = value.view(mx.uint16) if value.dtype == mx.bfloat16 else value
            assert np.array_equal(np.array(bits), raw[info.name]), info.name


def test_the_header_is_read_once_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"x": ("F32", np.zeros(2, dtype=np.float32))}, {"k": "v"})
    blob = header_bytes(path)
    assert json.loads(blob)["__metadata__"] == {"k": "v"}
    cut = struct.pack("<Q", 64) + b'{"x": 1'
    path.write_bytes(cut)
    with pytest.raises(CheckpointError, match=r"x\.safetensors: truncated in its header"):
        header_bytes(path)
    listed = b"[1, 2]"
    path.write_bytes(struct.pack("<Q", len(listed)) + listed)
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_header(path)
