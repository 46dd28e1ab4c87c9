"""Load a checkpoint directory (``config.json`` + ``*.safetensors``) into a :class:`Model`.

Accepts the names transformers' ``save_pretrained`` writes and the official
release's names and encodings (see :mod:`local_engine.checkpoint.names` and
:mod:`local_engine.checkpoint.official`). The loader first reads every shard's
header and checks the whole inventory against the config (missing, unexpected,
wrong shape or encoding: the error names the file, the tensor and what was
expected), then reads the shards one at a time, converting each tensor as it
arrives: FP8 and FP4 tensors become MLX ``mxfp8`` / ``mxfp4`` weights without
being dequantized, float tensors are cast to the compute dtype, and each
layer's experts are stacked as soon as the last of them has been read.

A directory written by ``ds4router engine convert`` (:mod:`local_engine.checkpoint.convert`)
lists its quantized tensors in ``config.json``'s ``quantization`` section; those
load as the same MLX layers the recipe made (``.weight`` codes + ``.scales`` +
``.biases``, affine scales cast to the compute dtype), experts already fused.

``load_model(..., progress=callback)`` reports how far it is as :class:`LoadProgress`
values: once before the first tensor, after every tensor read and converted, before each
shard's arrays are materialized, before the model is assembled, and once when it is done.
Totals come from the safetensors headers, so the figures are bytes of the files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import numpy as np

from local_engine.checkpoint.names import ParsedName, expected_shapes, parse_name
from local_engine.checkpoint.official import (
    MX_GROUP,
    check_mx_input_width,
    float_to_e8m0,
    fp8_scales_to_mx,
)
from local_engine.checkpoint.quantize import encoded_layout, quantized_paths
from local_engine.checkpoint.recipes import AFFINE, Format
from local_engine.checkpoint.safetensors import (
    SafetensorsFile,
    TensorInfo,
    list_shards,
    read_header,
)
from local_engine.errors import CheckpointError
from local_engine.model.attention import (
    AttentionWeights,
    CompressorWeights,
    IndexerWeights,
)
from local_engine.model.config import ModelConfig, config_from_file_dict, read_config_json
from local_engine.model.graph_options import GraphOptions
from local_engine.model.hyper_connections import HyperHeadWeights, HyperWeights
from local_engine.model.moe import MoEWeights
from local_engine.model.transformer import DEFAULT_PREFILL_CHUNK, LayerWeights, Model, ModelWeights
from local_engine.model.weights import (
    ExpertWeights,
    QuantizedWeight,
    Weight,
    dense_expert_stack,
)

FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
INT_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"}
SCALE_DTYPES = {"F8_E8M0", "U8", "F32"}

# Tensors kept in fp32 whatever the compute dtype (the reference keeps them fp32
# too; they are tiny and feed norms, softmaxes and the router's choice).
_FP32_SUFFIXES = (
    "norm",
    "sinks",
    "ape",
    "hc_attn.fn",
    "hc_attn.base",
    "hc_attn.scale",
    "hc_ffn.fn",
    "hc_ffn.base",
    "hc_ffn.scale",
    "moe.gate",
    "moe.bias",
)


LoadPhase = Literal["reading", "materializing", "assembling", "done"]


@dataclass(frozen=True)
class LoadProgress:
    """How far a load is, in bytes and tensors of the checkpoint's files.

    ``phase``: ``reading`` (tensors of shard ``shard_index`` are being read and converted),
    ``materializing`` (that shard's converted arrays are being computed, so its file's
    pages can go), ``assembling`` (every tensor is read; the model is put together and its
    final layout computed), ``done``. ``shard`` is the file name being read (the last one
    once reading is over); ``shard_index`` counts from 1.
    """

    phase: LoadPhase
    bytes_done: int
    bytes_total: int
    tensors_done: int
    tensors_total: int
    shard: str
    shard_index: int
    shards_total: int

    @property
    def fraction(self) -> float:
        """Share of the bytes read (of the tensors, when there are no bytes to count)."""
        if self.bytes_total > 0:
            return self.bytes_done / self.bytes_total
        if self.tensors_total > 0:
            return self.tensors_done / self.tensors_total
        return 1.0 if self.phase == "done" else 0.0

    @property
    def step(self) -> str:
        """A few words for a status line: ``shard 3/46``, ``assembling the model``."""
        if self.phase == "reading":
            return f"shard {self.shard_index}/{self.shards_total}"
        if self.phase == "materializing":
            return f"shard {self.shard_index}/{self.shards_total}, materializing"
        if self.phase == "assembling":
            return "assembling the model"
        return "done"


LoadCallback = Callable[[LoadProgress], None]


class _Progress:
    """Counts what ``build_model`` got through and tells ``callback`` (if any)."""

    def __init__(self, infos: Iterable[TensorInfo], callback: LoadCallback | None) -> None:
        self.callback = callback
        self.shards: dict[Path, int] = {}
        self.bytes_total = 0
        self.tensors_total = 0
        for info in infos:
            self.shards.setdefault(info.file, len(self.shards) + 1)
            self.bytes_total += info.end - info.start
            self.tensors_total += 1
        self.bytes_done = 0
        self.tensors_done = 0
        self.shard: Path | None = next(iter(self.shards), None)

    def report(self, phase: LoadPhase) -> None:
        if self.callback is None:
            return
        shard = self.shard
        self.callback(
            LoadProgress(
                phase=phase,
                bytes_done=self.bytes_done,
                bytes_total=self.bytes_total,
                tensors_done=self.tensors_done,
                tensors_total=self.tensors_total,
                shard="" if shard is None else shard.name,
                shard_index=0 if shard is None else self.shards.get(shard, 0),
                shards_total=len(self.shards),
            )
        )

    def tensor(self, info: TensorInfo) -> None:
        self.bytes_done += info.end - info.start
        self.tensors_done += 1
        self.shard = info.file
        self.report("reading")


@dataclass(frozen=True)
class _Entry:
    info: TensorInfo
    parsed: ParsedName


def _where(info: TensorInfo) -> str:
    return f"{info.file.name}: tensor {info.name!r}"


def _raw_to_mx(raw: np.ndarray, dtype_name: str, target: mx.Dtype) -> mx.array:
    if dtype_name == "BF16":
        return mx.array(raw).view(mx.bfloat16).astype(target)
    return mx.array(raw.astype(np.float32) if dtype_name == "F64" else raw).astype(target)


class _Inventory:
    """Every tensor of a checkpoint, indexed by internal path, checked against the config."""

    def __init__(
        self,
        cfg: ModelConfig,
        infos: Iterable[TensorInfo],
        quantized: Mapping[str, Format] | None = None,
    ) -> None:
        self.cfg = cfg
        # internal path -> recipe format, for MLX-quantized tensors of converted checkpoints
        self.quantized: Mapping[str, Format] = quantized or {}
        self.mlx_parts: dict[tuple[str, str], _Entry] = {}
        self.weights: dict[str, _Entry] = {}
        self.scales: dict[str, _Entry] = {}
        self.experts: dict[tuple[int, str, int], _Entry] = {}
        self.expert_scales: dict[tuple[int, str, int], _Entry] = {}
        shapes = expected_shapes(cfg)
        for info in infos:
            try:
                parsed = parse_name(info.name)
            except KeyError:
                raise CheckpointError(
                    f"{_where(info)} is not part of a DeepSeek V4 checkpoint (unexpected name)"
                ) from None
            if parsed is None:
                continue
            if parsed.layer is not None and parsed.layer >= cfg.num_hidden_layers:
                raise CheckpointError(
                    f"{_where(info)} belongs to layer {parsed.layer}, but config.json says"
                    f" num_hidden_layers={cfg.num_hidden_layers}"
                )
            entry = _Entry(info, parsed)
            if parsed.part in ("scales", "biases"):
                if parsed.path not in self.quantized:
                    raise CheckpointError(
                        f"{_where(info)} is an MLX quantization entry, but config.json's"
                        " 'quantization' section does not list its tensor; was config.json"
                        " replaced after `ds4router engine convert` wrote the directory?"
                    )
                self.mlx_parts[(parsed.path, parsed.part)] = entry
                continue
            if parsed.expert is not None:
                assert parsed.matrix is not None and parsed.layer is not None
                if parsed.expert >= cfg.n_routed_experts:
                    raise CheckpointError(
                        f"{_where(info)}: expert {parsed.expert} is out of range (config has"
                        f" n_routed_experts={cfg.n_routed_experts})"
                    )
                key = (parsed.layer, parsed.matrix, parsed.expert)
                (self.expert_scales if parsed.is_scale else self.experts)[key] = entry
                continue
            if parsed.path not in shapes and not parsed.path.endswith(
                ("moe.experts.gate_up", "moe.experts.down")
            ):
                raise CheckpointError(
                    f"{_where(info)} does not fit this config (no {parsed.path!r} in a"
                    f" {cfg.layer_types[parsed.layer] if parsed.layer is not None else ''}"
                    f" layer); check config.json's layer_types / compress_ratios"
                )
            (self.scales if parsed.is_scale else self.weights)[parsed.path] = entry
        self._check(shapes)

    def _check(self, shapes: dict[str, tuple[int, ...]]) -> None:
        cfg = self.cfg
        missing: list[str] = []
        for path, shape in shapes.items():
            if ".moe.experts." in path:
                continue
            entry = self.weights.get(path)
            if entry is None:
                if path == "head" and cfg.tie_word_embeddings:
                    continue
                missing.append(f"{path} {list(shape)}")
                continue
            if path in self.quantized:
                self._check_mlx(entry, shape, self.quantized[path])
            else:
                self._check_one(entry, shape, self.scales.get(path))
        for i in range(cfg.num_hidden_layers):
            fused = (
                f"layers.{i}.moe.experts.gate_up" in self.weights
                or f"layers.{i}.moe.experts.down" in self.weights
            )
            if fused:
                self._check_fused_experts(i)
                continue
            for matrix in ("w1", "w2", "w3"):
                shape = shapes[f"layers.{i}.moe.experts.{matrix}"]
                for e in range(cfg.n_routed_experts):
                    entry = self.experts.get((i, matrix, e))
                    if entry is None:
                        missing.append(f"layers.{i}.ffn.experts.{e}.{matrix}.weight {list(shape)}")
                        continue
                    self._check_one(entry, shape, self.expert_scales.get((i, matrix, e)))
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise CheckpointError(
                "checkpoint is missing tensors the config needs: " + ", ".join(missing[:5]) + more
            )

    def _check_fused_experts(self, i: int) -> None:
        cfg = self.cfg
        e, d, inter = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
        for path, shape in (
            (f"layers.{i}.moe.experts.gate_up", (e, 2 * inter, d)),
            (f"layers.{i}.moe.experts.down", (e, d, inter)),
        ):
            entry = self.weights.get(path)
            if entry is None:
                raise CheckpointError(f"checkpoint is missing {path} {list(shape)}")
            if path in self.quantized:
                self._check_mlx(entry, shape, self.quantized[path])
            else:
                self._check_one(entry, shape, None)

    def _check_mlx(self, entry: _Entry, shape: tuple[int, ...], fmt: Format) -> None:
        """An MLX-quantized tensor: codes, scales (and biases) as ``fmt`` lays them out."""
        path = entry.parsed.path
        for want in encoded_layout(fmt, shape, where=_where(entry.info)):
            got = entry if want.suffix == "weight" else self.mlx_parts.get((path, want.suffix))
            if got is None:
                raise CheckpointError(
                    f"{_where(entry.info)} is stored as {fmt.label} but its '.{want.suffix}'"
                    " tensor is missing (incomplete shard set?)"
                )
            if got.info.dtype != want.dtype or got.info.shape != want.shape:
                raise CheckpointError(
                    f"{_where(got.info)} is {got.info.dtype} {list(got.info.shape)}; a"
                    f" {list(shape)} weight stored as {fmt.label} needs {want.dtype}"
                    f" {list(want.shape)} (config.json's quantization section disagrees with"
                    " the shards)"
                )

    def _check_one(self, entry: _Entry, shape: tuple[int, ...], scale: _Entry | None) -> None:
        info = entry.info
        path = entry.parsed.path
        if path.endswith("tid2eid"):
            if info.dtype not in INT_DTYPES or info.shape != shape:
                raise CheckpointError(
                    f"{_where(info)} is {info.dtype} {list(info.shape)}, expected an integer"
                    f" tensor of shape {list(shape)}"
                )
            return
        if info.dtype in FLOAT_DTYPES:
            if info.shape != shape:
                raise CheckpointError(
                    f"{_where(info)} has shape {list(info.shape)}, expected {list(shape)}"
                )
            return
        # Quantized encodings need their scale and a layout that matches the shape.
        if scale is None:
            raise CheckpointError(
                f"{_where(info)} is {info.dtype} but its '.scale' tensor is missing"
            )
        if scale.info.dtype not in SCALE_DTYPES:
            raise CheckpointError(
                f"{_where(scale.info)} is {scale.info.dtype}; expected E8M0 (F8_E8M0 or U8)"
            )
        out, inp = shape[-2], shape[-1]
        if info.dtype == "F8_E4M3":
            if info.shape != shape:
                raise CheckpointError(
                    f"{_where(info)} (FP8) has shape {list(info.shape)}, expected {list(shape)}"
                )
            check_mx_input_width(inp, where=_where(info))
        elif info.dtype in ("I8", "U8"):
            if info.shape != (out, inp // 2):
                raise CheckpointError(
                    f"{_where(info)} (packed FP4) has shape {list(info.shape)}, expected"
                    f" [{out}, {inp // 2}] for a [{out}, {inp}] weight"
                )
            check_mx_input_width(inp, where=_where(info))
            if scale.info.shape != (out, inp // MX_GROUP):
                raise CheckpointError(
                    f"{_where(scale.info)} has shape {list(scale.info.shape)}, expected"
                    f" [{out}, {inp // MX_GROUP}] (one E8M0 scale per 32 inputs)"
                )
        else:
            raise CheckpointError(
                f"{_where(info)} has dtype {info.dtype}; expected a float, FP8 e4m3 or packed"
                " FP4 (int8) weight"
            )


def inventory(
    cfg: ModelConfig, infos: Iterable[TensorInfo], quantized: Mapping[str, Format] | None = None
) -> _Inventory:
    """Index a checkpoint's tensors by internal path and check them against ``cfg``
    (missing, unexpected, wrong shape or encoding: the error names file and tensor)."""
    return _Inventory(cfg, infos, quantized)


class _Converter:
    """Turns raw tensors into MLX weights as shards stream by."""

    def __init__(self, cfg: ModelConfig, inv: _Inventory, dtype: mx.Dtype) -> None:
        self.cfg = cfg
        self.inv = inv
        self.dtype = dtype
        self.params: dict[str, Any] = {}
        self._raw: dict[tuple[str, str], tuple[TensorInfo, np.ndarray]] = {}
        self._expert_raw: dict[tuple[int, str, int, bool], tuple[TensorInfo, np.ndarray]] = {}
        self._expert_done: dict[int, int] = {}

    def feed(self, info: TensorInfo, raw: np.ndarray) -> None:
        parsed = parse_name(info.name)
        if parsed is None:
            return
        if parsed.expert is not None:
            assert parsed.layer is not None and parsed.matrix is not None
            key = (parsed.layer, parsed.matrix, parsed.expert, parsed.is_scale)
            self._expert_raw[key] = (info, raw)
            self._maybe_stack_experts(parsed.layer)
            return
        self._raw[(parsed.path, parsed.part)] = (info, raw)
        self._maybe_convert(parsed.path)

    def _maybe_convert(self, path: str) -> None:
        fmt = self.inv.quantized.get(path)
        if fmt is not None:
            self._maybe_mlx(path, fmt)
            return
        weight = self._raw.get((path, "weight"))
        if weight is None:
            return
        info, raw = weight
        if info.dtype in FLOAT_DTYPES or path.endswith("tid2eid"):
            self.params[path] = self._dense(path, info, raw)
            del self._raw[(path, "weight")]
            return
        scale = self._raw.get((path, "scale"))
        if scale is None:
            return  # its scale is in a later shard
        self.params[path] = _quantized(info, raw, scale[0], scale[1])
        del self._raw[(path, "weight")], self._raw[(path, "scale")]

    def _maybe_mlx(self, path: str, fmt: Format) -> None:
        parts = ("weight", "scales", "biases") if fmt.kind == AFFINE else ("weight", "scales")
        if any((path, part) not in self._raw for part in parts):
            return  # the rest is in a later shard
        raw = {part: self._raw.pop((path, part))[1] for part in parts}
        assert fmt.bits is not None and fmt.group_size is not None
        if fmt.kind == AFFINE:
            # Scales and biases in the activations' dtype (CPU kernels want them to match).
            scales = mx.array(raw["scales"]).view(mx.bfloat16).astype(self.dtype)
            biases = mx.array(raw["biases"]).view(mx.bfloat16).astype(self.dtype)
        else:
            scales, biases = mx.array(raw["scales"]), None
        self.params[path] = QuantizedWeight(
            mx.array(raw["weight"]), scales, biases, fmt.group_size, fmt.bits, fmt.mode
        )

    def _dense(self, path: str, info: TensorInfo, raw: np.ndarray) -> mx.array:
        if path.endswith("tid2eid"):
            return mx.array(raw.astype(np.int32))
        keep32 = path.endswith(_FP32_SUFFIXES) or path.startswith("hc_head.")
        return _raw_to_mx(raw, info.dtype, mx.float32 if keep32 else self.dtype)

    def _maybe_stack_experts(self, layer: int) -> None:
        cfg = self.cfg
        needed = []
        for matrix in ("w1", "w2", "w3"):
            for e in range(cfg.n_routed_experts):
                key = (layer, matrix, e)
                needed.append((key, False))
                entry = self.inv.experts[key]
                if entry.info.dtype not in FLOAT_DTYPES:
                    needed.append((key, True))
        if any((*k, s) not in self._expert_raw for k, s in needed):
            return
        mats: dict[str, list[Weight]] = {"w1": [], "w2": [], "w3": []}
        for matrix in ("w1", "w2", "w3"):
            for e in range(cfg.n_routed_experts):
                info, raw = self._expert_raw.pop((layer, matrix, e, False))
                if info.dtype in FLOAT_DTYPES:
                    mats[matrix].append(_raw_to_mx(raw, info.dtype, self.dtype))
                else:
                    sinfo, sraw = self._expert_raw.pop((layer, matrix, e, True))
                    mats[matrix].append(_quantized(info, raw, sinfo, sraw))
        self.params[f"layers.{layer}.moe.experts"] = _stack_experts(cfg, layer, mats)

    def fused_experts(self, layer: int) -> ExpertWeights | None:
        gu = self.params.pop(f"layers.{layer}.moe.experts.gate_up", None)
        down = self.params.pop(f"layers.{layer}.moe.experts.down", None)
        if gu is None or down is None:
            return None
        cfg = self.cfg
        if isinstance(gu, QuantizedWeight) or isinstance(down, QuantizedWeight):
            if not (isinstance(gu, QuantizedWeight) and isinstance(down, QuantizedWeight)):
                raise CheckpointError(
                    f"layer {layer}: fused experts mix quantized and float weights"
                )
            return ExpertWeights(
                gu, down, cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.hidden_size
            )
        return ExpertWeights(
            dense_expert_stack(gu),
            dense_expert_stack(down),
            cfg.n_routed_experts,
            cfg.moe_intermediate_size,
            cfg.hidden_size,
        )


def _quantized(
    info: TensorInfo, raw: np.ndarray, sinfo: TensorInfo, sraw: np.ndarray
) -> QuantizedWeight:
    """An FP8 (e4m3 + 128x128 scales) or packed FP4 (+ per-32 scales) tensor as an MLX weight."""
    where = _where(sinfo)
    codes = float_to_e8m0(sraw, where=where) if sinfo.dtype == "F32" else sraw.view(np.uint8)
    if info.dtype == "F8_E4M3":
        out, inp = info.shape
        scales = fp8_scales_to_mx(codes, out, inp, where=where)
        packed = np.ascontiguousarray(raw.view(np.uint8)).view(np.uint32)
        return QuantizedWeight(mx.array(packed), mx.array(scales), None, MX_GROUP, 8, "mxfp8")
    packed = np.ascontiguousarray(raw.view(np.uint8)).view(np.uint32)
    return QuantizedWeight(
        mx.array(packed), mx.array(np.ascontiguousarray(codes)), None, MX_GROUP, 4, "mxfp4"
    )


def _stack_experts(cfg: ModelConfig, layer: int, mats: dict[str, list[Weight]]) -> ExpertWeights:
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


def _assemble(cfg: ModelConfig, conv: _Converter) -> ModelWeights:
    p = conv.params

    def take(path: str) -> Any:
        if path not in p:
            raise CheckpointError(f"checkpoint did not provide {path!r} (incomplete shard set?)")
        return p[path]

    def opt(path: str) -> Any:
        return p.get(path)

    def compressor(prefix: str) -> CompressorWeights:
        return CompressorWeights(
            take(prefix + ".wkv"),
            take(prefix + ".wgate"),
            take(prefix + ".ape").astype(mx.float32),
            take(prefix + ".norm"),
        )

    layers = []
    for i in range(cfg.num_hidden_layers):
        q = f"layers.{i}."
        wo_a = take(q + "attn.wo_a")
        groups = cfg.o_groups
        if isinstance(wo_a, QuantizedWeight):
            wo_a = wo_a.reshape_leading(groups, cfg.o_lora_rank)
        else:
            wo_a = wo_a.reshape(groups, cfg.o_lora_rank, -1)
        comp = (
            compressor(q + "attn.compressor")
            if opt(q + "attn.compressor.wkv") is not None
            else None
        )
        indexer = None
        if opt(q + "attn.indexer.wq_b") is not None:
            indexer = IndexerWeights(
                take(q + "attn.indexer.wq_b"),
                take(q + "attn.indexer.weights_proj"),
                compressor(q + "attn.indexer.compressor"),
            )
        attn = AttentionWeights(
            wq_a=take(q + "attn.wq_a"),
            q_norm=take(q + "attn.q_norm"),
            wq_b=take(q + "attn.wq_b"),
            wkv=take(q + "attn.wkv"),
            kv_norm=take(q + "attn.kv_norm"),
            wo_a=wo_a,
            wo_b=take(q + "attn.wo_b"),
            sinks=take(q + "attn.sinks").astype(mx.float32),
            compressor=comp,
            indexer=indexer,
        )
        experts = p.get(q + "moe.experts") or conv.fused_experts(i)
        if experts is None:
            raise CheckpointError(f"checkpoint did not provide all experts of layer {i}")
        shared_gate_up = shared_down = None
        if cfg.n_shared_experts:
            shared_gate_up = _concat_rows(take(q + "moe.shared.w1"), take(q + "moe.shared.w3"))
            shared_down = take(q + "moe.shared.w2")
        moe = MoEWeights(
            gate=take(q + "moe.gate"),
            bias=opt(q + "moe.bias"),
            tid2eid=opt(q + "moe.tid2eid"),
            experts=experts,
            shared_gate_up=shared_gate_up,
            shared_down=shared_down,
        )
        layers.append(
            LayerWeights(
                attn_norm=take(q + "attn_norm"),
                ffn_norm=take(q + "ffn_norm"),
                hc_attn=HyperWeights(
                    take(q + "hc_attn.fn"), take(q + "hc_attn.base"), take(q + "hc_attn.scale")
                ),
                hc_ffn=HyperWeights(
                    take(q + "hc_ffn.fn"), take(q + "hc_ffn.base"), take(q + "hc_ffn.scale")
                ),
                attn=attn,
                moe=moe,
            )
        )
    embed = take("embed")
    head = embed if cfg.tie_word_embeddings else take("head")
    return ModelWeights(
        embed=embed,
        head=head,
        norm=take("norm"),
        hc_head=HyperHeadWeights(
            take("hc_head.fn").astype(mx.float32),
            take("hc_head.base").astype(mx.float32),
            take("hc_head.scale").astype(mx.float32),
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


TensorStream = Iterable[tuple[TensorInfo, np.ndarray]]


def build_model(
    cfg: ModelConfig,
    infos: Iterable[TensorInfo],
    groups: Iterable[TensorStream],
    *,
    dtype: mx.Dtype = mx.float32,
    graph: GraphOptions | None = None,
    prefill_chunk_size: int = DEFAULT_PREFILL_CHUNK,
    compile: bool | str | None = None,
    layout: str = "auto",
    quantized: Mapping[str, Format] | None = None,
    progress: LoadCallback | None = None,
) -> Model:
    """Check ``infos`` against ``cfg``, then convert tensors group by group (shard by shard).

    ``quantized`` maps internal paths to the recipe format of a converted checkpoint's
    MLX-quantized tensors (:func:`local_engine.checkpoint.quantize.quantized_paths`). ``progress``
    gets a :class:`LoadProgress` per tensor and per step (on this thread; keep it cheap;
    an exception it raises ends the load); its totals are those of ``infos``.
    """
    infos = list(infos)
    inv = _Inventory(cfg, infos, quantized)
    conv = _Converter(cfg, inv, dtype)
    counter = _Progress(infos, progress)
    counter.report("reading")
    for group in groups:
        for info, raw in group:
            conv.feed(info, raw)
            counter.tensor(info)
        counter.report("materializing")
        # Evaluate what this shard produced so its numpy buffers can be freed.
        mx.eval([a for a in _arrays(conv.params)])
    counter.report("assembling")
    weights = _assemble(cfg, conv)
    model = Model(
        cfg,
        weights,
        dtype=dtype,
        graph=graph,
        prefill_chunk_size=prefill_chunk_size,
        compile=compile,
        layout=layout,
    )
    counter.report("done")
    return model


def _arrays(params: Mapping[str, Any]) -> Iterator[mx.array]:
    for v in params.values():
        if isinstance(v, mx.array):
            yield v
        elif isinstance(v, QuantizedWeight):
            yield from _quantized_arrays(v)
        elif isinstance(v, ExpertWeights):
            for w in (v.gate_up, v.down):
                if isinstance(w, QuantizedWeight):
                    yield from _quantized_arrays(w)
                elif isinstance(w, mx.array):
                    yield w


def _quantized_arrays(w: QuantizedWeight) -> Iterator[mx.array]:
    yield w.weight
    yield w.scales
    if w.biases is not None:
        yield w.biases


def _dtype_from_name(name: str | mx.Dtype | None) -> mx.Dtype:
    if name is None:
        return mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16
    if isinstance(name, mx.Dtype):
        return name
    table = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
    if name not in table:
        raise CheckpointError(f"dtype {name!r} is not supported; use one of {sorted(table)}")
    return table[name]


def load_model(
    path: str | Path,
    *,
    dtype: str | mx.Dtype | None = None,
    graph: GraphOptions | None = None,
    prefill_chunk_size: int = DEFAULT_PREFILL_CHUNK,
    compile: bool | str | None = None,
    layout: str = "auto",
    progress: LoadCallback | None = None,
) -> Model:
    """Load ``path`` (a directory with ``config.json`` and ``*.safetensors``).

    ``dtype`` is the compute dtype (default float32 on CPU, bfloat16 on GPU);
    ``graph`` turns on the official-graph round-trips (off by default);
    ``compile`` (default: every call on GPU, ``"decode"`` steps only on CPU) and
    ``layout`` (``auto``, ``cpu``: dense projections stored transposed, ``gpu``: as
    in the file) tune speed only.
    ``progress`` is called with a :class:`LoadProgress` as the load goes (see
    :func:`build_model`), from the first tensor to ``done``.
    """
    model_dir = Path(path).expanduser()
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir} is not a directory (expected a model directory)")
    raw = read_config_json(model_dir)  # read once: the config and its quantization section
    cfg = config_from_file_dict(raw, model_dir)
    quantized = quantized_paths(raw)
    shards = list_shards(model_dir)
    infos: list[TensorInfo] = []
    seen: dict[str, Path] = {}
    for shard in shards:
        header, _ = read_header(shard)
        for name, info in header.items():
            if name in seen:
                raise CheckpointError(
                    f"tensor {name!r} appears in both {seen[name].name} and {shard.name}"
                )
            seen[name] = shard
            infos.append(info)

    def shard_stream(shard: Path) -> TensorStream:
        with SafetensorsFile(shard) as f:
            for name, info in f.infos.items():
                yield info, f.read(name)

    return build_model(
        cfg,
        infos,
        (shard_stream(s) for s in shards),
        dtype=_dtype_from_name(dtype),
        graph=graph,
        prefill_chunk_size=prefill_chunk_size,
        compile=compile,
        layout=layout,
        quantized=quantized,
        progress=progress,
    )
