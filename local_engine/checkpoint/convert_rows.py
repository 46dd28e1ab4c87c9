"""Carrying out one shard of a conversion plan: source rows in, the recipe's bytes out.

Source tensors are read in row blocks (:class:`~local_engine.checkpoint.safetensors.RowReader`),
decoded exactly (FP8/FP4 through MLX's own dequantize) or, where the recipe keeps the
release's encoding, passed through untouched; encoded to the recipe's format; and
written with ``pwrite`` straight to their planned offsets. :func:`verify_written`
reads the shard back and checks every block's digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.checkpoint.convert_plan import ConvertError, Job, RowSource, ShardPlan, base_name
from local_engine.checkpoint.official import FP8_BLOCK, MX_GROUP, float_to_e8m0
from local_engine.checkpoint.quantize import WEIGHT, encode_rows, mx_quantized_rows
from local_engine.checkpoint.recipes import F32, MXFP4, MXFP8
from local_engine.checkpoint.safetensors import RowReader, TensorInfo, raw_to_mx, read_header

# Rows per block: about this many bytes of float32 at a time.
CHUNK_BYTES = 64 * 2**20
_FLOAT_SOURCES = {"F64", "F32", "BF16", "F16"}


def _scale_codes(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.dtype == "F32":
        return float_to_e8m0(raw, where=f"{info.file.name}: tensor {info.name!r}")
    return raw.view(np.uint8)


def _mx_codes(
    reader: RowReader, src: RowSource, a: int, b: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(codes, per-32 E8M0 scales, mode) of rows [a, b) of an FP8 or FP4 source."""
    assert src.scale is not None
    info, sinfo = src.info, src.scale
    codes = reader.rows(info, a, b)
    if info.dtype == "F8_E4M3":
        inp = info.shape[-1]
        b0, b1 = a // FP8_BLOCK, -(-b // FP8_BLOCK)
        blocks = _scale_codes(reader.rows(sinfo, b0, b1), sinfo)
        per_row = np.repeat(blocks, FP8_BLOCK, axis=0)[a - b0 * FP8_BLOCK : b - b0 * FP8_BLOCK]
        scales = np.repeat(per_row, FP8_BLOCK // MX_GROUP, axis=1)[:, : inp // MX_GROUP]
        return codes, scales, MXFP8
    return codes, _scale_codes(reader.rows(sinfo, a, b), sinfo), MXFP4


def _decode(reader: RowReader, src: RowSource, a: int, b: int, want_f32: bool) -> Any:
    """Rows [a, b) as an ``mx.array`` (bf16, or f32 when ``want_f32``); exact for FP8/FP4."""
    import mlx.core as mx

    target = mx.float32 if want_f32 else mx.bfloat16
    info = src.info
    if info.dtype in _FLOAT_SOURCES:
        return raw_to_mx(reader.rows(info, a, b), info.dtype).astype(target)
    if src.scale is None:
        raise ConvertError(
            f"{info.file.name}: tensor {info.name!r} is {info.dtype} without a scale"
        )
    codes, scales, mode = _mx_codes(reader, src, a, b)
    words = np.ascontiguousarray(codes.view(np.uint8)).view(np.uint32)
    return mx.dequantize(
        mx.array(words),
        mx.array(np.ascontiguousarray(scales)),
        None,
        group_size=MX_GROUP,
        bits=8 if mode == MXFP8 else 4,
        mode=mode,
        dtype=target,
    )


def _encode(reader: RowReader, job: Job, src: RowSource, a: int, b: int) -> dict[str, np.ndarray]:
    fmt = job.fmt
    if fmt is None:  # the hash table, as int32
        return {WEIGHT: reader.rows(src.info, a, b).astype(np.int32)}
    exact = {"F8_E4M3": MXFP8, "I8": MXFP4, "U8": MXFP4}.get(src.info.dtype)
    if exact is not None and fmt.kind == exact and src.scale is not None:
        codes, scales, mode = _mx_codes(reader, src, a, b)
        return mx_quantized_rows(codes, scales, mode)  # the release's bytes, not re-quantized
    return encode_rows(_decode(reader, src, a, b, want_f32=fmt.kind == F32), fmt)


def _chunk_rows(src: RowSource) -> int:
    width = src.info.shape[-1] if src.info.shape else 1
    rows = max(FP8_BLOCK, CHUNK_BYTES // (4 * width) // FP8_BLOCK * FP8_BLOCK)
    return min(rows, src.rows)


@dataclass(frozen=True)
class _Piece:
    offset: int
    length: int
    digest: bytes


def write_shard(
    path: Path,
    shard: ShardPlan,
    reader: RowReader,
    on_bytes: Callable[[int, str], None],
) -> list[_Piece]:
    import mlx.core as mx

    pieces = [_Piece(0, len(shard.header), hashlib.blake2b(shard.header).digest())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, shard.size)
        os.pwrite(fd, shard.header, 0)
        for job in shard.jobs:
            what = base_name(job.path)
            for out_row0, src in job.sources:
                step = _chunk_rows(src)
                for a in range(0, src.rows, step):
                    b = min(src.rows, a + step)
                    encoded = _encode(reader, job, src, src.row0 + a, src.row0 + b)
                    for entry, stored in zip(job.entries, job.names, strict=True):
                        data = np.ascontiguousarray(encoded[entry.suffix])
                        if data.nbytes != (b - a) * entry.row_bytes:
                            raise ConvertError(
                                f"internal error: {stored} rows {a}:{b} encoded to"
                                f" {data.nbytes} bytes, planned {(b - a) * entry.row_bytes}"
                            )
                        at = shard.offsets[stored] + (out_row0 + a) * entry.row_bytes
                        blob = data.tobytes()
                        written = os.pwrite(fd, blob, at)
                        if written != len(blob):
                            raise ConvertError(f"{path}: short write (disk full?)")
                        pieces.append(_Piece(at, len(blob), hashlib.blake2b(blob).digest()))
                    on_bytes(src.source_bytes * (b - a) // max(1, src.rows), what)
            mx.clear_cache()
        os.fsync(fd)
    finally:
        os.close(fd)
    return pieces


def verify_written(path: Path, shard: ShardPlan, pieces: list[_Piece]) -> str:
    """Read the shard back: its header must be the plan's and every block what we wrote.
    Returns the file's sha256."""
    infos, _ = read_header(path)
    planned = {stored for job in shard.jobs for stored in job.names}
    if set(infos) != planned or path.stat().st_size != shard.size:
        raise ConvertError(f"{path}: written shard does not match its plan (disk error?)")
    h = hashlib.sha256()
    expect = 0
    with path.open("rb") as f:
        for piece in sorted(pieces, key=lambda p: p.offset):
            if piece.offset != expect:
                raise ConvertError(f"{path}: bytes {expect}..{piece.offset} were never written")
            f.seek(piece.offset)
            blob = f.read(piece.length)
            if hashlib.blake2b(blob).digest() != piece.digest:
                raise ConvertError(
                    f"{path}: bytes at {piece.offset} differ from what was written (disk error?);"
                    " run the conversion again with --resume"
                )
            h.update(blob)
            expect = piece.offset + piece.length
    if expect != shard.size:
        raise ConvertError(f"{path}: the end of the shard was never written")
    return h.hexdigest()
