"""Random DeepSeek V4 checkpoints in the official release's layout, for tests and benchmarks.

:func:`write_random_checkpoint` writes ``config.json`` (official spelling, with
``ds4router_random_weights`` set so ``engine info`` can say the weights are
noise) and ``*.safetensors`` shards with the official names and encodings:
FP8 e4m3 + 128x128 E8M0 scales for the attention projections, the indexer's
``wq_b`` and the shared experts; packed FP4 e2m1 + per-32 E8M0 scales for the
routed experts; BF16 (or ``dtype``) for embeddings, head, router, compressor
and indexer projections and norms; F32 for sinks, mHC parameters and position
biases. Every preset uses the real vocabulary size (129280), so the real
tokenizer's ids, special tokens included, are valid inputs.

:func:`dequantize_checkpoint` writes the float twin of such a checkpoint (same
values, FP8/FP4 decoded exactly), which parity tests load side by side.

In-memory random weights, built on the device in the formats the engine runs
(a recipe's exact layout included), are in :mod:`local_engine.checkpoint.random_device`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.checkpoint.official import (
    dequantize_fp4_rows,
    dequantize_fp8_blocks,
    quantize_fp4_rows,
    quantize_fp8_blocks,
)
from local_engine.checkpoint.safetensors import iter_tensors, list_shards, write_safetensors
from local_engine.errors import EngineError
from local_engine.model.config import (
    CSA,
    HASH_MOE,
    HCA,
    RANDOM_MARKER_KEY,
    ModelConfig,
    config_from_dict,
)

VOCAB = 129280

_FLASH = {
    "vocab_size": VOCAB,
    "hidden_size": 4096,
    "moe_intermediate_size": 2048,
    "num_attention_heads": 64,
    "num_key_value_heads": 1,
    "head_dim": 512,
    "qk_rope_head_dim": 64,
    "q_lora_rank": 1024,
    "o_groups": 8,
    "o_lora_rank": 1024,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 6,
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 512,
    "sliding_window": 128,
}

# name -> (overrides of the Flash sizes, default number of layers)
PRESETS: dict[str, tuple[dict[str, Any], int]] = {
    "tiny": (
        {
            "hidden_size": 128,
            "moe_intermediate_size": 64,
            "num_attention_heads": 4,
            "head_dim": 64,
            "qk_rope_head_dim": 16,
            "q_lora_rank": 64,
            "o_groups": 2,
            "o_lora_rank": 64,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "index_n_heads": 4,
            "index_head_dim": 32,
            "index_topk": 16,
        },
        4,
    ),
    "small": (
        {
            "hidden_size": 512,
            "moe_intermediate_size": 256,
            "num_attention_heads": 8,
            "head_dim": 128,
            "qk_rope_head_dim": 32,
            "q_lora_rank": 256,
            "o_groups": 4,
            "o_lora_rank": 128,
            "n_routed_experts": 16,
            "num_experts_per_tok": 4,
            "index_n_heads": 8,
            "index_head_dim": 64,
            "index_topk": 64,
        },
        8,
    ),
    "full-layer": ({}, 1),
}

_FLOAT_NAMES = {"float32": "F32", "bfloat16": "BF16"}


def flash_compress_ratios(num_layers: int) -> list[int]:
    """Flash's schedule truncated to ``num_layers``: 2 sliding, then CSA/HCA alternating."""
    return [0 if i < 2 else (4 if i % 2 == 0 else 128) for i in range(num_layers)]


