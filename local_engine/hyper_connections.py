"""Manifold-constrained hyper-connections (mHC): the residual kept as ``hc_mult`` streams.

Around every sublayer (attention, MoE) the streams ``[T, hc, D]`` are flattened,
RMS-normalized without a weight (fp32), and projected by ``fn`` ``[(2+hc)*hc,
hc*D]`` into three sets of weights: ``pre`` (collapse the streams into the
sublayer's input; sigmoid + eps), ``post`` (spread the sublayer's output back
over the streams; 2 * sigmoid) and ``comb`` (mix the streams; row softmax +
eps, then Sinkhorn: columns once, then ``iters - 1`` times rows and columns, so
it is close to doubly stochastic). The streams become
``post (x) out + comb^T @ streams``. The model's final ``hc_head`` collapses the
streams once more, with sigmoid weights and no Sinkhorn.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True, eq=False)
class HyperWeights:
    """One mHC site: ``fn`` ``[(2+hc)*hc, hc*D]``, ``base`` ``[(2+hc)*hc]``, ``scale`` ``[3]``."""

    fn: mx.array
    base: mx.array
    scale: mx.array


@dataclass(frozen=True, eq=False)
class HyperHeadWeights:
    """The final collapse: ``fn`` ``[hc, hc*D]``, ``base`` ``[hc]``, ``scale`` ``[1]``."""

    fn: mx.array
    base: mx.array
    scale: mx.array


def _unweighted_rms_norm(x: mx.array, eps: float) -> mx.array:
    return mx.fast.rms_norm(x, None, eps)


def hc_pre(
    streams: mx.array,
    w: HyperWeights,
    *,
    hc: int,
    sinkhorn_iters: int,
    hc_eps: float,
    norm_eps: float,
) -> tuple[mx.array, mx.array, mx.array]:
    """(post ``[T, hc]``, comb ``[T, hc, hc]``, collapsed input ``[T, D]``) for ``[T, hc, D]``."""
    t = streams.shape[0]
    flat = streams.reshape(t, -1).astype(mx.float32)
    mix = _unweighted_rms_norm(flat, norm_eps) @ w.fn.T
    base, scale = w.base, w.scale
    pre = mx.sigmoid(mix[:, :hc] * scale[0] + base[:hc]) + hc_eps
    post = 2.0 * mx.sigmoid(mix[:, hc : 2 * hc] * scale[1] + base[hc : 2 * hc])
    logits = mix[:, 2 * hc :].reshape(t, hc, hc) * scale[2] + base[2 * hc :].reshape(hc, hc)
    comb = mx.softmax(logits, axis=-1, precise=True) + hc_eps
    comb = comb / (comb.sum(axis=-2, keepdims=True) + hc_eps)
    for _ in range(sinkhorn_iters - 1):
        comb = comb / (comb.sum(axis=-1, keepdims=True) + hc_eps)
        comb = comb / (comb.sum(axis=-2, keepdims=True) + hc_eps)
    collapsed = (pre[..., None] * streams.astype(mx.float32)).sum(axis=1)
    return post, comb, collapsed.astype(streams.dtype)


def hc_post(streams: mx.array, out: mx.array, post: mx.array, comb: mx.array) -> mx.array:
    """New streams ``post (x) out + comb^T @ streams`` (comb is read transposed)."""
    dt = streams.dtype
    spread = post.astype(dt)[..., None] * out[:, None, :]
    return spread + comb.swapaxes(-1, -2).astype(dt) @ streams


def hc_head(streams: mx.array, w: HyperHeadWeights, *, hc_eps: float, norm_eps: float) -> mx.array:
    """Collapse ``[T, hc, D]`` to ``[T, D]`` with sigmoid weights (no Sinkhorn)."""
    t = streams.shape[0]
    flat = _unweighted_rms_norm(streams.reshape(t, -1).astype(mx.float32), norm_eps)
    mixes = flat @ w.fn.T
    pre = mx.sigmoid(mixes * w.scale + w.base) + hc_eps
    return (pre[..., None] * streams.astype(mx.float32)).sum(axis=1).astype(streams.dtype)
