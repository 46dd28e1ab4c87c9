"""The model's weight tree from a checkpoint's converted tensors.

The loader turns each tensor into an MLX weight keyed by its internal path
(``layers.3.attn.wq_a``); this module stacks a layer's experts into the fused
``[E, 2I, D]`` / ``[E, D, I]`` layout the MoE runs on, and assembles the paths into
:class:`~local_engine.model.transformer.ModelWeights`, naming any path the shards
did not provide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mlx.core as mx

from local_engine.errors import CheckpointError
from local_engine.model.attention import AttentionWeights, CompressorWeights, IndexerWeights
from local_engine.model.config import ModelConfig
from local_engine.model.hyper_connections import HyperHeadWeights, HyperWeights
from local_engine.model.moe import MoEWeights
from local_engine.model.transformer import LayerWeights, ModelWeights
from local_engine.model.weights import ExpertWeights, QuantizedWeight, Weight, dense_expert_stack

FusedExperts = Callable[[int], "ExpertWeights | None"]


def stack_experts(cfg: ModelConfig, layer: int, mats: dict[str, list[Weight]]) -> ExpertWeights:
    """A layer's per-expert matrices as the fused ``[E, 2I, D]`` / ``[E, D, I]`` stacks."""
    kinds = {type(w) for ws in mats.values() for w in ws}
    if len(kinds) != 1:
        raise CheckpointError(
            f"layer {layer}: experts mix quantized and float weights; expected one encoding"
        )
    e, d, inter = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
    if kinds == {QuantizedWeight}:
        w1 = [w for w in mats["w1"] if isinstance(w, QuantizedWeight)]
        w3 = [w for w in mats["w3"] if isinstance(w, QuantizedWeight)]
        w2 = [w for w in mats["w2"] if isinstance(w, QuantizedWeight)]
        modes = {w.mode for w in w1 + w2 + w3}
        if len(modes) != 1:
            raise CheckpointError(f"layer {layer}: experts mix encodings {sorted(modes)}")
        ref = w1[0]
        gate_up = QuantizedWeight(
            mx.stack([mx.concatenate([a.weight, b.weight]) for a, b in zip(w1, w3, strict=True)]),
            mx.stack([mx.concatenate([a.scales, b.scales]) for a, b in zip(w1, w3, strict=True)]),
            None,
            ref.group_size,
            ref.bits,
            ref.mode,
        )
        down = QuantizedWeight(
            mx.stack([w.weight for w in w2]),
            mx.stack([w.scales for w in w2]),
            None,
            ref.group_size,
            ref.bits,
            ref.mode,
        )
        return ExpertWeights(gate_up, down, e, inter, d)
    dense1 = [w for w in mats["w1"] if isinstance(w, mx.array)]
    dense3 = [w for w in mats["w3"] if isinstance(w, mx.array)]
    dense2 = [w for w in mats["w2"] if isinstance(w, mx.array)]
    gate_up_stack = mx.stack([mx.concatenate([a, b]) for a, b in zip(dense1, dense3, strict=True)])
    return ExpertWeights(
        dense_expert_stack(gate_up_stack), dense_expert_stack(mx.stack(dense2)), e, inter, d
    )


