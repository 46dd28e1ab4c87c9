"""Attention for the three V4 layer types, with the compressors and the lightning indexer.

Every layer attends over a sliding window of raw KV rows (one shared KV head,
K = V, RMS-normalized, RoPE on the trailing channels) plus learned per-head
sink logits that join the softmax and are dropped. CSA and HCA layers also
attend over compressed rows:

* HCA (ratio 128): each closed window of ``ratio`` tokens becomes one row, a
  softmax(gate + position_bias)-weighted sum of its projected kv, normalized and
  rotated at the window's start. Query t sees row w only when
  ``w < (t + 1) // ratio``.
* CSA (ratio 4): projections are twice as wide (series A | B); row w pools the
  previous window's A with this window's B over ``2 * ratio`` slots, so the
  previous window's A must survive between calls (overlap state). The lightning
  indexer (its own compressor at ``index_head_dim``) scores the rows per query,
  ``sum_h w_h relu(q_h . k_s) / sqrt(d)``, and only the top ``index_topk`` rows
  are attended to: they are gathered per query, so a token reads k rows however
  long the context (while there are at most k rows, all visible ones are used
  and the indexer's scores are not needed).

Position biases are indexed by position within the window, i.e. absolute
position mod ratio, because windows always start at multiples of the ratio.
The attention output's rope slice is rotated back at the query position, then
the grouped output projection (``o_groups`` blocks to ``o_lora_rank`` each,
then one matrix to hidden) mixes heads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

from local_engine.cache.kv_cache import CompressorState, LayerCache
from local_engine.model.graph_options import GraphOptions, indexer_rotate_fp4, kv_fp8_roundtrip
from local_engine.model.rope import Rope
from local_engine.model.weights import Weight, linear


@dataclass(frozen=True, eq=False)
class CompressorWeights:
    wkv: Weight  # [width, D]
    wgate: Weight  # [width, D]
    ape: mx.array  # [ratio, width] position bias, fp32
    norm: mx.array  # [row_width]


@dataclass(frozen=True, eq=False)
class IndexerWeights:
    wq_b: Weight  # [index_heads * index_head_dim, q_lora_rank]
    weights_proj: Weight  # [index_heads, D]
    compressor: CompressorWeights


@dataclass(frozen=True, eq=False)
class AttentionWeights:
    wq_a: Weight  # [q_lora_rank, D]
    q_norm: mx.array  # [q_lora_rank]
    wq_b: Weight  # [H * head_dim, q_lora_rank]
    wkv: Weight  # [head_dim, D]
    kv_norm: mx.array  # [head_dim]
    wo_a: Weight  # [G, o_lora_rank, H * head_dim / G]
    wo_b: Weight  # [D, G * o_lora_rank]
    sinks: mx.array  # [H] fp32
    compressor: CompressorWeights | None
    indexer: IndexerWeights | None


@dataclass(frozen=True)
class AttentionShape:
    heads: int
    head_dim: int
    rope_dim: int
    o_groups: int
    window: int
    index_heads: int
    index_head_dim: int
    index_topk: int
    eps: float


def rms_norm(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    """RMSNorm computed in fp32 (weight applied in fp32), cast back to ``x``'s dtype."""
    if x.dtype == mx.float32:
        return mx.fast.rms_norm(x, weight, eps)
    y = mx.fast.rms_norm(x.astype(mx.float32), weight, eps)
    return y.astype(x.dtype)


