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

On a GPU, the step from ``mix`` to (pre, post, comb) -- a few dozen tiny
elementwise ops and reductions on ``[T, hc, hc]``, each one kernel launch even
when compiled -- runs as one custom kernel (:func:`fused_weights`), one thread
per token; and ``hc_post`` as another (:func:`fused_post`), whose tiny batched
matmul was a slow launch of its own. Both run only where
:func:`fused_kernel_ready` has checked them against the MLX ops on this device.
``DS4ROUTER_HC_KERNEL=off`` turns them off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

log = logging.getLogger(__name__)


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


def mix_weights(
    mix: mx.array, base: mx.array, scale: mx.array, *, hc: int, sinkhorn_iters: int, hc_eps: float
) -> tuple[mx.array, mx.array, mx.array]:
    """(pre ``[T, hc]``, post ``[T, hc]``, comb ``[T, hc, hc]``) from ``mix`` ``[T, (2+hc)*hc]``."""
    t = mix.shape[0]
    pre = mx.sigmoid(mix[:, :hc] * scale[0] + base[:hc]) + hc_eps
    post = 2.0 * mx.sigmoid(mix[:, hc : 2 * hc] * scale[1] + base[hc : 2 * hc])
    logits = mix[:, 2 * hc :].reshape(t, hc, hc) * scale[2] + base[2 * hc :].reshape(hc, hc)
    comb = mx.softmax(logits, axis=-1, precise=True) + hc_eps
    comb = comb / (comb.sum(axis=-2, keepdims=True) + hc_eps)
    for _ in range(sinkhorn_iters - 1):
        comb = comb / (comb.sum(axis=-1, keepdims=True) + hc_eps)
        comb = comb / (comb.sum(axis=-2, keepdims=True) + hc_eps)
    return pre, post, comb


# The body of :func:`mix_weights` for one token ``t``, in the C subset CUDA and
# Metal share; each backend's prelude defines ``t``. Same operation order as the
# MLX ops above (sums run over 4 values in index order).
_KERNEL_BODY = """
    constexpr int NM = (2 + HC) * HC;
    const float e = eps[0];
    const float s0 = scale[0];
    const float s1 = scale[1];
    const float s2 = scale[2];
    for (int j = 0; j < HC; ++j) {
        float a = mix[t * NM + j] * s0 + base[j];
        pre[t * HC + j] = 1.0f / (1.0f + exp(-a)) + e;
        float b = mix[t * NM + HC + j] * s1 + base[HC + j];
        post[t * HC + j] = 2.0f * (1.0f / (1.0f + exp(-b)));
    }
    float c[HC * HC];
    for (int r = 0; r < HC; ++r) {
        float top = -3.0e38f;
        for (int k = 0; k < HC; ++k) {
            float v = mix[t * NM + 2 * HC + r * HC + k] * s2 + base[2 * HC + r * HC + k];
            c[r * HC + k] = v;
            top = fmax(top, v);
        }
        float sum = 0.0f;
        for (int k = 0; k < HC; ++k) {
            c[r * HC + k] = exp(c[r * HC + k] - top);
            sum += c[r * HC + k];
        }
        for (int k = 0; k < HC; ++k) {
            c[r * HC + k] = c[r * HC + k] / sum + e;
        }
    }
    for (int it = 0; it < ITERS; ++it) {
        if (it > 0) {
            for (int r = 0; r < HC; ++r) {
                float sum = 0.0f;
                for (int k = 0; k < HC; ++k) sum += c[r * HC + k];
                for (int k = 0; k < HC; ++k) c[r * HC + k] = c[r * HC + k] / (sum + e);
            }
        }
        for (int k = 0; k < HC; ++k) {
            float sum = 0.0f;
            for (int r = 0; r < HC; ++r) sum += c[r * HC + k];
            for (int r = 0; r < HC; ++r) c[r * HC + k] = c[r * HC + k] / (sum + e);
        }
    }
    for (int i = 0; i < HC * HC; ++i) comb[t * HC * HC + i] = c[i];
"""

