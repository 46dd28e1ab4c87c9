"""Encode weights in a recipe :class:`~local_engine.checkpoint.recipes.Format` with MLX, laid out.

One tensor of the converted model is stored as up to three safetensors entries,
MLX's convention: ``NAME.weight`` (packed ``uint32`` codes for quantized
formats, else the float tensor), ``NAME.scales`` and, for affine formats,
``NAME.biases``. :func:`encoded_layout` says what those entries are for a
logical ``[..., out, in]`` shape before anything is computed (the converter
writes shard headers from it); :func:`encode_rows` produces them for a block
of rows with ``mx.quantize``. Quantization works row by row (groups run along
the input axis), so encoding a tensor in row blocks gives exactly the bytes of
encoding it whole.

Affine inputs are rounded to bf16 first and scales/biases come out in bf16.
Official weights (FP8, FP4, bf16) are exact in bf16, and quantizing bf16 input
measured slightly lower error than quantizing fp32 and rounding the scales.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from local_engine.checkpoint.names import parse_name
from local_engine.checkpoint.recipes import (
    AFFINE,
    BF16,
    F32,
    MX_GROUP,
    MXFP4,
    MXFP8,
    Format,
    format_from,
)
from local_engine.errors import CheckpointError, EngineError

WEIGHT, SCALES, BIASES = "weight", "scales", "biases"
# config.json's section that lists every quantized tensor with its format.
QUANT_SECTION = "quantization"


@dataclass(frozen=True)
class Entry:
    """One stored safetensors entry of an encoded tensor."""

    suffix: str  # weight | scales | biases
    dtype: str  # safetensors dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        itemsize = {"F32": 4, "BF16": 2, "U32": 4, "U8": 1, "I32": 4}[self.dtype]
        n = itemsize
        for d in self.shape:
            n *= d
        return n

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (the last axis)."""
        return self.nbytes // max(1, int(np.prod(self.shape[:-1], dtype=np.int64)))


