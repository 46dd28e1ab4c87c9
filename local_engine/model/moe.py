"""The MoE block: router (scored top-k or hash), routed experts via gather matmuls, shared expert.

Scores are ``sqrtsoftplus(x @ gate^T)`` (or sigmoid / softmax per config). A
scored layer picks its top-k experts on ``scores + e_score_correction_bias``
but weights them with the unbiased scores; a hash layer (the first few) picks
``tid2eid[token_id]`` and has no bias. The weights are normalized to sum to 1
and multiplied by ``routed_scaling_factor``. Experts and the shared expert are
SwiGLU with clamps: gate at most ``limit``, up within ``[-limit, limit]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import mlx.core as mx
import numpy as np

from local_engine.model.weights import (
    ExpertWeights,
    QuantizedWeight,
    Weight,
    expert_matmul,
    linear,
    one_expert,
)

# Below this many (token, expert) pairs sorting costs more than it saves.
_SORT_THRESHOLD = 64


class ExpertPrefill(Enum):
    """How a call of many tokens runs the routed experts.

    ``GATHER``: sorted ``gather_qmm`` / ``gather_mm`` in the graph (compilable);
    ``HOST_QMM``: the routing read on the host, one quantized matmul per expert;
    ``HOST_DEQUANT``: likewise, each expert dequantized to the activations' dtype
    first and multiplied densely. The host variants wait for the router, so they
    run uncompiled and never in decode steps.
    """

    GATHER = "gather"
    HOST_QMM = "host-qmm"
    HOST_DEQUANT = "host-dequant"


@dataclass(frozen=True, eq=False)
class MoEWeights:
    """Router, routed experts and the optional shared expert of one layer."""

    gate: mx.array  # [E, D]
    bias: mx.array | None  # [E] score-correction bias, scored layers only
    tid2eid: mx.array | None  # [vocab, k] int32, hash layers only
    experts: ExpertWeights
    shared_gate_up: Weight | None  # [2I, D]
    shared_down: Weight | None  # [D, I]


def _scores(logits: mx.array, scoring: str) -> mx.array:
    if scoring == "sqrtsoftplus":
        return mx.sqrt(mx.logaddexp(logits, mx.array(0.0, dtype=logits.dtype)))
    if scoring == "sigmoid":
        return mx.sigmoid(logits)
    return mx.softmax(logits, axis=-1, precise=True)


def route(
    x: mx.array,
    token_ids: mx.array,
    w: MoEWeights,
    *,
    top_k: int,
    scoring: str,
    routed_scale: float,
) -> tuple[mx.array, mx.array]:
    """(expert indices ``[T, k]`` uint32, weights ``[T, k]`` fp32) for ``x`` ``[T, D]``."""
    logits = (x @ w.gate.T).astype(mx.float32)
    scores = _scores(logits, scoring)
    if w.tid2eid is not None:
        idx = w.tid2eid[token_ids]
    else:
        biased = scores if w.bias is None else scores + w.bias
        # Only the set matters (weights are gathered per index), so a partition will do.
        idx = mx.argpartition(-biased, kth=top_k - 1, axis=-1)[:, :top_k]
    weights = mx.take_along_axis(scores, idx, axis=-1)
    weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20) * routed_scale
    return idx.astype(mx.uint32), weights


def clamped_swiglu(gate: mx.array, up: mx.array, limit: float) -> mx.array:
    gate = mx.minimum(gate, limit)
    up = mx.clip(up, -limit, limit)
    return gate * mx.sigmoid(gate) * up


def routed_experts(
    x: mx.array,
    idx: mx.array,
    weights: mx.array,
    ex: ExpertWeights,
    limit: float,
    *,
    host_grouping: bool = False,
    dequantize: bool = False,
) -> mx.array:
    """Sum over each token's k experts of ``weight * expert(x)``: ``[T, D]``.

    ``host_grouping`` (CPU prefill): read the routing on the host and run one
    matrix product per expert over its tokens, instead of ``gather_mm``, which on
    MLX's CPU backend multiplies every (token, expert) row on its own even when
    sorted -- it reread each expert's weights once per row (``bench/moe_prefill.py``
    on 2 cores, 64 experts of 1024 x 512, 256 tokens x 6: 304 ms with sorted
    ``gather_mm``, 92 ms grouped, 188 ms for PyTorch's expert loop). It waits for
    the routing, so it is only for calls that are not compiled and not decode steps.
    ``dequantize`` (with ``host_grouping``): each expert's weights are dequantized
    to ``x``'s dtype and multiplied densely.
    """
    t, k = idx.shape
    inter = ex.intermediate
    if host_grouping and t * k >= _SORT_THRESHOLD:
        y = _grouped_on_host(x, idx, ex, limit, dequantize)
    elif t * k >= _SORT_THRESHOLD:
        # Group (token, expert) pairs by expert so each expert's weights are read once.
        flat = idx.reshape(-1)
        order = mx.argsort(flat)
        inverse = mx.argsort(order)
        # A reshape, not [:, None, :]: sorted gather_mm misreads rows of an axis-inserted
        # view (its stride-1 singleton axis; mlx issue 4253, seen on CUDA here too).
        xs = x[order // k].reshape(-1, 1, x.shape[-1])
        sorted_idx = flat[order]
        gu = expert_matmul(xs, ex.gate_up, sorted_idx, sorted_indices=True)
        h = clamped_swiglu(gu[..., :inter], gu[..., inter:], limit)
        y = expert_matmul(h, ex.down, sorted_idx, sorted_indices=True)
        y = y[inverse].reshape(t, k, -1)
    else:
        xe = x[:, None, None, :]
        gu = expert_matmul(xe, ex.gate_up, idx)
        h = clamped_swiglu(gu[..., :inter], gu[..., inter:], limit)
        y = expert_matmul(h, ex.down, idx).squeeze(-2)
    return (y * weights[..., None].astype(y.dtype)).sum(axis=1)


def _grouped_on_host(
    x: mx.array, idx: mx.array, ex: ExpertWeights, limit: float, dequantize: bool = False
) -> mx.array:
    """``[T, k, D]`` expert outputs, one product per expert over the rows routed to it."""

    def expert(w: Weight, e: int) -> Weight:
        one = one_expert(w, e)
        return one.dequantize(x.dtype) if dequantize and isinstance(one, QuantizedWeight) else one

    t, k = idx.shape
    flat = np.array(idx).reshape(-1)  # waits for the router
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=ex.num_experts)
    rows = x[mx.array(order // k)]
    outs, start = [], 0
    for e in np.flatnonzero(counts):
        seg = rows[start : start + int(counts[e])]
        start += int(counts[e])
        gu = linear(seg, expert(ex.gate_up, int(e)))
        h = clamped_swiglu(gu[:, : ex.intermediate], gu[:, ex.intermediate :], limit)
        outs.append(linear(h, expert(ex.down, int(e))))
    inverse = mx.array(np.argsort(order))
    return mx.concatenate(outs)[inverse].reshape(t, k, -1)


def moe_block(
    x: mx.array,
    token_ids: mx.array,
    w: MoEWeights,
    *,
    top_k: int,
    scoring: str,
    routed_scale: float,
    limit: float,
    host_grouping: bool = False,
    dequantize: bool = False,
) -> mx.array:
    """Routed experts plus the shared expert for ``x`` ``[T, D]``."""
    idx, weights = route(x, token_ids, w, top_k=top_k, scoring=scoring, routed_scale=routed_scale)
    out = routed_experts(
        x, idx, weights, w.experts, limit, host_grouping=host_grouping, dequantize=dequantize
    )
    if w.shared_gate_up is not None and w.shared_down is not None:
        gu = linear(x, w.shared_gate_up)
        inter = gu.shape[-1] // 2
        out = out + linear(clamped_swiglu(gu[..., :inter], gu[..., inter:], limit), w.shared_down)
    return out