# ``post (x) out + comb^T @ streams`` for one element ``i`` of the new ``[T, hc, D]``
# streams, accumulated in fp32 and rounded once.
_POST_BODY = """
    const int d = i % DIM;
    const int s = (i / DIM) % HC;
    const int t = i / (DIM * HC);
    float acc = post[t * HC + s] * static_cast<float>(out[t * DIM + d]);
    for (int j = 0; j < HC; ++j) {
        acc += comb[(t * HC + j) * HC + s] * static_cast<float>(streams[(t * HC + j) * DIM + d]);
    }
    result[i] = static_cast<T>(acc);
"""

_THREAD_INDEX = {
    "cuda": "const int {} = cooperative_groups::this_grid().thread_rank();\n",
    "metal": "const int {} = int(thread_position_in_grid.x);\n",
}

_kernels: dict[tuple[str, str], Any] = {}
_ready: dict[tuple[str, int, int, int, str], bool] = {}


def gpu_backend() -> str | None:
    """``"cuda"`` or ``"metal"`` when the default device is such a GPU, else None."""
    if mx.default_device() != mx.gpu:
        return None
    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return None


def _kernel(backend: str, name: str) -> Callable[..., Any]:
    if (backend, name) not in _kernels:
        make = mx.fast.cuda_kernel if backend == "cuda" else mx.fast.metal_kernel
        if name == "weights":
            io = (["mix", "base", "scale", "eps"], ["pre", "post", "comb"])
            source = _THREAD_INDEX[backend].format("t") + _KERNEL_BODY
        else:
            io = (["streams", "out", "post", "comb"], ["result"])
            source = _THREAD_INDEX[backend].format("i") + _POST_BODY
        _kernels[backend, name] = make(
            name=f"ds4_mhc_{name}", input_names=io[0], output_names=io[1], source=source
        )
    return _kernels[backend, name]


def _group(n: int, largest: int) -> int:
    """The largest power of two up to ``largest`` dividing ``n``: the grid is then exact."""
    g = largest
    while n % g:
        g //= 2
    return g


def _backend_or_raise() -> str:
    backend = gpu_backend()
    if backend is None:
        raise RuntimeError("the fused mHC kernels need a CUDA or Metal default device")
    return backend


def fused_weights(
    mix: mx.array, base: mx.array, scale: mx.array, *, hc: int, sinkhorn_iters: int, hc_eps: float
) -> tuple[mx.array, mx.array, mx.array]:
    """:func:`mix_weights` as one GPU kernel (``mix`` float32); needs :func:`gpu_backend`."""
    t = mix.shape[0]
    pre, post, comb = _kernel(_backend_or_raise(), "weights")(
        inputs=[
            mix.astype(mx.float32),
            base.astype(mx.float32),
            scale.astype(mx.float32),
            mx.array([hc_eps], dtype=mx.float32),
        ],
        template=[("HC", hc), ("ITERS", sinkhorn_iters)],
        grid=(t, 1, 1),
        threadgroup=(_group(t, 64), 1, 1),
        output_shapes=[(t, hc), (t, hc), (t, hc, hc)],
        output_dtypes=[mx.float32] * 3,
    )
    return pre, post, comb


def fused_post(streams: mx.array, out: mx.array, post: mx.array, comb: mx.array) -> mx.array:
    """:func:`hc_post` as one GPU kernel; needs :func:`gpu_backend`."""
    t, hc, dim = streams.shape
    n = t * hc * dim
    (result,) = _kernel(_backend_or_raise(), "post")(
        inputs=[
            streams,
            out.astype(streams.dtype),
            post.astype(mx.float32),
            comb.astype(mx.float32),
        ],
        template=[("T", streams.dtype), ("HC", hc), ("DIM", dim)],
        grid=(n, 1, 1),
        threadgroup=(_group(n, 256), 1, 1),
        output_shapes=[streams.shape],
        output_dtypes=[streams.dtype],
    )
    return result