def encoded_layout(fmt: Format, shape: tuple[int, ...], *, where: str) -> list[Entry]:
    """The entries a logical ``[..., out, in]`` tensor becomes in ``fmt``."""
    if fmt.kind == F32:
        return [Entry(WEIGHT, "F32", shape)]
    if fmt.kind == BF16:
        return [Entry(WEIGHT, "BF16", shape)]
    assert fmt.bits is not None and fmt.group_size is not None
    if len(shape) < 2:
        raise CheckpointError(f"{where}: a vector cannot be stored as {fmt.label}")
    *lead, inp = shape
    if inp % fmt.group_size:
        raise CheckpointError(
            f"{where}: input width {inp} is not a multiple of the group size {fmt.group_size}"
            f" of {fmt.label}; choose a recipe (or --group-size) whose group divides it"
        )
    if (inp * fmt.bits) % 32:
        raise CheckpointError(f"{where}: {inp} x {fmt.bits} bits does not pack into uint32 words")
    packed = (*lead, inp * fmt.bits // 32)
    groups = (*lead, inp // fmt.group_size)
    if fmt.kind == AFFINE:
        return [
            Entry(WEIGHT, "U32", packed),
            Entry(SCALES, "BF16", groups),
            Entry(BIASES, "BF16", groups),
        ]
    return [Entry(WEIGHT, "U32", packed), Entry(SCALES, "U8", groups)]


def encoded_nbytes(fmt: Format, shape: tuple[int, ...]) -> int:
    return sum(e.nbytes for e in encoded_layout(fmt, shape, where="tensor"))


def _bf16_bits(a: object) -> np.ndarray:
    """An mx bf16 array's raw bits as numpy uint16."""
    import mlx.core as mx

    assert isinstance(a, mx.array)
    return np.array(a.view(mx.uint16))


def encode_rows(rows: object, fmt: Format) -> dict[str, np.ndarray]:
    """Encode a float ``mx.array`` block ``[n, in]`` (any float dtype) into raw numpy entries.

    Returns ``{suffix: raw array}`` with the dtypes :func:`encoded_layout` names
    (bf16 as uint16 bits, E8M0 scales as uint8, packed codes as uint32).
    """
    import mlx.core as mx

    assert isinstance(rows, mx.array)
    if fmt.kind == F32:
        return {WEIGHT: np.array(rows.astype(mx.float32))}
    if fmt.kind == BF16:
        return {WEIGHT: _bf16_bits(rows.astype(mx.bfloat16))}
    assert fmt.bits is not None and fmt.group_size is not None
    x = rows.astype(mx.bfloat16)
    if fmt.kind == AFFINE:
        q, scales, biases = mx.quantize(x, group_size=fmt.group_size, bits=fmt.bits, mode=AFFINE)
        return {
            WEIGHT: np.array(q),
            SCALES: _bf16_bits(scales.astype(mx.bfloat16)),
            BIASES: _bf16_bits(biases.astype(mx.bfloat16)),
        }
    parts = mx.quantize(x, group_size=MX_GROUP, bits=fmt.bits, mode=fmt.kind)  # no biases
    return {WEIGHT: np.array(parts[0]), SCALES: np.array(parts[1]).astype(np.uint8)}


def mx_quantized_rows(packed: np.ndarray, e8m0: np.ndarray, mode: str) -> dict[str, np.ndarray]:
    """Entries of an ``mxfp8`` / ``mxfp4`` tensor given its codes (bytes) and per-32 scales."""
    assert mode in (MXFP8, MXFP4)
    words = np.ascontiguousarray(packed.view(np.uint8)).view(np.uint32)
    return {WEIGHT: words, SCALES: np.ascontiguousarray(e8m0.astype(np.uint8))}


def dequantize_entries(entries: dict[str, np.ndarray], fmt: Format) -> np.ndarray:
    """Float32 values of encoded entries (the inverse of :func:`encode_rows`, up to rounding)."""
    import mlx.core as mx

    w = entries[WEIGHT]
    if fmt.kind == F32:
        return w.astype(np.float32)
    if fmt.kind == BF16:
        return (w.astype(np.uint32) << 16).view(np.float32)
    assert fmt.bits is not None and fmt.group_size is not None
    if fmt.kind == AFFINE:
        # In f32: dequantizing with bf16 scales rounds every value to bf16.
        scales = mx.array(entries[SCALES]).view(mx.bfloat16).astype(mx.float32)
        biases = mx.array(entries[BIASES]).view(mx.bfloat16).astype(mx.float32)
    else:
        scales, biases = mx.array(entries[SCALES]), None
    out = mx.dequantize(
        mx.array(w),
        scales,
        biases,
        group_size=fmt.group_size,
        bits=fmt.bits,
        mode=fmt.mode,
        dtype=mx.float32,
    )
    return np.array(out)


def quantized_paths(raw_config: Mapping[str, Any]) -> dict[str, Format]:
    """Internal path -> format of every MLX-quantized tensor a converted ``config.json`` lists.

    ``{}`` for checkpoints without a ``quantization`` section (official, transformers).
    """
    section = raw_config.get(QUANT_SECTION)
    if section is None:
        return {}
    paths = section.get("paths") if isinstance(section, Mapping) else None
    if not isinstance(paths, Mapping):
        raise CheckpointError(
            f"config.json: '{QUANT_SECTION}' must hold a 'paths' mapping (tensor -> format), as"
            " `ds4router engine convert` writes it; this one came from another tool"
        )
    out: dict[str, Format] = {}
    for name, spec in paths.items():
        try:
            parsed = parse_name(str(name))
        except KeyError:
            parsed = None
        if parsed is None:
            raise CheckpointError(
                f"config.json: {QUANT_SECTION}.paths names {name!r}, which is not a tensor of"
                " this architecture"
            )
        try:
            out[parsed.path] = format_from(spec, where=f"config.json {QUANT_SECTION}.paths.{name}")
        except EngineError as exc:
            raise CheckpointError(str(exc)) from None
    return out
