"""Random model weights built in memory with ``mx.random``, on the default device.

How the GPU benchmarks get full-size layers without writing (or reading) files:
every tensor is generated where it will live, in the storage format the engine
runs. Two ways to pick the formats:

* :class:`LegacyFormats` -- one format for the dense projections (``mxfp8`` or
  ``float``) and one for the routed experts (``mxfp4``, ``mxfp8`` or ``float``),
  head, embedding, compressor and indexer projections in the compute dtype;
* a :class:`~local_engine.checkpoint.recipes.Recipe` -- the exact layout
  ``engine convert --recipe`` gives the loader (affine codes with scales and
  biases in the compute dtype, mxfp8/mxfp4, bf16 or f32 per component), so
  ``Model.weight_bytes_per_token`` equals ``engine plan``'s bytes read a token.

Values are random codes with scales sized so activations stay O(1); only the
layout and the speed are of interest. Experts are generated a chunk at a time
(MLX's quantizer failed on single multi-GB tensors inside CUDA graph capture).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from local_engine.checkpoint.recipes import AFFINE, BF16, F32, Format, Recipe
from local_engine.model.config import CSA, HASH_MOE, HCA, ModelConfig

_EXPERT_CHUNK = 16


@dataclass(frozen=True)
class LegacyFormats:
    """The benchmarks' older choice: one dense format and one expert format."""

    dense: str = "mxfp8"  # mxfp8 | float
    experts: str = "mxfp4"  # mxfp4 | mxfp8 | float

    def format_for(self, component: str) -> Format | None:
        """None: a plain array in the compute dtype."""
        if component in ("routed_experts", "routed_experts_down"):
            return None if self.experts == "float" else Format(self.experts)
        if component in ("attention", "shared_experts", "indexer_wq_b"):
            return None if self.dense == "float" else Format(self.dense)
        return None


FormatSource = LegacyFormats | Recipe


def _format(source: FormatSource, component: str) -> Format | None:
    match source:
        case LegacyFormats():
            return source.format_for(component)
        case Recipe():
            # The indexer's wq_b and weights_proj share the recipe's "indexer" component.
            name = "indexer" if component == "indexer_wq_b" else component
            return source.format_for(name)