def fused_kernel_ready(
    *, hc: int, sinkhorn_iters: int, hc_eps: float, dim: int = 256, dtype: mx.Dtype = mx.float32
) -> bool:
    """Whether :func:`fused_weights` and :func:`fused_post` can stand in for the MLX ops here.

    Checked once per process and shape: the kernels are compiled and run on random
    inputs next to the MLX ops -- float32, which must agree to 1e-5 (values near 1),
    and the streams' ``dtype`` at width ``dim`` (the instantiation the model runs),
    which must agree to the rounding of that dtype. Any failure (no GPU, a compile
    error on an untried backend, a mismatch) keeps the MLX ops, with one warning.
    Call it outside ``mx.compile`` (it evaluates).
    """
    backend = gpu_backend()
    if backend is None or os.environ.get("DS4ROUTER_HC_KERNEL", "").lower() in ("off", "0"):
        return False
    key = (backend, hc, sinkhorn_iters, dim, str(dtype))
    if key not in _ready:
        try:
            delta, limit = _self_check(hc, sinkhorn_iters, hc_eps, dim, dtype)
            _ready[key] = delta <= limit
            if not _ready[key]:
                log.warning("fused mHC kernel differs by %.3g on %s; using MLX ops", delta, backend)
        except Exception as exc:  # noqa: BLE001 - any failure means: keep the MLX ops
            log.warning("fused mHC kernel unavailable on %s (%s); using MLX ops", backend, exc)
            _ready[key] = False
    return _ready[key]


def _self_check(
    hc: int, iters: int, hc_eps: float, dim: int, dtype: mx.Dtype
) -> tuple[float, float]:
    """(largest difference of the kernels from a float64 host reference / what is allowed, 1).

    The reference is numpy in float64, not the MLX ops on the device: on CUDA,
    MLX's float32 matmul runs at TF32 precision (even with NVIDIA_TF32_OVERRIDE=0,
    measured 1.7e-4 relative on an H200 for ``comb^T @ streams`` at width 4096), so
    comparing the fp32 kernel against the MLX ops failed the fp32 model's check
    ("differs by 179") although the kernel was the exact one.
    """
    report = self_check_report(hc, iters, hc_eps, dim, dtype)
    eps = float(mx.finfo(dtype).eps)
    # fp32 arithmetic on values near 1 (weights) or O(1) sums of 1 + hc terms (post):
    # far under 1e-5; the dtype-rounded post is rounded once, from an fp32 sum.
    typed_limit = max(2 * eps, 1e-6)
    return max(report["kernel_fp32"] / 1e-5, report["kernel_typed"] / typed_limit), 1.0


def self_check_report(
    hc: int, iters: int, hc_eps: float, dim: int, dtype: mx.Dtype
) -> dict[str, float]:
    """Relative differences from a float64 reference of the kernels and of the MLX ops.

    ``kernel_fp32``/``ops_fp32``: the weights and ``hc_post`` in float32 at width 256;
    ``kernel_typed``/``ops_typed``: ``hc_post`` in ``dtype`` at width ``dim``.
    """
    nm = (2 + hc) * hc
    mix = mx.random.normal((37, nm), key=mx.random.key(7)) * 2.0
    base = mx.random.normal((nm,), key=mx.random.key(8))
    scale = mx.array([0.5, 1.5, 3.0])
    kw: dict[str, Any] = {"hc": hc, "sinkhorn_iters": iters, "hc_eps": hc_eps}
    ref = _mix_weights_f64(np.array(mix), np.array(base), np.array(scale), **kw)
    streams = mx.random.normal((37, hc, 256), key=mx.random.key(9))
    out = mx.random.normal((37, 256), key=mx.random.key(10))
    post, comb = fused_weights(mix, base, scale, **kw)[1:]
    ref.append(_post_f64(streams, out, post, comb))
    got = [*fused_weights(mix, base, scale, **kw), fused_post(streams, out, post, comb)]
    ops = [*mix_weights(mix, base, scale, **kw), hc_post(streams, out, post, comb)]
    typed_s = mx.random.normal((3, hc, dim), key=mx.random.key(11)).astype(dtype)
    typed_o = mx.random.normal((3, dim), key=mx.random.key(12)).astype(dtype)
    typed_ref = _post_f64(typed_s, typed_o, post[:3], comb[:3])
    return {
        "kernel_fp32": max(_relative(r, g) for r, g in zip(ref, got, strict=True)),
        "ops_fp32": max(_relative(r, g) for r, g in zip(ref, ops, strict=True)),
        "kernel_typed": _relative(typed_ref, fused_post(typed_s, typed_o, post[:3], comb[:3])),
        "ops_typed": _relative(typed_ref, hc_post(typed_s, typed_o, post[:3], comb[:3])),
    }


