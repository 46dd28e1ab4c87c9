"""DeepSeek V4 Flash on MLX: the model object the rest of the engine calls.

``logits = model(tokens, cache=cache)`` takes ``[1, T]`` token ids and returns
``[1, T, vocab]`` logits, advancing ``cache`` (a fresh one when omitted). Any
split of a sequence into calls gives the same logits as one call: a ``T = 1``
call after a prefill is a decode step. ``model.prefill`` runs a long prompt in
chunks (``chunk_size``, default ``prefill_chunk_size``) so attention memory
stays bounded, and returns only the last position's logits.

Nothing here calls ``.item()`` or otherwise syncs with the device: positions
are host integers the cache tracks, so a decode loop can queue step after step.

Each layer's stateless pieces (mHC pre/post with their norms, the attention's
input projections and output projection, the MoE block, the final head) are
``mx.compile``-d: every call on GPU, where kernel launches dominate decode;
only decode steps (``T = 1``) on CPU, where the JIT's C++ compile costs seconds
per new shape but decode has just one. On CPU dense projections are stored transposed
(:class:`~local_engine.model.weights.TransposedWeight`), which MLX's CPU matmul reads
faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import mlx.core as mx

from local_engine.cache.kv_cache import ModelCache, make_model_cache
from local_engine.errors import EngineError
from local_engine.model.attention import (
    AttentionShape,
    AttentionWeights,
    CompressorWeights,
    IndexerWeights,
    attention_core,
    attention_inputs,
    attention_output,
    rms_norm,
)
from local_engine.model.config import ModelConfig
from local_engine.model.graph_options import GraphOptions
from local_engine.model.hyper_connections import (
    HyperHeadWeights,
    HyperWeights,
    fused_kernel_ready,
    hc_head,
    hc_post,
    hc_pre,
)
from local_engine.model.moe import ExpertPrefill, MoEWeights, moe_block
from local_engine.model.rope import Rope, make_ropes, rope_for_layer
from local_engine.model.weights import (
    QuantizedWeight,
    TransposedWeight,
    Weight,
    linear,
    weight_dtype_name,
    weight_nbytes,
    weight_size,
)

DEFAULT_PREFILL_CHUNK = 512


@dataclass(frozen=True, eq=False)
class LayerWeights:
    attn_norm: mx.array
    ffn_norm: mx.array
    hc_attn: HyperWeights
    hc_ffn: HyperWeights
    attn: AttentionWeights
    moe: MoEWeights


@dataclass(frozen=True, eq=False)
class ModelWeights:
    embed: Weight  # [vocab, D]
    head: Weight  # [vocab, D]
    norm: mx.array  # [D]
    hc_head: HyperHeadWeights
    layers: tuple[LayerWeights, ...]


def iter_named_weights(weights: ModelWeights) -> list[tuple[str, Weight]]:
    """Every weight with a dotted name (one entry per stored tensor, experts stacked)."""
    out: list[tuple[str, Weight]] = [("embed", weights.embed)]
    if weights.head is not weights.embed:
        out.append(("head", weights.head))
    out += [
        ("norm", weights.norm),
        ("hc_head.fn", weights.hc_head.fn),
        ("hc_head.base", weights.hc_head.base),
        ("hc_head.scale", weights.hc_head.scale),
    ]

    def walk(prefix: str, obj: object) -> None:
        if isinstance(obj, mx.array | QuantizedWeight | TransposedWeight):
            out.append((prefix, obj))
            return
        if obj is None:
            return
        fields = getattr(obj, "__dataclass_fields__", None)
        if fields is None:
            return
        for name in fields:
            walk(f"{prefix}.{name}", getattr(obj, name))

    for i, layer in enumerate(weights.layers):
        walk(f"layers.{i}", layer)
    return out


# Projection fields stored transposed on CPU (everything else keeps its layout).
_PROJECTIONS = {
    AttentionWeights: ("wq_a", "wq_b", "wkv", "wo_a", "wo_b"),
    CompressorWeights: ("wkv", "wgate"),
    IndexerWeights: ("wq_b", "weights_proj"),
    MoEWeights: ("shared_gate_up", "shared_down"),
}


def cpu_layout(weights: ModelWeights) -> ModelWeights:
    """The same weights with dense projections (and the head) stored ``[in, out]``."""

    def convert(obj: Any) -> Any:
        names = _PROJECTIONS.get(type(obj), ())
        changes: dict[str, Any] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.name in names and isinstance(value, mx.array):
                changes[f.name] = TransposedWeight.of(value)
            elif type(value) in _PROJECTIONS:  # a nested compressor or indexer
                changes[f.name] = convert(value)
        return replace(obj, **changes) if changes else obj

    layers = tuple(replace(lw, attn=convert(lw.attn), moe=convert(lw.moe)) for lw in weights.layers)
    head = weights.head
    if isinstance(head, mx.array) and head is not weights.embed:
        head = TransposedWeight.of(head)
    return replace(weights, layers=layers, head=head)


def _weight_arrays(weights: ModelWeights) -> list[mx.array]:
    out: list[mx.array] = []
    for _, w in iter_named_weights(weights):
        if isinstance(w, QuantizedWeight):
            out += [w.weight, w.scales] + ([w.biases] if w.biases is not None else [])
        elif isinstance(w, TransposedWeight):
            out.append(w.wt)
        else:
            out.append(w)
    return out


CompileMode = bool | str  # True (every call), False (none) or "decode" (T = 1 calls only)


def _compiler(mode: CompileMode) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps a piece whose first argument is ``[T, ...]`` per the compile ``mode``.

    ``"decode"`` compiles only ``T = 1`` calls: decode steps have one fixed shape, so
    the JIT compiles once and then fuses the many tiny elementwise ops of mHC and
    the norms (measured on this 2-core CPU, mid-size config: the mHC piece before
    attention 1.4 -> 0.6 ms a layer); prefill shapes vary, and each new one would
    cost a C++ compile on CPU.
    """
    if mode == "decode":

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            compiled = mx.compile(fn)

            def call(first: mx.array, *rest: Any) -> Any:
                return (compiled if first.shape[0] == 1 else fn)(first, *rest)

            return call

        return wrap
    if mode:
        return mx.compile
    return lambda fn: fn