class _Generator:
    """Random tensors in a given storage format, from one seed (deterministic)."""

    def __init__(self, seed: int, dtype: mx.Dtype) -> None:
        self.seed = seed
        self.dtype = dtype
        self.counter = 0

    def key(self) -> mx.array:
        self.counter += 1
        return mx.random.key(self.seed * 1_000_003 + self.counter)

    def normal(self, shape: tuple[int, ...], std: float, dtype: mx.Dtype = mx.float32) -> mx.array:
        return (mx.random.normal(shape, key=self.key()) * std).astype(dtype)

    def small(self, n: int, center: float = 1.0, std: float = 0.1) -> mx.array:
        return center + self.normal((n,), std)

    def words(self, shape: tuple[int, ...]) -> mx.array:
        """Random uint32 words (two 16-bit draws: randint's range is int32)."""
        return mx.random.randint(0, 2**16, (2, *shape), dtype=mx.uint32, key=self.key()).astype(
            mx.uint32
        )

    def matrix(self, shape: tuple[int, ...], fmt: Format | None) -> Any:
        """A ``[..., out, in]`` weight with rows of RMS about ``1/sqrt(in)``."""
        from local_engine.model.weights import QuantizedWeight

        inp = shape[-1]
        target = 1.0 / math.sqrt(inp)
        if fmt is None or fmt.kind in (F32, BF16):
            dt = self.dtype if fmt is None else (mx.float32 if fmt.kind == F32 else mx.bfloat16)
            return self.normal(shape, target, dt)
        bits, group = fmt.bits, fmt.group_size
        assert bits is not None and group is not None
        *lead, out, _ = shape
        if fmt.kind == AFFINE:
            halves = self.words((*lead, out, inp * bits // 32))
            codes = halves[0] | (halves[1] << 16)
            levels = 2**bits
            # Codes uniform in [0, levels): std sqrt((levels^2 - 1) / 12), mean (levels - 1) / 2.
            step = target / math.sqrt((levels * levels - 1) / 12)
            gshape = (*lead, out, inp // group)
            scales = mx.full(gshape, step, dtype=self.dtype)
            biases = mx.full(gshape, -step * (levels - 1) / 2, dtype=self.dtype)
            return QuantizedWeight(codes, scales, biases, group, bits, AFFINE)
        return self._microscaled(tuple(lead), out, inp, fmt)

    def _microscaled(self, lead: tuple[int, ...], out: int, inp: int, fmt: Format) -> Any:
        from local_engine.model.weights import QuantizedWeight

        bits = 4 if fmt.kind == "mxfp4" else 8
        words = mx.random.randint(
            0, 2**16, (*lead, out, inp * bits // 16), dtype=mx.uint32, key=self.key()
        ).astype(mx.uint16)
        raw = words.view(mx.uint8)
        if bits == 8:
            nan = (raw & 0x7F) == 0x7F  # e4m3 NaN codes
            raw = mx.where(nan, raw ^ 1, raw)
        packed = raw.reshape(*lead, out, -1).view(mx.uint32)
        codes_rms = 2.93 if bits == 4 else 150.0
        exp = int(math.floor(math.log2(1.0 / math.sqrt(inp) / codes_rms)))
        scales = mx.full((*lead, out, inp // 32), 127 + exp, dtype=mx.uint8)
        return QuantizedWeight(packed, scales, None, 32, bits, fmt.kind)

    def experts(self, e: int, out: int, inp: int, fmt: Format | None) -> Any:
        """A stacked ``[E, out, in]`` expert matrix, generated a chunk of experts at a time."""
        from local_engine.model.weights import QuantizedWeight, dense_expert_stack

        if fmt is None or not fmt.quantized:
            return dense_expert_stack(self.matrix((e, out, inp), fmt))
        parts = []
        for s in range(0, e, _EXPERT_CHUNK):
            part = self.matrix((min(_EXPERT_CHUNK, e - s), out, inp), fmt)
            mx.eval(list(_leaves(part)))
            parts.append(part)
        biases = None if parts[0].biases is None else mx.concatenate([p.biases for p in parts])
        return QuantizedWeight(
            mx.concatenate([p.weight for p in parts]),
            mx.concatenate([p.scales for p in parts]),
            biases,
            parts[0].group_size,
            parts[0].bits,
            parts[0].mode,
        )


def random_weights(
    cfg: ModelConfig,
    seed: int = 0,
    *,
    dtype: Any = None,
    dense_format: str = "mxfp8",
    expert_format: str = "mxfp4",
    recipe: Recipe | None = None,
) -> Any:
    """Random :class:`~local_engine.model.transformer.ModelWeights` built with ``mx.random``.

    With ``recipe`` every component takes that recipe's format (the layout the
    loader builds from a converted checkpoint); otherwise ``dense_format``
    (``mxfp8`` or ``float``) and ``expert_format`` (``mxfp4``, ``mxfp8`` or
    ``float``) as :class:`LegacyFormats`.
    """
    from local_engine.model.hyper_connections import HyperHeadWeights
    from local_engine.model.transformer import ModelWeights

    source: FormatSource = recipe or LegacyFormats(dense_format, expert_format)
    gen = _Generator(seed, dtype or mx.float32)
    layers = []
    for i in range(cfg.num_hidden_layers):
        layers.append(_layer(cfg, i, gen, source))
        mx.eval(list(_leaves(layers[-1])))
    d, hc = cfg.hidden_size, cfg.hc_mult
    embed_fmt = _format(source, "embed")
    return ModelWeights(
        embed=gen.normal((cfg.vocab_size, d), 1.0, _float_dtype(embed_fmt, gen.dtype)),
        head=gen.matrix((cfg.vocab_size, d), _format(source, "head")),
        norm=gen.small(d),
        hc_head=HyperHeadWeights(
            gen.normal((hc, hc * d), 0.05), gen.normal((hc,), 0.5), gen.small(1)
        ),
        layers=tuple(layers),
    )


def _float_dtype(fmt: Format | None, default: mx.Dtype) -> mx.Dtype:
    if fmt is None:
        return default
    if fmt.kind == F32:
        return mx.float32
    if fmt.kind == BF16:
        return mx.bfloat16
    # A quantized embedding is looked up row by row; random benches keep it in bf16.
    return default


def _layer(cfg: ModelConfig, i: int, gen: _Generator, source: FormatSource) -> Any:
    from local_engine.model.attention import AttentionWeights, CompressorWeights, IndexerWeights
    from local_engine.model.hyper_connections import HyperWeights
    from local_engine.model.moe import MoEWeights
    from local_engine.model.transformer import LayerWeights
    from local_engine.model.weights import ExpertWeights, QuantizedWeight

    def fmt(component: str) -> Format | None:
        return _format(source, component)

    d, hd, h = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads
    inter, hc = cfg.moe_intermediate_size, cfg.hc_mult
    mix = (2 + hc) * hc
    kind = cfg.layer_types[i]

    def compressor(width: int, row: int, ratio: int) -> CompressorWeights:
        return CompressorWeights(
            gen.matrix((width, d), fmt("compressor")),
            gen.matrix((width, d), fmt("compressor")),
            gen.normal((ratio, width), 0.5),
            gen.small(row),
        )

    comp = indexer = None
    if kind in (CSA, HCA):
        comp = compressor(hd * (2 if kind == CSA else 1), hd, cfg.compress_ratio(i))
    if kind == CSA:
        ihd = cfg.index_head_dim
        indexer = IndexerWeights(
            gen.matrix((cfg.index_n_heads * ihd, cfg.q_lora_rank), fmt("indexer_wq_b")),
            gen.matrix((cfg.index_n_heads, d), fmt("indexer")),
            compressor(2 * ihd, ihd, cfg.csa_ratio),
        )
    wo_a = gen.matrix((cfg.o_groups * cfg.o_lora_rank, h * hd // cfg.o_groups), fmt("attention"))
    wo_a = (
        wo_a.reshape_leading(cfg.o_groups, cfg.o_lora_rank)
        if isinstance(wo_a, QuantizedWeight)
        else wo_a.reshape(cfg.o_groups, cfg.o_lora_rank, -1)
    )
    attn = AttentionWeights(
        wq_a=gen.matrix((cfg.q_lora_rank, d), fmt("attention")),
        q_norm=gen.small(cfg.q_lora_rank),
        wq_b=gen.matrix((h * hd, cfg.q_lora_rank), fmt("attention")),
        wkv=gen.matrix((hd, d), fmt("attention")),
        kv_norm=gen.small(hd),
        wo_a=wo_a,
        wo_b=gen.matrix((d, cfg.o_groups * cfg.o_lora_rank), fmt("attention")),
        sinks=gen.normal((h,), 1.0),
        compressor=comp,
        indexer=indexer,
    )
    e = cfg.n_routed_experts
    is_hash = cfg.mlp_layer_types[i] == HASH_MOE
    shared = cfg.n_shared_experts > 0
    moe = MoEWeights(
        gate=gen.normal((e, d), 1.0 / math.sqrt(d)),
        bias=None if is_hash else gen.normal((e,), 0.1),
        tid2eid=mx.array(_hash_table(cfg, gen.seed + i)) if is_hash else None,
        experts=ExpertWeights(
            gen.experts(e, 2 * inter, d, fmt("routed_experts")),
            gen.experts(e, d, inter, fmt("routed_experts_down")),
            e,
            inter,
            d,
        ),
        shared_gate_up=gen.matrix((2 * inter, d), fmt("shared_experts")) if shared else None,
        shared_down=gen.matrix((d, inter), fmt("shared_experts")) if shared else None,
    )
    return LayerWeights(
        attn_norm=gen.small(d),
        ffn_norm=gen.small(d),
        hc_attn=HyperWeights(
            gen.normal((mix, hc * d), 0.05), gen.normal((mix,), 0.5), gen.small(3)
        ),
        hc_ffn=HyperWeights(gen.normal((mix, hc * d), 0.05), gen.normal((mix,), 0.5), gen.small(3)),
        attn=attn,
        moe=moe,
    )


def _hash_table(cfg: ModelConfig, seed: int) -> np.ndarray:
    """A random ``tid2eid`` ``[vocab, k]`` with k distinct experts per token.

    Row r is ``(base_r + j * step_r) mod E`` for j < k with ``step_r`` coprime to E
    (so the k entries differ); cheap for the full vocabulary, unlike a per-row
    shuffle on the device (whose sort grid is too tall for 129280 rows on CUDA).
    """
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    rng = np.random.default_rng(seed)
    steps = np.array([s for s in range(1, e) if math.gcd(s, e) == 1] or [1])
    base = rng.integers(0, e, cfg.vocab_size)[:, None]
    step = rng.choice(steps, cfg.vocab_size)[:, None]
    return ((base + np.arange(k)[None, :] * step) % e).astype(np.int32)


def _leaves(obj: Any) -> Iterator[mx.array]:
    from local_engine.model.weights import QuantizedWeight, TransposedWeight

    if isinstance(obj, mx.array):
        yield obj
    elif isinstance(obj, QuantizedWeight):
        yield obj.weight
        yield obj.scales
        if obj.biases is not None:
            yield obj.biases
    elif isinstance(obj, TransposedWeight):
        yield obj.wt
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _leaves(getattr(obj, name))