def _mix_weights_f64(
    mix: np.ndarray,
    base: np.ndarray,
    scale: np.ndarray,
    *,
    hc: int,
    sinkhorn_iters: int,
    hc_eps: float,
) -> list[np.ndarray]:
    """:func:`mix_weights` in float64 on the host (the self-check's reference)."""
    m, b, s = mix.astype(np.float64), base.astype(np.float64), scale.astype(np.float64)

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    pre = sigmoid(m[:, :hc] * s[0] + b[:hc]) + hc_eps
    post = 2.0 * sigmoid(m[:, hc : 2 * hc] * s[1] + b[hc : 2 * hc])
    logits = m[:, 2 * hc :].reshape(-1, hc, hc) * s[2] + b[2 * hc :].reshape(hc, hc)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    comb = e / e.sum(axis=-1, keepdims=True) + hc_eps
    comb = comb / (comb.sum(axis=-2, keepdims=True) + hc_eps)
    for _ in range(sinkhorn_iters - 1):
        comb = comb / (comb.sum(axis=-1, keepdims=True) + hc_eps)
        comb = comb / (comb.sum(axis=-2, keepdims=True) + hc_eps)
    return [pre, post, comb]


def _post_f64(streams: mx.array, out: mx.array, post: mx.array, comb: mx.array) -> np.ndarray:
    """:func:`hc_post` in float64 on the host, from the same (rounded) inputs."""
    s, o = (np.array(a.astype(mx.float32)).astype(np.float64) for a in (streams, out))
    p, c = (np.array(a).astype(np.float64) for a in (post, comb))
    return p[..., None] * o[:, None, :] + np.einsum("tjs,tjd->tsd", c, s)


def _relative(ref: np.ndarray, got: mx.array) -> float:
    g = np.array(got.astype(mx.float32)).astype(np.float64)
    return float(np.abs(ref - g).max()) / max(1.0, float(np.abs(ref).max()))


def hc_pre(
    streams: mx.array,
    w: HyperWeights,
    *,
    hc: int,
    sinkhorn_iters: int,
    hc_eps: float,
    norm_eps: float,
    fused: bool = False,
) -> tuple[mx.array, mx.array, mx.array]:
    """(post ``[T, hc]``, comb ``[T, hc, hc]``, collapsed input ``[T, D]``) for ``[T, hc, D]``.

    ``fused``: compute the weights with :func:`fused_weights` (GPU only; check
    :func:`fused_kernel_ready` first).
    """
    t = streams.shape[0]
    flat = streams.reshape(t, -1).astype(mx.float32)
    mix = _unweighted_rms_norm(flat, norm_eps) @ w.fn.T
    weights = fused_weights if fused else mix_weights
    pre, post, comb = weights(
        mix, w.base, w.scale, hc=hc, sinkhorn_iters=sinkhorn_iters, hc_eps=hc_eps
    )
    collapsed = (pre[..., None] * streams.astype(mx.float32)).sum(axis=1)
    return post, comb, collapsed.astype(streams.dtype)


def hc_post(
    streams: mx.array, out: mx.array, post: mx.array, comb: mx.array, *, fused: bool = False
) -> mx.array:
    """New streams ``post (x) out + comb^T @ streams`` (comb is read transposed).

    ``fused``: one GPU kernel (:func:`fused_post`), accumulating in fp32.
    """
    if fused:
        return fused_post(streams, out, post, comb)
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
