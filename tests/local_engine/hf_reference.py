"""The transformers 5.24 DeepSeek V4 reference on tiny random configs: our parity oracle.

Random init leaves several parameters at zero or one (sinks, position biases,
score-correction biases, ``tid2eid``, mHC base/scale, norm weights); a bug in
how we use any of them would go unseen, so :func:`reference_model` randomizes
all of them. Weights get a larger spread than the default init so every path
moves the logits well above the 1e-4 tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

SLIDING = "sliding_attention"
CSA = "compressed_sparse_attention"
HCA = "heavily_compressed_attention"


@dataclass(frozen=True)
class TinySpec:
    """A tiny reference config; defaults cover hc_mult 4, hash and scored MoE."""

    layer_types: tuple[str, ...]
    mlp_layer_types: tuple[str, ...]
    csa_ratio: int = 4
    hca_ratio: int = 8
    sliding_window: int = 8
    index_topk: int = 64
    vocab_size: int = 384
    hidden_size: int = 64
    num_attention_heads: int = 4
    head_dim: int = 32
    rope_dim: int = 8
    q_lora_rank: int = 32
    o_groups: int = 2
    o_lora_rank: int = 16
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 32
    index_n_heads: int = 4
    index_head_dim: int = 16
    yarn: dict[str, Any] = field(
        default_factory=lambda: {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 256,
            "beta_fast": 32,
            "beta_slow": 1,
        }
    )

    def hf_config(self) -> DeepseekV4Config:
        return DeepseekV4Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            moe_intermediate_size=self.moe_intermediate_size,
            num_hidden_layers=len(self.layer_types),
            num_attention_heads=self.num_attention_heads,
            head_dim=self.head_dim,
            partial_rotary_factor=self.rope_dim / self.head_dim,
            q_lora_rank=self.q_lora_rank,
            num_experts_per_tok=self.num_experts_per_tok,
            n_routed_experts=self.n_routed_experts,
            layer_types=list(self.layer_types),
            mlp_layer_types=list(self.mlp_layer_types),
            compress_rates={CSA: self.csa_ratio, HCA: self.hca_ratio},
            sliding_window=self.sliding_window,
            o_groups=self.o_groups,
            o_lora_rank=self.o_lora_rank,
            index_n_heads=self.index_n_heads,
            index_head_dim=self.index_head_dim,
            index_topk=self.index_topk,
            rope_parameters=dict(self.yarn),
            max_position_embeddings=4096,
            initializer_range=0.1,
        )


def reference_model(spec: TinySpec, seed: int = 0) -> DeepseekV4ForCausalLM:
    """A float32 reference model with every zero-initialized parameter randomized."""
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(spec.hf_config()).float().eval()
    g = torch.Generator().manual_seed(seed + 1)

    def randn(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std

    with torch.no_grad():
        named = list(model.named_parameters()) + list(model.named_buffers())
        for name, p in named:
            if "inv_freq" in name:
                continue
            if name.endswith("tid2eid"):
                rows = [
                    torch.randperm(spec.n_routed_experts, generator=g)[: spec.num_experts_per_tok]
                    for _ in range(p.shape[0])
                ]
                p.copy_(torch.stack(rows))
            elif name.endswith(("sinks", "position_bias")):
                p.copy_(randn(p.shape, 1.0))
            elif name.endswith("e_score_correction_bias"):
                p.copy_(randn(p.shape, 0.3))
            elif name.endswith(("hc.base", "hc_base")):
                p.copy_(randn(p.shape, 0.5))
            elif name.endswith(("hc.scale", "hc_scale")):
                p.copy_(1.0 + randn(p.shape, 0.2))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + randn(p.shape, 0.2))
    return model


def save_reference(model: DeepseekV4ForCausalLM, path: Path) -> Path:
    model.save_pretrained(path)
    return path


def reference_logits(model: DeepseekV4ForCausalLM, ids: np.ndarray) -> np.ndarray:
    """Full-sequence logits ``[T, vocab]`` (no cache), float32."""
    with torch.no_grad():
        return model(torch.from_numpy(ids[None].astype(np.int64))).logits[0].numpy()


def capture_indexer(model: DeepseekV4ForCausalLM) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Hook every lightning indexer: (top-k indices per call, scores per call), in layer order."""
    picks: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    for layer in model.model.layers:
        comp = layer.self_attn.compressor
        indexer = getattr(comp, "indexer", None)
        if indexer is None:
            continue
        indexer.register_forward_hook(lambda _m, _i, out: picks.append(out.clone()))
        indexer.scorer.register_forward_hook(lambda _m, _i, out: scores.append(out.clone()))
    return picks, scores
