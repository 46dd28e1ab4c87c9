"""Tensor names: the official release's, transformers' ``save_pretrained``'s, and ours.

Three spellings reach the loader:

* official: ``embed.weight``, ``layers.3.attn.wq_a.weight`` (+ ``.scale``),
  ``layers.3.ffn.experts.17.w1.weight``, ``hc_head_fn``, ``mtp.*`` ...
* transformers 5.24 ``save_pretrained``: mostly the official names again, under
  ``model.`` (``model.layers.3.attn.norm.weight``), with ``model.embed_tokens``,
  ``model.hc_head.hc_fn`` and a bare ``head.weight``;
* transformers' in-memory module names (``self_attn.q_a_proj``,
  ``mlp.experts.gate_up_proj``), which older writers may emit.

Our converter (:mod:`local_engine.checkpoint.convert`) writes official names too, with
MLX's quantized entries beside a ``.weight``: ``.scales`` and ``.biases``, and
each layer's routed experts fused (``ffn.experts.gate_up_proj``,
``ffn.experts.down_proj``).

:func:`parse_name` folds any of them into a :class:`ParsedName`: our internal
parameter path (``layers.3.attn.wq_a``), whether it is a weight or its FP8/FP4
scale, and for per-expert tensors which expert and which matrix (w1 gate, w3
up, w2 down).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from local_engine.model.config import CSA, HASH_MOE, HCA, ModelConfig

# Applied in order to a name (without "model.") to reach the official spelling.
_HF_TO_OFFICIAL: tuple[tuple[str, str], ...] = (
    (r"^embed_tokens\.weight$", "embed.weight"),
    (r"^lm_head\.weight$", "head.weight"),
    (r"^hc_head\.hc_(fn|base|scale)$", r"hc_head_\1"),
    (r"\.self_attn\.", ".attn."),
    (r"\.mlp\.", ".ffn."),
    (r"\.input_layernorm\.", ".attn_norm."),
    (r"\.post_attention_layernorm\.", ".ffn_norm."),
    (r"\.attn_hc\.(fn|base|scale)$", r".hc_attn_\1"),
    (r"\.ffn_hc\.(fn|base|scale)$", r".hc_ffn_\1"),
    (r"\.attn\.compressor\.indexer\.scorer\.weights_proj\.", ".attn.indexer.weights_proj."),
    (r"\.attn\.compressor\.indexer\.q_b_proj\.", ".attn.indexer.wq_b."),
    (r"\.attn\.compressor\.indexer\.", ".attn.indexer.compressor."),
    (r"\.(shared_experts|experts\.\d+)\.gate_proj\.", r".\1.w1."),
    (r"\.(shared_experts|experts\.\d+)\.up_proj\.", r".\1.w3."),
    (r"\.(shared_experts|experts\.\d+)\.down_proj\.", r".\1.w2."),
    (r"\.kv_proj\.", ".wkv."),
    (r"\.gate_proj\.", ".wgate."),
    (r"\.q_a_proj\.", ".wq_a."),
    (r"\.attn\.q_b_proj\.", ".attn.wq_b."),
    (r"\.o_a_proj\.", ".wo_a."),
    (r"\.o_b_proj\.", ".wo_b."),
    (r"\.q_a_norm\.", ".q_norm."),
    (r"\.compressor\.kv_norm\.", ".compressor.norm."),
    (r"\.attn\.norm\.", ".attn.kv_norm."),
    (r"\.position_bias$", ".ape"),
    (r"\.sinks$", ".attn_sink"),
    (r"\.gate\.e_score_correction_bias$", ".gate.bias"),
)
_HF_RULES = tuple((re.compile(p), r) for p, r in _HF_TO_OFFICIAL)

# Official per-layer suffix -> internal path (relative to "layers.L.").
_LAYER_PATHS: dict[str, str] = {
    "attn_norm": "attn_norm",
    "ffn_norm": "ffn_norm",
    "hc_attn_fn": "hc_attn.fn",
    "hc_attn_base": "hc_attn.base",
    "hc_attn_scale": "hc_attn.scale",
    "hc_ffn_fn": "hc_ffn.fn",
    "hc_ffn_base": "hc_ffn.base",
    "hc_ffn_scale": "hc_ffn.scale",
    "attn.wq_a": "attn.wq_a",
    "attn.q_norm": "attn.q_norm",
    "attn.wq_b": "attn.wq_b",
    "attn.wkv": "attn.wkv",
    "attn.kv_norm": "attn.kv_norm",
    "attn.wo_a": "attn.wo_a",
    "attn.wo_b": "attn.wo_b",
    "attn.attn_sink": "attn.sinks",
    "attn.compressor.wkv": "attn.compressor.wkv",
    "attn.compressor.wgate": "attn.compressor.wgate",
    "attn.compressor.ape": "attn.compressor.ape",
    "attn.compressor.norm": "attn.compressor.norm",
    "attn.indexer.wq_b": "attn.indexer.wq_b",
    "attn.indexer.weights_proj": "attn.indexer.weights_proj",
    "attn.indexer.compressor.wkv": "attn.indexer.compressor.wkv",
    "attn.indexer.compressor.wgate": "attn.indexer.compressor.wgate",
    "attn.indexer.compressor.ape": "attn.indexer.compressor.ape",
    "attn.indexer.compressor.norm": "attn.indexer.compressor.norm",
    "ffn.gate": "moe.gate",
    "ffn.gate.bias": "moe.bias",
    "ffn.gate.tid2eid": "moe.tid2eid",
    "ffn.shared_experts.w1": "moe.shared.w1",
    "ffn.shared_experts.w2": "moe.shared.w2",
    "ffn.shared_experts.w3": "moe.shared.w3",
    "ffn.experts.gate_up_proj": "moe.experts.gate_up",
    "ffn.experts.down_proj": "moe.experts.down",
}
_TOP_PATHS: dict[str, str] = {
    "embed": "embed",
    "head": "head",
    "norm": "norm",
    "hc_head_fn": "hc_head.fn",
    "hc_head_base": "hc_head.base",
    "hc_head_scale": "hc_head.scale",
}
_EXPERT = re.compile(r"^ffn\.experts\.(\d+)\.(w[123])$")
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_SCALE_SUFFIXES = (".scale", ".weight_scale_inv")
# MLX-quantized entries (converted checkpoints): suffix -> ParsedName.part
_MLX_SUFFIXES = {".scales": "scales", ".biases": "biases"}


@dataclass(frozen=True)
class ParsedName:
    """What a checkpoint tensor is, in our terms."""

    path: str  # internal path, e.g. "layers.3.attn.wq_a" or "layers.3.moe.experts"
    is_scale: bool = False
    layer: int | None = None
    expert: int | None = None
    matrix: str | None = None  # w1 / w2 / w3 for per-expert tensors
    # "weight", "scale" (official FP8/FP4 block scales) or MLX's "scales" / "biases"
    part: str = "weight"


def to_official(name: str) -> str:
    """The official spelling of any accepted name (``model.`` dropped)."""
    n = name.removeprefix("model.")
    for pattern, repl in _HF_RULES:
        n = pattern.sub(repl, n)
    return n


def parse_name(name: str) -> ParsedName | None:
    """Parse a checkpoint tensor name; None for tensors we deliberately skip (``mtp.*``).

    Raises ``KeyError`` for names that are not part of the architecture.
    """
    n = to_official(name)
    if n.startswith("mtp."):
        return None
    is_scale = False
    part = "weight"
    for suffix in _SCALE_SUFFIXES:
        if n.endswith(suffix):
            n, is_scale, part = n[: -len(suffix)], True, "scale"
            break
    else:
        for suffix, mlx_part in _MLX_SUFFIXES.items():
            if n.endswith(suffix):
                n, part = n[: -len(suffix)], mlx_part
                break
        else:
            n = n.removesuffix(".weight")
    m = _LAYER.match(n)
    if m is None:
        if n in _TOP_PATHS:
            return ParsedName(_TOP_PATHS[n], is_scale, part=part)
        raise KeyError(name)
    layer, rest = int(m.group(1)), m.group(2)
    e = _EXPERT.match(rest)
    if e is not None:
        return ParsedName(
            f"layers.{layer}.moe.experts", is_scale, layer, int(e.group(1)), e.group(2), part
        )
    if rest in _LAYER_PATHS:
        return ParsedName(f"layers.{layer}.{_LAYER_PATHS[rest]}", is_scale, layer, part=part)
    raise KeyError(name)


def official_name(path: str) -> str:
    """The official tensor base name of an internal path (the inverse of :func:`parse_name`
    for non-expert paths; fused experts map to ``ffn.experts.gate_up_proj`` / ``down_proj``).
    """
    top = {v: k for k, v in _TOP_PATHS.items()}
    if path in top:
        return top[path]
    m = _LAYER.match(path)
    if m is not None:
        inverse = {v: k for k, v in _LAYER_PATHS.items()}
        rest = m.group(2)
        if rest in inverse:
            return f"layers.{m.group(1)}.{inverse[rest]}"
    raise KeyError(path)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Logical shape of every internal tensor path a checkpoint must provide.

    Per-expert matrices appear as ``layers.L.moe.experts.w1`` etc. (one
    expert's shape); fused alternatives are resolved by the loader.
    """
    d, hc = cfg.hidden_size, cfg.hc_mult
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (cfg.vocab_size, d),
        "norm": (d,),
        "hc_head.fn": (hc, hc * d),
        "hc_head.base": (hc,),
        "hc_head.scale": (1,),
    }
    if not cfg.tie_word_embeddings:
        shapes["head"] = (cfg.vocab_size, d)
    for i in range(cfg.num_hidden_layers):
        shapes.update(_layer_shapes(cfg, i))
    return shapes


