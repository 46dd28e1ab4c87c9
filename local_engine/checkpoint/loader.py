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

from local_engine.checkpoint.assemble import assemble_weights, stack_experts
from local_engine.checkpoint.inventory import (
    FLOAT_DTYPES,
    Inventory,
    where,
)
from local_engine.checkpoint.names import parse_name
from local_engine.checkpoint.official import MX_GROUP, float_to_e8m0, fp8_scales_to_mx
from local_engine.checkpoint.quantize import quantized_paths
from local_engine.checkpoint.recipes import AFFINE, Format
from local_engine.checkpoint.safetensors import (
    Tensor,
    TensorInfo,
    list_shards,
    raw_to_mx,
    read_header,
    read_shard,
)
from local_engine.errors import CheckpointError
from local_engine.model.config import ModelConfig, config_from_file_dict, read_config_json
from local_engine.model.graph_options import GraphOptions
from local_engine.model.transformer import DEFAULT_PREFILL_CHUNK, Model
from local_engine.model.weights import ExpertWeights, QuantizedWeight, Weight, dense_expert_stack

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


def _as_mx(value: Tensor, dtype_name: str) -> mx.array:
    """A tensor as MLX holds its dtype: mx.load's arrays as they are, raw bytes decoded."""
    return value if isinstance(value, mx.array) else raw_to_mx(value, dtype_name)


def _raw_bytes(value: Tensor) -> np.ndarray:
    """A tensor's bytes as numpy, for the FP8/E8M0/FP4 decoding (no copy of a numpy one)."""
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _raw_to_mx(raw: Tensor, dtype_name: str, target: mx.Dtype) -> mx.array:
    return _as_mx(raw, dtype_name).astype(target)


class _Converter:
    """Turns raw tensors into MLX weights as shards stream by."""

    def __init__(self, cfg: ModelConfig, inv: Inventory, dtype: mx.Dtype) -> None:
        self.cfg = cfg
        self.inv = inv
        self.dtype = dtype
        self.params: dict[str, Any] = {}
        self._raw: dict[tuple[str, str], tuple[TensorInfo, Tensor]] = {}
        self._expert_raw: dict[tuple[int, str, int, bool], tuple[TensorInfo, Tensor]] = {}
        self._expert_done: dict[int, int] = {}

    def feed(self, info: TensorInfo, raw: Tensor) -> None:
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
        got = {part: self._raw.pop((path, part)) for part in parts}
        raw = {part: _as_mx(value, info.dtype) for part, (info, value) in got.items()}
        assert fmt.bits is not None and fmt.group_size is not None
        if fmt.kind == AFFINE:
            # Scales and biases in the activations' dtype (CPU kernels want them to match).
            scales = raw["scales"].astype(self.dtype)
            biases: mx.array | None = raw["biases"].astype(self.dtype)
        else:
            scales, biases = raw["scales"], None
        self.params[path] = QuantizedWeight(
            raw["weight"], scales, biases, fmt.group_size, fmt.bits, fmt.mode
        )

    def _dense(self, path: str, info: TensorInfo, raw: Tensor) -> mx.array:
        if path.endswith("tid2eid"):
            return _as_mx(raw, info.dtype).astype(mx.int32)
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
        self.params[f"layers.{layer}.moe.experts"] = stack_experts(cfg, layer, mats)

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
    info: TensorInfo, value: Tensor, sinfo: TensorInfo, svalue: Tensor
) -> QuantizedWeight:
    """An FP8 (e4m3 + 128x128 scales) or packed FP4 (+ per-32 scales) tensor as an MLX weight."""
    raw, sraw = _raw_bytes(value), _raw_bytes(svalue)
    place = where(sinfo)
    codes = float_to_e8m0(sraw, where=place) if sinfo.dtype == "F32" else sraw.view(np.uint8)
    if info.dtype == "F8_E4M3":
        out, inp = info.shape
        scales = fp8_scales_to_mx(codes, out, inp, where=place)
        packed = np.ascontiguousarray(raw.view(np.uint8)).view(np.uint32)
        return QuantizedWeight(mx.array(packed), mx.array(scales), None, MX_GROUP, 8, "mxfp8")
    packed = np.ascontiguousarray(raw.view(np.uint8)).view(np.uint32)
    return QuantizedWeight(
        mx.array(packed), mx.array(np.ascontiguousarray(codes)), None, MX_GROUP, 4, "mxfp4"
    )


TensorStream = Iterable[tuple[TensorInfo, Tensor]]


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
    inv = Inventory(cfg, infos, quantized)
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
    weights = assemble_weights(cfg, conv.params, conv.fused_experts)
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
    headers: dict[Path, dict[str, TensorInfo]] = {}
    seen: dict[str, Path] = {}
    for shard in shards:
        header, _ = read_header(shard)
        headers[shard] = header
        for name, info in header.items():
            if name in seen:
                raise CheckpointError(
                    f"tensor {name!r} appears in both {seen[name].name} and {shard.name}"
                )
            seen[name] = shard
            infos.append(info)

    return build_model(
        cfg,
        infos,
        (read_shard(s, headers[s]) for s in shards),
        dtype=_dtype_from_name(dtype),
        graph=graph,
        prefill_chunk_size=prefill_chunk_size,
        compile=compile,
        layout=layout,
        quantized=quantized,
        progress=progress,
    )
