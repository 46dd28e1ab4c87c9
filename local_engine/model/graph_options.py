"""Official-graph switches: two round-trips the official model does and transformers omits.

Both are OFF by default, so the engine matches the transformers reference
(our test oracle) exactly. Turn them ON for real DeepSeek V4 Flash weights:

``fp8_kv``
    Every KV row the attention stores (sliding-window rows and compressed rows)
    has its non-RoPE channels (448 of 512 in Flash) rounded through FP8 e4m3,
    with one power-of-two (UE8M0) scale per 64-channel block:
    ``scale = 2 ** ceil(log2(amax / 448))``. The RoPE channels stay exact. The
    model was trained and served with this rounding in its graph.

``indexer_fp4``
    The lightning indexer's queries and compressed keys go through a
    ``index_head_dim``-point Walsh-Hadamard transform (orthonormal) and then an
    FP4 e2m1 round-trip with one power-of-two scale per 32 channels
    (``2 ** ceil(log2(amax / 6))``). The transform spreads outliers so FP4 keeps
    the ranking; without it the top-k selection is not the model's. Because the
    transform is orthonormal, q.k is unchanged when no rounding happens.

Where the public notes leave a detail open (the FP4 block size), we chose the
MX convention (32) and say so here; these paths are exercised by tests for
shape, determinism and their defining properties, not against official
vectors, which we cannot download.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

FP8_E4M3_MAX = 448.0
FP4_E2M1_MAX = 6.0
KV_FP8_BLOCK = 64
INDEXER_FP4_BLOCK = 32


@dataclass(frozen=True)
class GraphOptions:
    """Which official-graph round-trips to apply (both off: transformers parity)."""

    fp8_kv: bool = False
    indexer_fp4: bool = False

    @classmethod
    def official(cls) -> GraphOptions:
        """Both switches on: what real DeepSeek V4 Flash weights expect."""
        return cls(fp8_kv=True, indexer_fp4=True)


def _pow2_block_scale(blocks: mx.array, max_code: float) -> mx.array:
    """UE8M0 scale per block (last axis): the smallest power of two with amax/scale <= max."""
    amax = mx.max(mx.abs(blocks), axis=-1, keepdims=True).astype(mx.float32)
    amax = mx.maximum(amax, mx.array(1e-30, dtype=mx.float32))
    return mx.power(mx.array(2.0, dtype=mx.float32), mx.ceil(mx.log2(amax / max_code)))


def _block_for(width: int, preferred: int) -> int:
    """``preferred`` when it divides ``width``; else the largest power of two that does.

    Real Flash sizes (448, 128) divide evenly; tiny test configs may not.
    """
    block = preferred
    while block > 1 and width % block:
        block //= 2
    return block


def fp8_roundtrip(x: mx.array, block: int = KV_FP8_BLOCK) -> mx.array:
    """Round ``x`` through e4m3 with one power-of-two scale per ``block`` channels."""
    shape = x.shape
    block = _block_for(shape[-1], block)
    blocks = x.astype(mx.float32).reshape(*shape[:-1], shape[-1] // block, block)
    scale = _pow2_block_scale(blocks, FP8_E4M3_MAX)
    q = mx.from_fp8(mx.to_fp8(blocks / scale), dtype=mx.float32)
    return (q * scale).reshape(shape).astype(x.dtype)


def _round_e2m1(y: mx.array) -> mx.array:
    """Nearest e2m1 value (0, .5, 1, 1.5, 2, 3, 4, 6 and negatives), saturating at 6."""
    a = mx.minimum(mx.abs(y), FP4_E2M1_MAX)
    # Spacing is 0.5 below 2, 1 in [2, 4), 2 in [4, 6].
    step = mx.where(a < 2.0, 0.5, mx.where(a < 4.0, 1.0, 2.0))
    q = mx.round(a / step) * step
    return mx.where(y < 0, -q, q)


def fp4_roundtrip(x: mx.array, block: int = INDEXER_FP4_BLOCK) -> mx.array:
    """Round ``x`` through e2m1 with one power-of-two scale per ``block`` channels."""
    shape = x.shape
    block = _block_for(shape[-1], block)
    blocks = x.astype(mx.float32).reshape(*shape[:-1], shape[-1] // block, block)
    scale = _pow2_block_scale(blocks, FP4_E2M1_MAX)
    return (_round_e2m1(blocks / scale) * scale).reshape(shape).astype(x.dtype)


def kv_fp8_roundtrip(rows: mx.array, rope_dim: int) -> mx.array:
    """Apply the FP8 round-trip to the non-RoPE channels of KV rows ``[..., head_dim]``."""
    nope = rows[..., :-rope_dim]
    return mx.concatenate([fp8_roundtrip(nope), rows[..., -rope_dim:]], axis=-1)


def indexer_rotate_fp4(x: mx.array) -> mx.array:
    """Hadamard-rotate (orthonormal) then FP4 round-trip the last axis of indexer q or k."""
    rotated = mx.hadamard_transform(x.astype(mx.float32))
    return fp4_roundtrip(rotated).astype(x.dtype)
