"""The official checkpoint's encodings: FP8 e4m3 with 128x128 E8M0 block scales, FP4 e2m1 experts.

Both map bit-exactly onto MLX's microscaling formats, so nothing is
dequantized on load:

* FP8: weight bytes ``[out, in]`` are e4m3 codes; ``.scale`` ``[ceil(out/128),
  ceil(in/128)]`` holds E8M0 exponents (value ``2 ** (b - 127)``). MLX ``mxfp8``
  packs the same codes four to a uint32 with one E8M0 scale per 32 inputs, so
  each 128x128 block's scale is repeated over its rows and its four 32-wide
  groups.
* FP4: expert weights are int8 ``[out, in/2]`` holding two e2m1 codes a byte
  (low nibble = even column) with E8M0 scales ``[out, in/32]``: exactly MLX's
  ``mxfp4`` layout once the bytes are viewed as uint32.

The numpy encoders below (float -> e4m3 / e2m1 codes, block scales) are what
the random-checkpoint writer uses; the decoders build dequantized twins.
"""

from __future__ import annotations

import numpy as np

from local_engine.errors import CheckpointError

FP8_BLOCK = 128
MX_GROUP = 32
E4M3_MAX = 448.0
E2M1_MAX = 6.0
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)


def e8m0_to_float(codes: np.ndarray) -> np.ndarray:
    """E8M0 exponent bytes -> float32 powers of two."""
    return np.ldexp(np.float32(1.0), codes.astype(np.int32) - 127).astype(np.float32)


def float_to_e8m0(scales: np.ndarray, *, where: str) -> np.ndarray:
    """Float32 power-of-two scales -> E8M0 bytes; anything else is an error naming ``where``."""
    s = scales.astype(np.float32)
    mant, exp = np.frexp(s)
    if np.any(s <= 0) or np.any(mant != 0.5):
        raise CheckpointError(
            f"{where}: scales are not powers of two, so they cannot be used as E8M0 without"
            " re-quantizing the weight"
        )
    codes = exp.astype(np.int32) - 1 + 127
    if np.any(codes < 0) or np.any(codes > 254):
        raise CheckpointError(f"{where}: a scale is outside the E8M0 range")
    return codes.astype(np.uint8)


def _e4m3_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = (codes & 7).astype(np.float64)
    val = np.where(
        exp == 0, man / 8.0 * 2.0**-6, (1 + man / 8.0) * 2.0 ** (exp.astype(np.float64) - 7)
    )
    val = sign * val
    val[(exp == 15) & ((codes & 7) == 7)] = np.nan  # e4m3fn: S.1111.111 is NaN
    return val.astype(np.float32)


E4M3_TABLE = _e4m3_table()


def decode_e4m3(codes: np.ndarray) -> np.ndarray:
    return E4M3_TABLE[codes.astype(np.uint8)]


def _encode_nearest(x: np.ndarray, grid: np.ndarray, max_value: float) -> np.ndarray:
    """Index of the nearest non-negative grid value for |x| (ties go up), saturating."""
    a = np.minimum(np.abs(x).astype(np.float32), np.float32(max_value))
    mids = (grid[1:] + grid[:-1]) / 2
    return np.searchsorted(mids, a, side="left").astype(np.uint8)


def encode_e4m3(x: np.ndarray) -> np.ndarray:
    """Float32 -> e4m3fn codes (round to nearest, saturate at 448)."""
    positive = E4M3_TABLE[:127]  # codes 0x00..0x7E, increasing
    idx = _encode_nearest(x, positive, E4M3_MAX)
    return (idx | np.where(np.signbit(x) & (idx > 0), 0x80, 0)).astype(np.uint8)


def encode_e2m1(x: np.ndarray) -> np.ndarray:
    """Float32 -> e2m1 codes 0..15 (round to nearest, saturate at 6)."""
    idx = _encode_nearest(x, E2M1_VALUES, E2M1_MAX)
    return (idx | np.where(np.signbit(x) & (idx > 0), 0x8, 0)).astype(np.uint8)


def decode_e2m1(codes: np.ndarray) -> np.ndarray:
    mag = E2M1_VALUES[codes & 7]
    return np.where(codes & 8, -mag, mag).astype(np.float32)


def _pow2_scale_codes(amax: np.ndarray, max_code: float) -> np.ndarray:
    """E8M0 code of the smallest power of two s with amax / s <= max_code."""
    safe = np.maximum(amax.astype(np.float64), 1e-30)
    exp = np.ceil(np.log2(safe / max_code))
    return np.clip(exp + 127, 0, 254).astype(np.uint8)


def quantize_fp8_blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float ``[out, in]`` -> (e4m3 codes ``[out, in]``, E8M0 ``[ceil(out/128), ceil(in/128)]``)."""
    out, inp = w.shape
    bo, bi = -(-out // FP8_BLOCK), -(-inp // FP8_BLOCK)
    padded = np.zeros((bo * FP8_BLOCK, bi * FP8_BLOCK), dtype=np.float32)
    padded[:out, :inp] = w
    blocks = padded.reshape(bo, FP8_BLOCK, bi, FP8_BLOCK)
    codes = _pow2_scale_codes(np.abs(blocks).max(axis=(1, 3)), E4M3_MAX)
    scale = np.repeat(np.repeat(e8m0_to_float(codes), FP8_BLOCK, 0), FP8_BLOCK, 1)[:out, :inp]
    return encode_e4m3(w / scale), codes


def dequantize_fp8_blocks(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    out, inp = codes.shape
    s = np.repeat(np.repeat(e8m0_to_float(scales), FP8_BLOCK, 0), FP8_BLOCK, 1)[:out, :inp]
    return decode_e4m3(codes) * s


def quantize_fp4_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float ``[out, in]`` -> (int8 packed ``[out, in/2]``, E8M0 ``[out, in/32]``)."""
    out, inp = w.shape
    groups = w.reshape(out, inp // MX_GROUP, MX_GROUP)
    codes = _pow2_scale_codes(np.abs(groups).max(axis=-1), E2M1_MAX)
    nibbles = encode_e2m1(groups / e8m0_to_float(codes)[..., None]).reshape(out, inp)
    packed = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).astype(np.uint8)
    return packed.view(np.int8), codes


def dequantize_fp4_rows(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    b = packed.view(np.uint8)
    out, half = b.shape
    nibbles = np.empty((out, half * 2), dtype=np.uint8)
    nibbles[:, 0::2] = b & 0xF
    nibbles[:, 1::2] = b >> 4
    s = np.repeat(e8m0_to_float(scales), MX_GROUP, axis=1)
    return decode_e2m1(nibbles) * s


def fp8_scales_to_mx(scales: np.ndarray, out: int, inp: int, *, where: str) -> np.ndarray:
    """128x128 block scales -> one scale per row per 32 inputs (``[out, in/32]``)."""
    bo, bi = -(-out // FP8_BLOCK), -(-inp // FP8_BLOCK)
    if scales.shape != (bo, bi):
        raise CheckpointError(
            f"{where}: scale has shape {list(scales.shape)}, expected [{bo}, {bi}] (one per"
            f" 128x128 block of a [{out}, {inp}] weight)"
        )
    per_group = FP8_BLOCK // MX_GROUP
    return np.repeat(np.repeat(scales, FP8_BLOCK, 0)[:out], per_group, 1)[:, : inp // MX_GROUP]


def check_mx_input_width(inp: int, *, where: str) -> None:
    if inp % MX_GROUP:
        raise CheckpointError(
            f"{where}: input width {inp} is not a multiple of {MX_GROUP}, which MLX's"
            " microscaling formats need"
        )