def official_config(
    preset: str = "tiny", *, num_layers: int | None = None, seed: int = 0, **overrides: Any
) -> dict[str, Any]:
    """The official-style ``config.json`` dict of a preset (marked as random weights)."""
    if preset not in PRESETS:
        raise EngineError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    sizes, default_layers = PRESETS[preset]
    n = num_layers or default_layers
    if n < 1:
        raise EngineError(f"num_layers must be at least 1, got {n}")
    ratios = flash_compress_ratios(n)
    if preset == "tiny":
        # Cover every layer type in few layers: sliding, CSA, HCA, CSA...
        ratios = [0] + [4 if i % 2 else 128 for i in range(1, n)]
    cfg: dict[str, Any] = {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        **_FLASH,
        **sizes,
        "num_hidden_layers": n,
        "compress_ratios": ratios + [0],  # trailing entry: the MTP block, as released
        "num_hash_layers": min(3, max(1, n // 2)) if n > 1 else 1,
        "scoring_func": "sqrtsoftplus",
        "routed_scaling_factor": 1.5,
        "norm_topk_prob": True,
        "swiglu_limit": 10.0,
        "hc_mult": 4,
        "hc_sinkhorn_iters": 20,
        "hc_eps": 1e-6,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "compress_rope_theta": 160000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 16,
            "original_max_position_embeddings": 65536,
            "beta_fast": 32,
            "beta_slow": 1,
        },
        "max_position_embeddings": 1048576,
        "num_nextn_predict_layers": 1,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "scale_fmt": "ue8m0",
            "weight_block_size": [128, 128],
        },
        "expert_dtype": "fp4",
        RANDOM_MARKER_KEY: {"preset": preset, "seed": seed, "writer": "local_engine"},
    }
    cfg.update(overrides)
    return cfg


# -- numpy tensor generation (official names and encodings) -------------------------
def _float_tensor(arr: np.ndarray, dtype: str) -> tuple[str, np.ndarray]:
    arr = arr.astype(np.float32)
    if dtype == "F32":
        return "F32", arr
    # bf16 by truncation-with-rounding of the fp32 bit pattern.
    bits = arr.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return "BF16", rounded