def update_compressor(
    x: mx.array,
    w: CompressorWeights,
    state: CompressorState,
    rope: Rope,
    eps: float,
    post: Callable[[mx.array], mx.array] | None = None,
) -> None:
    """Feed ``x`` ``[T, D]`` to a compressor; append the rows of every window that closes."""
    s = state.shape
    m = s.ratio
    kv = mx.concatenate([state.pending_kv, linear(x, w.wkv).astype(state.dtype)], axis=0)
    gate = mx.concatenate([state.pending_gate, linear(x, w.wgate).astype(state.dtype)], axis=0)
    usable = (kv.shape[0] // m) * m
    state.pending_kv, state.pending_gate = kv[usable:], gate[usable:]
    if usable == 0:
        return
    n = usable // m
    ck = kv[:usable].reshape(n, m, s.width)
    cg = gate[:usable].reshape(n, m, s.width) + w.ape
    if s.overlap:
        d = s.row_width
        a_kv, b_kv = ck[..., :d], ck[..., d:]
        a_gate, b_gate = cg[..., :d], cg[..., d:]
        if state.overlap_kv is None or state.overlap_gate is None:
            # Before the first window there is no A series: zero kv, -inf gate (weight 0).
            first_kv = mx.zeros((1, m, d), dtype=ck.dtype)
            first_gate = mx.full((1, m, d), -mx.inf, dtype=cg.dtype)
        else:
            first_kv = state.overlap_kv[None].astype(ck.dtype)
            first_gate = state.overlap_gate[None].astype(cg.dtype)
        slots_kv = mx.concatenate([mx.concatenate([first_kv, a_kv[:-1]], axis=0), b_kv], axis=1)
        slots_gate = mx.concatenate(
            [mx.concatenate([first_gate, a_gate[:-1]], axis=0), b_gate], axis=1
        )
        state.overlap_kv, state.overlap_gate = a_kv[-1], a_gate[-1]
    else:
        slots_kv, slots_gate = ck, cg
    probs = mx.softmax(slots_gate.astype(mx.float32), axis=1, precise=True)
    rows = (slots_kv * probs.astype(slots_kv.dtype)).sum(axis=1)
    rows = rms_norm(rows, w.norm, eps)
    # Row i sits at the start of its window: position (first_window + i) * ratio.
    rows = rope.apply(rows[None], state.count, stride=float(m))[0]
    if post is not None:
        rows = post(rows)
    state.buffer.append(rows)


@dataclass(frozen=True, eq=False)
class Selection:
    """The indexer's choice per query: row ``indices`` ``[T, k]`` and which are ``valid``.

    Invalid picks (future rows, when a query has fewer than k visible rows) are
    masked out of the attention.
    """

    indices: mx.array
    valid: mx.array

    def dense(self, n: int) -> mx.array:
        """The same choice as a ``[T, N]`` bool mask."""
        t = self.indices.shape[0]
        empty = mx.zeros((t, n), dtype=mx.bool_)
        return mx.put_along_axis(empty, self.indices, self.valid, axis=-1)


# Elements of one [T, heads, N] indexer score block; more heads are scored in turns
# so a long prefill chunk over a long context stays within memory.
_INDEXER_BLOCK = 1 << 27


def indexer_selection(
    x: mx.array,
    q_residual: mx.array,
    w: IndexerWeights,
    state: CompressorState,
    rope: Rope,
    offset: int,
    shape: AttentionShape,
    graph: GraphOptions,
) -> Selection | None:
    """The compressed rows each query attends to, or None for "every row it may see".

    None is returned when there are no more rows than ``index_topk``: top-k then
    selects every row and only causality remains (the caller's mask).
    """
    post = indexer_rotate_fp4 if graph.indexer_fp4 else None
    update_compressor(x, w.compressor, state, rope, shape.eps, post)
    n = state.count
    k = shape.index_topk
    if n <= k:
        return None
    t = x.shape[0]
    nh, d = shape.index_heads, shape.index_head_dim
    q = linear(q_residual, w.wq_b).reshape(t, nh, d).swapaxes(0, 1)  # [nh, T, d]
    q = rope.apply(q, offset)
    if graph.indexer_fp4:
        q = indexer_rotate_fp4(q)
    q = q.astype(mx.float32)
    keys_t = state.rows.astype(mx.float32).T  # [d, N]
    head_w = linear(x, w.weights_proj).astype(mx.float32) * (nh**-0.5)  # [T, nh]
    step = max(1, min(nh, _INDEXER_BLOCK // max(1, t * n)))
    total = None
    for h0 in range(0, nh, step):
        scores = mx.maximum(q[h0 : h0 + step] @ keys_t, 0.0) * (d**-0.5)  # [h, T, N]
        part = (head_w[:, h0 : h0 + step].T[:, :, None] * scores).sum(axis=0)
        total = part if total is None else total + part
    assert total is not None
    causal = _compressed_causal(offset, t, n, state.shape.ratio)
    total = mx.where(causal, total, -mx.inf)
    top = mx.argpartition(-total, kth=k - 1, axis=-1)[:, :k]
    return Selection(top, mx.take_along_axis(causal, top, axis=-1))


def _compressed_causal(offset: int, t: int, n: int, ratio: int) -> mx.array:
    """``[T, N]``: query at position p sees compressed row w iff ``w < (p + 1) // ratio``."""
    limit = (mx.arange(offset, offset + t) + 1) // ratio
    return mx.arange(n)[None, :] < limit[:, None]


def _window_mask(n_prev: int, t: int, window: int) -> mx.array:
    """``[T, n_prev + T]``: key j (position offset - n_prev + j) within the sliding window."""
    j = mx.arange(n_prev + t)[None, :]
    i = mx.arange(t)[:, None] + n_prev
    return (j <= i) & (j > i - window)


def attention_inputs(
    x: mx.array,
    w: AttentionWeights,
    rope: Rope,
    shape: AttentionShape,
    graph: GraphOptions,
    offset: int | mx.array,
) -> tuple[mx.array, mx.array, mx.array]:
    """(q_residual ``[T, q_lora]``, q ``[1, H, T, hd]``, kv ``[T, hd]``) for ``x`` ``[T, D]``.

    Pure (no cache access), so it can be compiled; ``offset`` may be an array.
    """
    t = x.shape[0]
    q_residual = rms_norm(linear(x, w.wq_a), w.q_norm, shape.eps)
    q = linear(q_residual, w.wq_b).reshape(t, shape.heads, shape.head_dim)
    q = rms_norm(q, None, shape.eps).swapaxes(0, 1)[None]  # [1, H, T, hd]
    q = rope.apply(q, offset)
    kv = rms_norm(linear(x, w.wkv), w.kv_norm, shape.eps)
    kv = rope.apply(kv[None], offset)[0]
    if graph.fp8_kv:
        kv = kv_fp8_roundtrip(kv, shape.rope_dim)
    return q_residual, q, kv


def attention_output(
    out: mx.array, w: AttentionWeights, rope: Rope, shape: AttentionShape, offset: int | mx.array
) -> mx.array:
    """De-rotate the attention output ``[1, H, T, hd]`` and apply the grouped projection."""
    t = out.shape[2]
    out = rope.unapply(out, offset)
    grouped = out[0].swapaxes(0, 1).reshape(t, shape.o_groups, -1).swapaxes(0, 1)  # [G, T, in]
    mixed = linear(grouped, w.wo_a)  # [G, T, o_lora]
    return linear(mixed.swapaxes(0, 1).reshape(t, -1), w.wo_b)


def _sparse_attention(
    q: mx.array,
    window_keys: mx.array,
    window_mask: mx.array | None,
    picked_rows: mx.array,
    selection: Selection,
    sinks: mx.array,
    scale: float,
) -> mx.array:
    """Attention over the window plus each query's own selected compressed rows.

    ``picked_rows`` are the k chosen rows per query (``[T, k, hd]``, gathered by
    the row buffer -- from RAM or, for a tiered cache, from disk) instead of
    masking all N rows, so a CSA layer reads ``index_topk`` rows a token however
    long the context is. Logits and softmax in fp32 with the sink logit per head,
    which is then dropped.
    """
    dt = q.dtype
    qh = q[0]  # [H, T, hd]
    wk = window_keys.astype(dt)
    s_w = (qh @ wk.T).astype(mx.float32) * scale  # [H, T, Lw]
    if window_mask is not None:
        s_w = mx.where(window_mask[None], s_w, -mx.inf)
    picked = picked_rows.astype(dt)  # [T, k, hd]
    s_c = (qh.swapaxes(0, 1) @ picked.swapaxes(1, 2)).swapaxes(0, 1)  # [H, T, k]
    s_c = mx.where(selection.valid[None], s_c.astype(mx.float32) * scale, -mx.inf)
    h, t = qh.shape[0], qh.shape[1]
    sink = mx.broadcast_to(sinks.astype(mx.float32)[:, None, None], (h, t, 1))
    probs = mx.softmax(mx.concatenate([s_w, s_c, sink], axis=-1), axis=-1, precise=True)
    probs = probs.astype(dt)
    lw = wk.shape[0]
    out = probs[..., :lw] @ wk  # [H, T, hd]
    p_c = probs[..., lw:-1].swapaxes(0, 1)  # [T, H, k]
    out = out + (p_c @ picked).swapaxes(0, 1)
    return out[None].astype(q.dtype)


def attention_core(
    x: mx.array,
    q_residual: mx.array,
    q: mx.array,
    kv: mx.array,
    w: AttentionWeights,
    cache: LayerCache,
    rope: Rope,
    shape: AttentionShape,
    graph: GraphOptions,
    record: dict[str, mx.array] | None = None,
) -> mx.array:
    """The stateful middle: window, compressors, indexer, masked attention with sinks.

    Returns the attention output ``[1, H, T, hd]`` (rope slice still rotated)
    and advances ``cache`` by ``T`` tokens.
    """
    t = x.shape[0]
    offset = cache.tokens
    n_prev = cache.window.shape[0]
    full = mx.concatenate([cache.window, kv.astype(cache.dtype)], axis=0)
    cache.push_window(full)
    keys = full
    need_mask = t > 1 or n_prev + t > shape.window
    masks = [_window_mask(n_prev, t, shape.window)] if need_mask else []

    if cache.compressor is not None and w.compressor is not None:
        selection = None
        if cache.indexer is not None and w.indexer is not None:
            selection = indexer_selection(
                x, q_residual, w.indexer, cache.indexer, rope, offset, shape, graph
            )
        post = (lambda r: kv_fp8_roundtrip(r, shape.rope_dim)) if graph.fp8_kv else None
        update_compressor(x, w.compressor, cache.compressor, rope, shape.eps, post)
        n = cache.compressor.count
        if selection is not None:
            if record is not None:
                record["indexer_selected"] = selection.dense(n)
            cache.tokens = offset + t
            return _sparse_attention(
                q,
                full,
                masks[0] if masks else None,
                cache.compressor.buffer.gather(selection.indices),
                selection,
                w.sinks,
                shape.head_dim**-0.5,
            )
        if n:
            rows = cache.compressor.rows
            keys = mx.concatenate([full, rows], axis=0)
            if t > 1:
                causal = _compressed_causal(offset, t, n, cache.compressor.shape.ratio)
                masks = masks or [mx.ones((t, full.shape[0]), dtype=mx.bool_)]
                masks.append(causal)
            elif masks:
                # One query after its own update sees every compressed row.
                masks.append(mx.ones((t, n), dtype=mx.bool_))
    cache.tokens = offset + t

    mask = mx.concatenate(masks, axis=-1)[None, None] if masks else None
    kv_heads = keys[None, None].astype(q.dtype)
    return mx.fast.scaled_dot_product_attention(
        q,
        kv_heads,
        kv_heads,
        scale=shape.head_dim**-0.5,
        mask=mask,
        sinks=w.sinks.astype(q.dtype),
    )