class _Params:
    """The converted tensors by internal path; a required one that is absent is named."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def take(self, path: str) -> Any:
        if path not in self.params:
            raise CheckpointError(f"checkpoint did not provide {path!r} (incomplete shard set?)")
        return self.params[path]

    def opt(self, path: str) -> Any:
        return self.params.get(path)

    def hyper(self, prefix: str) -> HyperWeights:
        return HyperWeights(
            self.take(prefix + ".fn"), self.take(prefix + ".base"), self.take(prefix + ".scale")
        )

    def compressor(self, prefix: str) -> CompressorWeights:
        return CompressorWeights(
            self.take(prefix + ".wkv"),
            self.take(prefix + ".wgate"),
            self.take(prefix + ".ape").astype(mx.float32),
            self.take(prefix + ".norm"),
        )


def _attention(cfg: ModelConfig, p: _Params, q: str) -> AttentionWeights:
    wo_a = p.take(q + "attn.wo_a")
    if isinstance(wo_a, QuantizedWeight):
        wo_a = wo_a.reshape_leading(cfg.o_groups, cfg.o_lora_rank)
    else:
        wo_a = wo_a.reshape(cfg.o_groups, cfg.o_lora_rank, -1)
    comp = None
    if p.opt(q + "attn.compressor.wkv") is not None:
        comp = p.compressor(q + "attn.compressor")
    indexer = None
    if p.opt(q + "attn.indexer.wq_b") is not None:
        indexer = IndexerWeights(
            p.take(q + "attn.indexer.wq_b"),
            p.take(q + "attn.indexer.weights_proj"),
            p.compressor(q + "attn.indexer.compressor"),
        )
    return AttentionWeights(
        wq_a=p.take(q + "attn.wq_a"),
        q_norm=p.take(q + "attn.q_norm"),
        wq_b=p.take(q + "attn.wq_b"),
        wkv=p.take(q + "attn.wkv"),
        kv_norm=p.take(q + "attn.kv_norm"),
        wo_a=wo_a,
        wo_b=p.take(q + "attn.wo_b"),
        sinks=p.take(q + "attn.sinks").astype(mx.float32),
        compressor=comp,
        indexer=indexer,
    )


def _moe(cfg: ModelConfig, p: _Params, layer: int, fused_experts: FusedExperts) -> MoEWeights:
    q = f"layers.{layer}."
    experts = p.opt(q + "moe.experts") or fused_experts(layer)
    if experts is None:
        raise CheckpointError(f"checkpoint did not provide all experts of layer {layer}")
    shared_gate_up = shared_down = None
    if cfg.n_shared_experts:
        shared_gate_up = _concat_rows(p.take(q + "moe.shared.w1"), p.take(q + "moe.shared.w3"))
        shared_down = p.take(q + "moe.shared.w2")
    return MoEWeights(
        gate=p.take(q + "moe.gate"),
        bias=p.opt(q + "moe.bias"),
        tid2eid=p.opt(q + "moe.tid2eid"),
        experts=experts,
        shared_gate_up=shared_gate_up,
        shared_down=shared_down,
    )


def assemble_weights(
    cfg: ModelConfig, params: Mapping[str, Any], fused_experts: FusedExperts
) -> ModelWeights:
    """The weight tree of ``cfg`` from converted tensors by internal path.

    ``fused_experts(layer)`` gives a layer's experts when the checkpoint stored them
    already fused (a converted checkpoint's ``gate_up`` / ``down``), else None.
    """
    p = _Params(params)
    layers = []
    for i in range(cfg.num_hidden_layers):
        q = f"layers.{i}."
        layers.append(
            LayerWeights(
                attn_norm=p.take(q + "attn_norm"),
                ffn_norm=p.take(q + "ffn_norm"),
                hc_attn=p.hyper(q + "hc_attn"),
                hc_ffn=p.hyper(q + "hc_ffn"),
                attn=_attention(cfg, p, q),
                moe=_moe(cfg, p, i, fused_experts),
            )
        )
    embed = p.take("embed")
    return ModelWeights(
        embed=embed,
        head=embed if cfg.tie_word_embeddings else p.take("head"),
        norm=p.take("norm"),
        hc_head=HyperHeadWeights(
            p.take("hc_head.fn").astype(mx.float32),
            p.take("hc_head.base").astype(mx.float32),
            p.take("hc_head.scale").astype(mx.float32),
        ),
        layers=tuple(layers),
    )


def _concat_rows(a: Weight, b: Weight) -> Weight:
    if isinstance(a, QuantizedWeight) and isinstance(b, QuantizedWeight):
        if (a.mode, a.bits, a.group_size) != (b.mode, b.bits, b.group_size):
            raise CheckpointError("shared expert w1 and w3 use different quantizations")
        return QuantizedWeight(
            mx.concatenate([a.weight, b.weight]),
            mx.concatenate([a.scales, b.scales]),
            None if a.biases is None or b.biases is None else mx.concatenate([a.biases, b.biases]),
            a.group_size,
            a.bits,
            a.mode,
        )
    if isinstance(a, mx.array) and isinstance(b, mx.array):
        return mx.concatenate([a, b])
    raise CheckpointError("shared expert w1 and w3 use different encodings")
