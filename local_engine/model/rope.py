"""Partial interleaved RoPE on the trailing dims, with YaRN for the compressed layers.

DeepSeek V4 lays each head out as ``[nope | rope]`` and rotates consecutive
pairs of the trailing ``qk_rope_head_dim`` channels. Sliding-only layers use
plain RoPE (theta 1e4); CSA/HCA layers, their compressors and the indexer use
theta 1.6e5 with YaRN frequencies (attention factor forced to 1.0 by the
reference, so cos/sin are never scaled and no factor appears here).
The attention output's rope slice is rotated back (angle negated) at the query
position because K and V are the same tensor.

``mx.fast.rope`` rotates the *leading* ``dims`` channels, so we slice the
trailing ones out first; it takes periods (``1 / inv_freq``) as ``freqs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from local_engine.model.config import SLIDING, ModelConfig, yarn_inv_freq_params


def default_inv_freq(base: float, dim: int) -> np.ndarray:
    """``1 / base ** (2i / dim)`` in float32, as the reference computes it."""
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    return (np.float32(1.0) / (np.float32(base) ** exponents)).astype(np.float32)


def yarn_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """YaRN frequencies of the compressed layers: fast dims extrapolate, slow ones interpolate."""
    y = cfg.compress_yarn
    dim = cfg.qk_rope_head_dim
    base = cfg.compress_rope_theta
    if y is None:
        return default_inv_freq(base, dim)
    bounds = yarn_inv_freq_params(cfg)
    assert bounds is not None
    low, high = bounds
    if low == high:
        high += 0.001  # the reference's guard against a zero-width ramp
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    extrapolation = np.float32(1.0) / pos_freqs
    interpolation = np.float32(1.0) / (np.float32(y.factor) * pos_freqs)
    ramp = np.clip(
        (np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1
    ).astype(np.float32)
    extrapolation_factor = np.float32(1.0) - ramp
    inv = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv.astype(np.float32)


@dataclass(frozen=True, eq=False)
class Rope:
    """One RoPE flavour: rotate the trailing ``dims`` channels of ``[..., T, D]`` arrays."""

    dims: int
    periods: mx.array  # 1 / inv_freq, what mx.fast.rope's `freqs` wants

    def apply(self, x: mx.array, offset: int | mx.array, *, stride: float = 1.0) -> mx.array:
        """Rotate rows at positions ``stride * (offset + i)`` for row i along axis -2."""
        d = self.dims
        head = x[..., :-d]
        tail = mx.fast.rope(
            x[..., -d:],
            d,
            traditional=True,
            base=None,
            scale=stride,
            offset=offset,
            freqs=self.periods,
        )
        return mx.concatenate([head, tail.astype(x.dtype)], axis=-1)

    def unapply(self, x: mx.array, offset: int | mx.array) -> mx.array:
        """Rotate back (angle negated) at positions ``offset + i``."""
        return self.apply(x, offset, stride=-1.0)


def make_ropes(cfg: ModelConfig) -> tuple[Rope, Rope]:
    """The (main, compress) RoPE pair: sliding layers use main, CSA/HCA use compress."""
    main = default_inv_freq(cfg.rope_theta, cfg.qk_rope_head_dim)
    comp = yarn_inv_freq(cfg)
    return (
        Rope(cfg.qk_rope_head_dim, mx.array(1.0 / main)),
        Rope(cfg.qk_rope_head_dim, mx.array(1.0 / comp)),
    )


def rope_for_layer(cfg: ModelConfig, layer: int, ropes: tuple[Rope, Rope]) -> Rope:
    return ropes[0] if cfg.layer_types[layer] == SLIDING else ropes[1]