def _layer_shapes(cfg: ModelConfig, i: int) -> dict[str, tuple[int, ...]]:
    """The tensors of layer ``i`` (``layers.i.*``) and their logical shapes."""
    d, hd, h = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads
    inter = cfg.moe_intermediate_size
    hc = cfg.hc_mult
    mix = (2 + hc) * hc
    shapes: dict[str, tuple[int, ...]] = {}
    p = f"layers.{i}."
    shapes.update(
        {
            p + "attn_norm": (d,),
            p + "ffn_norm": (d,),
            p + "hc_attn.fn": (mix, hc * d),
            p + "hc_attn.base": (mix,),
            p + "hc_attn.scale": (3,),
            p + "hc_ffn.fn": (mix, hc * d),
            p + "hc_ffn.base": (mix,),
            p + "hc_ffn.scale": (3,),
            p + "attn.wq_a": (cfg.q_lora_rank, d),
            p + "attn.q_norm": (cfg.q_lora_rank,),
            p + "attn.wq_b": (h * hd, cfg.q_lora_rank),
            p + "attn.wkv": (hd, d),
            p + "attn.kv_norm": (hd,),
            p + "attn.wo_a": (cfg.o_groups * cfg.o_lora_rank, h * hd // cfg.o_groups),
            p + "attn.wo_b": (d, cfg.o_groups * cfg.o_lora_rank),
            p + "attn.sinks": (h,),
            p + "moe.gate": (cfg.n_routed_experts, d),
            p + "moe.experts.w1": (inter, d),
            p + "moe.experts.w3": (inter, d),
            p + "moe.experts.w2": (d, inter),
        }
    )
    if cfg.n_shared_experts:
        shapes.update(
            {
                p + "moe.shared.w1": (inter, d),
                p + "moe.shared.w3": (inter, d),
                p + "moe.shared.w2": (d, inter),
            }
        )
    if cfg.mlp_layer_types[i] == HASH_MOE:
        shapes[p + "moe.tid2eid"] = (cfg.vocab_size, cfg.num_experts_per_tok)
    else:
        shapes[p + "moe.bias"] = (cfg.n_routed_experts,)
    kind = cfg.layer_types[i]
    if kind in (CSA, HCA):
        ratio = cfg.compress_ratio(i)
        width = hd * (2 if kind == CSA else 1)
        shapes.update(
            {
                p + "attn.compressor.wkv": (width, d),
                p + "attn.compressor.wgate": (width, d),
                p + "attn.compressor.ape": (ratio, width),
                p + "attn.compressor.norm": (hd,),
            }
        )
    if kind == CSA:
        ihd, inh = cfg.index_head_dim, cfg.index_n_heads
        shapes.update(
            {
                p + "attn.indexer.wq_b": (inh * ihd, cfg.q_lora_rank),
                p + "attn.indexer.weights_proj": (inh, d),
                p + "attn.indexer.compressor.wkv": (2 * ihd, d),
                p + "attn.indexer.compressor.wgate": (2 * ihd, d),
                p + "attn.indexer.compressor.ape": (cfg.csa_ratio, 2 * ihd),
                p + "attn.indexer.compressor.norm": (ihd,),
            }
        )
    return shapes