def bf16_to_float(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class _Draws:
    """Random tensors from one generator, in the order they are asked for (the seed's meaning)."""

    def __init__(self, seed: int, dtype: str, quantized: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.fdt = _FLOAT_NAMES[dtype]
        self.quantized = quantized

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        return (self.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def linear(self, shape: tuple[int, int]) -> np.ndarray:
        return self.normal(shape, 1.0 / math.sqrt(shape[1]))

    def packed_or_float(
        self, name: str, shape: tuple[int, int], fp4: bool
    ) -> Iterator[tuple[str, str, np.ndarray]]:
        """FP4 (experts) or FP8 (projections) as the release stores them, else float."""
        w = self.linear(shape)
        if not self.quantized:
            yield (f"{name}.weight", *_float_tensor(w, self.fdt))
            return
        codes, scales = quantize_fp4_rows(w) if fp4 else quantize_fp8_blocks(w)
        yield f"{name}.weight", ("I8" if fp4 else "F8_E4M3"), codes
        yield f"{name}.scale", "F8_E8M0", scales

    def fp8(self, name: str, shape: tuple[int, int]) -> Iterator[tuple[str, str, np.ndarray]]:
        return self.packed_or_float(name, shape, fp4=False)

    def fp4(self, name: str, shape: tuple[int, int]) -> Iterator[tuple[str, str, np.ndarray]]:
        return self.packed_or_float(name, shape, fp4=True)

    def flt(self, name: str, arr: np.ndarray) -> tuple[str, str, np.ndarray]:
        return (name, *_float_tensor(arr, self.fdt))

    def norm(self, name: str, n: int) -> tuple[str, str, np.ndarray]:
        return self.flt(name, 1.0 + self.normal((n,), 0.1))


def official_tensors(
    cfg: ModelConfig, seed: int = 0, *, dtype: str = "bfloat16", quantized: bool = True
) -> Iterator[tuple[str, str, np.ndarray]]:
    """Yield ``(name, safetensors dtype, raw array)`` of a random checkpoint, layer by layer."""
    r = _Draws(seed, dtype, quantized)
    d, hc = cfg.hidden_size, cfg.hc_mult
    yield r.flt("embed.weight", r.normal((cfg.vocab_size, d), 1.0))
    for i in range(cfg.num_hidden_layers):
        yield from _attention_tensors(cfg, i, r)
        yield from _ffn_tensors(cfg, i, r)
    yield r.norm("norm.weight", d)
    yield "hc_head_fn", "F32", r.normal((hc, hc * d), 0.05)
    yield "hc_head_base", "F32", r.normal((hc,), 0.5)
    yield "hc_head_scale", "F32", 1.0 + r.normal((1,), 0.1)
    yield r.flt("head.weight", r.linear((cfg.vocab_size, d)))


def _attention_tensors(
    cfg: ModelConfig, i: int, r: _Draws
) -> Iterator[tuple[str, str, np.ndarray]]:
    """Layer ``i``'s norms, mHC weights and attention (compressor and indexer where it has them)."""
    d, hd, h = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads
    hc = cfg.hc_mult
    mix = (2 + hc) * hc
    p = f"layers.{i}."
    yield r.norm(p + "attn_norm.weight", d)
    yield r.norm(p + "ffn_norm.weight", d)
    for site in ("attn", "ffn"):
        yield p + f"hc_{site}_fn", "F32", r.normal((mix, hc * d), 0.05)
        yield p + f"hc_{site}_base", "F32", r.normal((mix,), 0.5)
        yield p + f"hc_{site}_scale", "F32", 1.0 + r.normal((3,), 0.1)
    yield from r.fp8(p + "attn.wq_a", (cfg.q_lora_rank, d))
    yield r.norm(p + "attn.q_norm.weight", cfg.q_lora_rank)
    yield from r.fp8(p + "attn.wq_b", (h * hd, cfg.q_lora_rank))
    yield from r.fp8(p + "attn.wkv", (hd, d))
    yield r.norm(p + "attn.kv_norm.weight", hd)
    yield from r.fp8(p + "attn.wo_a", (cfg.o_groups * cfg.o_lora_rank, h * hd // cfg.o_groups))
    yield from r.fp8(p + "attn.wo_b", (d, cfg.o_groups * cfg.o_lora_rank))
    yield p + "attn.attn_sink", "F32", r.normal((h,), 1.0)
    kind = cfg.layer_types[i]
    if kind in (CSA, HCA):
        width = hd * (2 if kind == CSA else 1)
        c = p + "attn.compressor."
        yield r.flt(c + "wkv.weight", r.linear((width, d)))
        yield r.flt(c + "wgate.weight", r.linear((width, d)))
        yield c + "ape", "F32", r.normal((cfg.compress_ratio(i), width), 0.5)
        yield r.norm(c + "norm.weight", hd)
    if kind == CSA:
        ihd = cfg.index_head_dim
        x = p + "attn.indexer."
        yield from r.fp8(x + "wq_b", (cfg.index_n_heads * ihd, cfg.q_lora_rank))
        yield r.flt(x + "weights_proj.weight", r.linear((cfg.index_n_heads, d)))
        yield r.flt(x + "compressor.wkv.weight", r.linear((2 * ihd, d)))
        yield r.flt(x + "compressor.wgate.weight", r.linear((2 * ihd, d)))
        yield x + "compressor.ape", "F32", r.normal((cfg.csa_ratio, 2 * ihd), 0.5)
        yield r.norm(x + "compressor.norm.weight", ihd)


def _ffn_tensors(cfg: ModelConfig, i: int, r: _Draws) -> Iterator[tuple[str, str, np.ndarray]]:
    """Layer ``i``'s MoE: the gate (bias or hash table), routed and shared experts."""
    d, inter = cfg.hidden_size, cfg.moe_intermediate_size
    f = f"layers.{i}.ffn."
    yield r.flt(f + "gate.weight", r.linear((cfg.n_routed_experts, d)))
    if cfg.mlp_layer_types[i] == HASH_MOE:
        table = np.argsort(
            r.rng.random((cfg.vocab_size, cfg.n_routed_experts), dtype=np.float32), axis=1
        )[:, : cfg.num_experts_per_tok]
        yield f + "gate.tid2eid", "I32", table.astype(np.int32)
    else:
        yield f + "gate.bias", "F32", r.normal((cfg.n_routed_experts,), 0.1)
    for e in range(cfg.n_routed_experts):
        yield from r.fp4(f + f"experts.{e}.w1", (inter, d))
        yield from r.fp4(f + f"experts.{e}.w2", (d, inter))
        yield from r.fp4(f + f"experts.{e}.w3", (inter, d))
    if cfg.n_shared_experts:
        yield from r.fp8(f + "shared_experts.w1", (inter, d))
        yield from r.fp8(f + "shared_experts.w2", (d, inter))
        yield from r.fp8(f + "shared_experts.w3", (inter, d))


def _write_shards(
    out_dir: Path,
    tensors: Iterator[tuple[str, str, np.ndarray]],
    shard_bytes: int,
) -> list[Path]:
    shards: list[dict[str, tuple[str, np.ndarray]]] = [{}]
    size = 0
    for name, dt, arr in tensors:
        if size and size + arr.nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = (dt, arr)
        size += arr.nbytes
    paths = []
    total = len(shards)
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards, start=1):
        path = out_dir / f"model-{k:05d}-of-{total:05d}.safetensors"
        write_safetensors(path, shard, {"format": "pt"})
        weight_map.update({name: path.name for name in shard})
        paths.append(path)
    index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return paths


def write_random_checkpoint(
    out_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    dtype: str = "bfloat16",
    quantized: bool = True,
    num_layers: int | None = None,
    shard_bytes: int = 2 << 30,
    **config_overrides: Any,
) -> Path:
    """Write a random official-layout checkpoint (``config.json`` + shards) to ``out_dir``.

    ``preset``: ``tiny`` (hidden 128, 4 layers covering sliding/CSA/HCA and hash/
    scored MoE), ``small`` (hidden 512, 8 layers) or ``full-layer`` (Flash's
    real layer sizes, 1 layer unless ``num_layers``). ``dtype`` is the float
    format of unquantized tensors; ``quantized=False`` writes every matrix in it
    instead of FP8/FP4.
    """
    if dtype not in _FLOAT_NAMES:
        raise EngineError(f"dtype must be one of {sorted(_FLOAT_NAMES)}, got {dtype!r}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    raw_cfg = official_config(preset, num_layers=num_layers, seed=seed, **config_overrides)
    raw_cfg[RANDOM_MARKER_KEY] = {**raw_cfg[RANDOM_MARKER_KEY], "quantized": quantized}
    raw_cfg["torch_dtype"] = dtype
    if not quantized:
        raw_cfg.pop("quantization_config", None)
        raw_cfg.pop("expert_dtype", None)
    cfg = config_from_dict(raw_cfg)
    (out / "config.json").write_text(json.dumps(raw_cfg, indent=2) + "\n")
    _write_shards(out, official_tensors(cfg, seed, dtype=dtype, quantized=quantized), shard_bytes)
    return out


def dequantize_checkpoint(src: str | Path, dst: str | Path, *, shard_bytes: int = 2 << 30) -> Path:
    """Write the float32 twin of an official-layout checkpoint: same names, FP8/FP4 decoded."""
    src_dir, out = Path(src), Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    raw_cfg = json.loads((src_dir / "config.json").read_text())
    raw_cfg.pop("quantization_config", None)
    raw_cfg.pop("expert_dtype", None)
    raw_cfg["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(raw_cfg, indent=2) + "\n")

    def decoded() -> Iterator[tuple[str, str, np.ndarray]]:
        pending: dict[str, tuple[str, np.ndarray]] = {}
        for shard in list_shards(src_dir):
            for info, raw in iter_tensors(shard):
                pending[info.name] = (info.dtype, raw)
        for name in sorted(pending):
            dt, raw = pending[name]
            if name.endswith(".scale"):
                continue
            scale = pending.get(name.removesuffix(".weight") + ".scale")
            if dt == "F8_E4M3" and scale is not None:
                yield name, "F32", dequantize_fp8_blocks(raw, scale[1])
            elif dt == "I8" and scale is not None:
                yield name, "F32", dequantize_fp4_rows(raw, scale[1])
            elif dt == "BF16":
                yield name, "F32", bf16_to_float(raw)
            else:
                yield name, dt, raw

    _write_shards(out, decoded(), shard_bytes)
    return out


def preset_config(preset: str, *, num_layers: int | None = None, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a preset (no files written)."""
    return config_from_dict(official_config(preset, num_layers=num_layers, **overrides))