class _LayerProgram:
    """One layer's stateless pieces as (optionally compiled) closures over its weights."""

    def __init__(self, model: Model, i: int, lw: LayerWeights, compile_fns: CompileMode) -> None:
        cfg = model.config
        shape = model._shape
        graph = model.graph
        rope: Rope = rope_for_layer(cfg, i, model._ropes)
        eps = cfg.rms_norm_eps
        hc_kw: dict[str, Any] = {
            "hc": cfg.hc_mult,
            "sinkhorn_iters": cfg.hc_sinkhorn_iters,
            "hc_eps": cfg.hc_eps,
            "norm_eps": eps,
            "fused": model.fused_hc,
        }

        # CPU prefill groups MoE rows per expert on the host (see moe.routed_experts);
        # only where that piece is never compiled for T > 1.
        match model.expert_prefill:
            case None:
                host_grouping = mx.default_device() == mx.cpu and compile_fns is not True
            case ExpertPrefill.GATHER:
                host_grouping = False
            case ExpertPrefill.HOST_QMM | ExpertPrefill.HOST_DEQUANT:
                host_grouping = True
        dequantize = model.expert_prefill == ExpertPrefill.HOST_DEQUANT

        def pre_attn(streams: mx.array) -> tuple[mx.array, mx.array, mx.array]:
            post, comb, x = hc_pre(streams, lw.hc_attn, **hc_kw)
            return post, comb, rms_norm(x, lw.attn_norm, eps)

        def attn_in(x: mx.array, offset: mx.array) -> tuple[mx.array, mx.array, mx.array]:
            return attention_inputs(x, lw.attn, rope, shape, graph, offset)

        def attn_out_pre_ffn(
            streams: mx.array, out: mx.array, offset: mx.array, post: mx.array, comb: mx.array
        ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
            y = attention_output(out, lw.attn, rope, shape, offset)
            streams = hc_post(streams, y, post, comb, fused=model.fused_hc)
            post2, comb2, x = hc_pre(streams, lw.hc_ffn, **hc_kw)
            return streams, post2, comb2, rms_norm(x, lw.ffn_norm, eps)

        def ffn_post(
            streams: mx.array, x: mx.array, ids: mx.array, post: mx.array, comb: mx.array
        ) -> mx.array:
            out = moe_block(
                x,
                ids,
                lw.moe,
                top_k=cfg.num_experts_per_tok,
                scoring=cfg.scoring_func,
                routed_scale=cfg.routed_scaling_factor,
                limit=cfg.swiglu_limit,
                host_grouping=host_grouping,
                dequantize=dequantize,
            )
            return hc_post(streams, out, post, comb, fused=model.fused_hc)

        wrap = _compiler(compile_fns)
        self.rope = rope
        self.pre_attn = wrap(pre_attn)
        self.attn_in = wrap(attn_in)
        self.attn_out_pre_ffn = wrap(attn_out_pre_ffn)
        # Host grouping reads the routing: compiled only for decode steps (T = 1).
        self.ffn_post = (_compiler("decode") if host_grouping and compile_fns else wrap)(ffn_post)


class Model:
    """A loaded DeepSeek V4 model. Build it with :func:`local_engine.load_model`."""

    def __init__(
        self,
        config: ModelConfig,
        weights: ModelWeights,
        *,
        dtype: mx.Dtype = mx.float32,
        graph: GraphOptions | None = None,
        prefill_chunk_size: int = DEFAULT_PREFILL_CHUNK,
        compile: CompileMode | None = None,
        layout: str = "auto",
        fused_hc: bool | None = None,
        expert_prefill: ExpertPrefill | None = None,
    ) -> None:
        if len(weights.layers) != config.num_hidden_layers:
            raise EngineError(
                f"model has {len(weights.layers)} layers of weights but its config says"
                f" {config.num_hidden_layers}"
            )
        on_cpu = mx.default_device() == mx.cpu
        if layout not in ("auto", "cpu", "gpu"):
            raise EngineError(f"layout must be 'auto', 'cpu' or 'gpu', got {layout!r}")
        if layout == "cpu" or (layout == "auto" and on_cpu):
            weights = cpu_layout(weights)
        # Materialize every weight now: a lazy one (e.g. a pending transpose) captured
        # by a compiled closure would be recomputed on every call.
        mx.eval(_weight_arrays(weights))
        self.config = config
        self.weights = weights
        self.dtype = dtype
        self.graph = graph or GraphOptions()
        self.prefill_chunk_size = prefill_chunk_size
        # None: sorted gather matmuls, except host grouping for CPU prefill.
        self.expert_prefill = expert_prefill
        if compile not in (None, True, False, "decode"):
            raise EngineError(f"compile must be True, False or 'decode', got {compile!r}")
        self.compiled: CompileMode = ("decode" if on_cpu else True) if compile is None else compile
        # mHC weights as one GPU kernel where it was checked on this device (None: auto).
        self.fused_hc = fused_hc is not False and fused_kernel_ready(
            hc=config.hc_mult,
            sinkhorn_iters=config.hc_sinkhorn_iters,
            hc_eps=config.hc_eps,
            dim=config.hidden_size,
            dtype=dtype,
        )
        if fused_hc and not self.fused_hc:
            raise EngineError("fused_hc=True needs a CUDA or Metal GPU where the kernel works")
        self._ropes = make_ropes(config)
        self._shape = AttentionShape(
            heads=config.num_attention_heads,
            head_dim=config.head_dim,
            rope_dim=config.qk_rope_head_dim,
            o_groups=config.o_groups,
            window=config.sliding_window,
            index_heads=config.index_n_heads,
            index_head_dim=config.index_head_dim,
            index_topk=config.index_topk,
            eps=config.rms_norm_eps,
        )
        self._programs = [
            _LayerProgram(self, i, lw, self.compiled) for i, lw in enumerate(weights.layers)
        ]

        def final(streams: mx.array) -> mx.array:
            cfg = self.config
            x = hc_head(streams, weights.hc_head, hc_eps=cfg.hc_eps, norm_eps=cfg.rms_norm_eps)
            x = rms_norm(x, weights.norm, cfg.rms_norm_eps)
            return linear(x, weights.head).astype(mx.float32)

        self._final = _compiler(self.compiled)(final)
        # Opt-in debug capture: per layer, the indexer's selection of the last call.
        self.record_indexer = False
        self.last_indexer_selection: dict[int, mx.array] = {}

    # -- state ---------------------------------------------------------------------
    def make_cache(self) -> ModelCache:
        """An empty decode state for this model."""
        return make_model_cache(self.config, self.dtype)

    # -- forward -------------------------------------------------------------------
    def __call__(
        self,
        tokens: mx.array | Sequence[int],
        cache: ModelCache | None = None,
        *,
        chunk_size: int | None = None,
    ) -> mx.array:
        """Logits ``[1, T, vocab]`` for ``tokens`` ``[1, T]``; advances ``cache``.

        With ``chunk_size`` the tokens are processed in calls of at most that many
        (same logits, bounded attention memory).
        """
        ids = self._check_tokens(tokens)
        if cache is None:
            cache = self.make_cache()
        self._check_cache(cache)
        if chunk_size is None or chunk_size >= ids.shape[0]:
            return self._forward(ids, cache)[None]
        if chunk_size < 1:
            raise EngineError(f"chunk_size must be at least 1, got {chunk_size}")
        parts = []
        for start in range(0, ids.shape[0], chunk_size):
            parts.append(self._forward(ids[start : start + chunk_size], cache))
            # Materialize each chunk's state so the graph (and memory) stays per chunk.
            mx.eval(parts[-1], *cache.arrays())
        return mx.concatenate(parts, axis=0)[None]

    def prefill(
        self,
        tokens: mx.array | Sequence[int],
        cache: ModelCache,
        *,
        chunk_size: int | None = None,
    ) -> mx.array:
        """Run a prompt through ``cache`` in chunks; logits ``[1, 1, vocab]`` of its last token."""
        ids = self._check_tokens(tokens)
        self._check_cache(cache)
        size = chunk_size or self.prefill_chunk_size
        if size < 1:
            raise EngineError(f"chunk_size must be at least 1, got {size}")
        last = None
        for start in range(0, ids.shape[0], size):
            chunk = ids[start : start + size]
            last = self._forward(chunk, cache, last_only=True)
            mx.eval(last, *cache.arrays())
        assert last is not None
        return last[None]

    def _forward(self, ids: mx.array, cache: ModelCache, *, last_only: bool = False) -> mx.array:
        cfg = self.config
        t = ids.shape[0]
        h = self._embed(ids)
        streams = mx.broadcast_to(h[:, None, :], (t, cfg.hc_mult, cfg.hidden_size))
        for i, lw in enumerate(self.weights.layers):
            streams = self._layer(i, lw, streams, ids, cache)
        if last_only:
            streams = streams[-1:]
        return self._final(streams)

    def _embed(self, ids: mx.array) -> mx.array:
        e = self.weights.embed
        if isinstance(e, QuantizedWeight):
            return e.take_rows(ids).dequantize(self.dtype)
        assert isinstance(e, mx.array)
        return e[ids].astype(self.dtype)

    def _layer(
        self, i: int, lw: LayerWeights, streams: mx.array, ids: mx.array, cache: ModelCache
    ) -> mx.array:
        prog = self._programs[i]
        layer_cache = cache[i]
        offset = mx.array(layer_cache.tokens, dtype=mx.int32)
        post, comb, x = prog.pre_attn(streams)
        q_residual, q, kv = prog.attn_in(x, offset)
        record: dict[str, mx.array] | None = {} if self.record_indexer else None
        out = attention_core(
            x, q_residual, q, kv, lw.attn, layer_cache, prog.rope, self._shape, self.graph, record
        )
        if record is not None and "indexer_selected" in record:
            self.last_indexer_selection[i] = record["indexer_selected"]
        streams, post, comb, x = prog.attn_out_pre_ffn(streams, out, offset, post, comb)
        return prog.ffn_post(streams, x, ids, post, comb)

    # -- checks --------------------------------------------------------------------
    def _check_tokens(self, tokens: mx.array | Sequence[int]) -> mx.array:
        arr = tokens if isinstance(tokens, mx.array) else mx.array(list(tokens))[None]
        if arr.ndim != 2 or arr.shape[0] != 1:
            raise EngineError(f"tokens must have shape [1, T]; got {list(arr.shape)}")
        if arr.shape[1] == 0:
            raise EngineError("tokens is empty: pass at least one token id")
        if not mx.issubdtype(arr.dtype, mx.integer):
            raise EngineError(f"tokens must be integer ids; got dtype {arr.dtype}")
        return arr[0].astype(mx.int32)

    def _check_cache(self, cache: ModelCache) -> None:
        if len(cache) != self.config.num_hidden_layers:
            raise EngineError(
                f"cache has {len(cache)} layers; this model has {self.config.num_hidden_layers}"
                " (use model.make_cache())"
            )

    # -- size accounting -----------------------------------------------------------
    def named_weights(self) -> list[tuple[str, Weight]]:
        return iter_named_weights(self.weights)

    def num_parameters(self) -> int:
        """Logical parameter count (quantized weights counted unpacked; tid2eid excluded)."""
        return sum(
            weight_size(w) for name, w in self.named_weights() if not name.endswith("tid2eid")
        )

    def weight_bytes_by_dtype(self) -> dict[str, int]:
        """Resident weight bytes per storage type (``float32``, ``bfloat16``, ``mxfp4``...)."""
        out: dict[str, int] = {}
        for _, w in self.named_weights():
            key = weight_dtype_name(w)
            out[key] = out.get(key, 0) + weight_nbytes(w)
        return out

    def weight_bytes_per_token(self) -> int:
        """Weight bytes one decoded token reads: all but the embedding table and idle experts.

        Routed experts count ``k / n_experts`` of their bytes (k are read per
        layer); the embedding counts one row; hash tables count one row.
        """
        cfg = self.config
        frac = cfg.num_experts_per_tok / cfg.n_routed_experts
        total = 0.0
        for name, w in self.named_weights():
            b = weight_nbytes(w)
            if name == "embed":
                total += b / cfg.vocab_size
            elif name.endswith("tid2eid"):
                total += b / cfg.vocab_size
            elif ".moe.experts." in name:
                total += b * frac
            else:
                total += b
        if self.weights.head is self.weights.embed:
            total += weight_nbytes(self.weights.head)
        return int(total)
