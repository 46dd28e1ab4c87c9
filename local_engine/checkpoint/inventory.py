"""A checkpoint's tensor inventory, checked against its config before a byte of weights is read.

Every tensor named in the shards' headers is indexed by its internal path
(:mod:`local_engine.checkpoint.names`) and checked: missing, unexpected, wrong shape or
wrong encoding (float, FP8 e4m3 + E8M0 scales, packed FP4, or an MLX-quantized tensor
of a converted checkpoint). The error names the file, the tensor and what was expected.
The loader and the converter both start from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from local_engine.checkpoint.names import ParsedName, expected_shapes, parse_name
from local_engine.checkpoint.official import MX_GROUP, check_mx_input_width
from local_engine.checkpoint.quantize import encoded_layout
from local_engine.checkpoint.recipes import Format
from local_engine.checkpoint.safetensors import TensorInfo
from local_engine.errors import CheckpointError
from local_engine.model.config import ModelConfig

FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
INT_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"}
SCALE_DTYPES = {"F8_E8M0", "U8", "F32"}


@dataclass(frozen=True)
class InventoryEntry:
    """One tensor of the checkpoint: where it is, and what its name says it is."""

    info: TensorInfo
    parsed: ParsedName


def where(info: TensorInfo) -> str:
    """The tensor's place, for error messages."""
    return f"{info.file.name}: tensor {info.name!r}"


class Inventory:
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
        self.mlx_parts: dict[tuple[str, str], InventoryEntry] = {}
        self.weights: dict[str, InventoryEntry] = {}
        self.scales: dict[str, InventoryEntry] = {}
        self.experts: dict[tuple[int, str, int], InventoryEntry] = {}
        self.expert_scales: dict[tuple[int, str, int], InventoryEntry] = {}
        shapes = expected_shapes(cfg)
        for info in infos:
            try:
                parsed = parse_name(info.name)
            except KeyError:
                raise CheckpointError(
                    f"{where(info)} is not part of a DeepSeek V4 checkpoint (unexpected name)"
                ) from None
            if parsed is None:
                continue
            if parsed.layer is not None and parsed.layer >= cfg.num_hidden_layers:
                raise CheckpointError(
                    f"{where(info)} belongs to layer {parsed.layer}, but config.json says"
                    f" num_hidden_layers={cfg.num_hidden_layers}"
                )
            entry = InventoryEntry(info, parsed)
            if parsed.part in ("scales", "biases"):
                if parsed.path not in self.quantized:
                    raise CheckpointError(
                        f"{where(info)} is an MLX quantization entry, but config.json's"
                        " 'quantization' section does not list its tensor; was config.json"
                        " replaced after `ds4router engine convert` wrote the directory?"
                    )
                self.mlx_parts[(parsed.path, parsed.part)] = entry
                continue
            if parsed.expert is not None:
                assert parsed.matrix is not None and parsed.layer is not None
                if parsed.expert >= cfg.n_routed_experts:
                    raise CheckpointError(
                        f"{where(info)}: expert {parsed.expert} is out of range (config has"
                        f" n_routed_experts={cfg.n_routed_experts})"
                    )
                key = (parsed.layer, parsed.matrix, parsed.expert)
                (self.expert_scales if parsed.is_scale else self.experts)[key] = entry
                continue
            if parsed.path not in shapes and not parsed.path.endswith(
                ("moe.experts.gate_up", "moe.experts.down")
            ):
                raise CheckpointError(
                    f"{where(info)} does not fit this config (no {parsed.path!r} in a"
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

    def _check_mlx(self, entry: InventoryEntry, shape: tuple[int, ...], fmt: Format) -> None:
        """An MLX-quantized tensor: codes, scales (and biases) as ``fmt`` lays them out."""
        path = entry.parsed.path
        for want in encoded_layout(fmt, shape, where=where(entry.info)):
            got = entry if want.suffix == "weight" else self.mlx_parts.get((path, want.suffix))
            if got is None:
                raise CheckpointError(
                    f"{where(entry.info)} is stored as {fmt.label} but its '.{want.suffix}'"
                    " tensor is missing (incomplete shard set?)"
                )
            if got.info.dtype != want.dtype or got.info.shape != want.shape:
                raise CheckpointError(
                    f"{where(got.info)} is {got.info.dtype} {list(got.info.shape)}; a"
                    f" {list(shape)} weight stored as {fmt.label} needs {want.dtype}"
                    f" {list(want.shape)} (config.json's quantization section disagrees with"
                    " the shards)"
                )

    def _check_one(
        self, entry: InventoryEntry, shape: tuple[int, ...], scale: InventoryEntry | None
    ) -> None:
        info = entry.info
        path = entry.parsed.path
        if path.endswith("tid2eid"):
            if info.dtype not in INT_DTYPES or info.shape != shape:
                raise CheckpointError(
                    f"{where(info)} is {info.dtype} {list(info.shape)}, expected an integer"
                    f" tensor of shape {list(shape)}"
                )
            return
        if info.dtype in FLOAT_DTYPES:
            if info.shape != shape:
                raise CheckpointError(
                    f"{where(info)} has shape {list(info.shape)}, expected {list(shape)}"
                )
            return
        # Quantized encodings need their scale and a layout that matches the shape.
        if scale is None:
            raise CheckpointError(
                f"{where(info)} is {info.dtype} but its '.scale' tensor is missing"
            )
        if scale.info.dtype not in SCALE_DTYPES:
            raise CheckpointError(
                f"{where(scale.info)} is {scale.info.dtype}; expected E8M0 (F8_E8M0 or U8)"
            )
        out, inp = shape[-2], shape[-1]
        if info.dtype == "F8_E4M3":
            if info.shape != shape:
                raise CheckpointError(
                    f"{where(info)} (FP8) has shape {list(info.shape)}, expected {list(shape)}"
                )
            check_mx_input_width(inp, where=where(info))
        elif info.dtype in ("I8", "U8"):
            if info.shape != (out, inp // 2):
                raise CheckpointError(
                    f"{where(info)} (packed FP4) has shape {list(info.shape)}, expected"
                    f" [{out}, {inp // 2}] for a [{out}, {inp}] weight"
                )
            check_mx_input_width(inp, where=where(info))
            if scale.info.shape != (out, inp // MX_GROUP):
                raise CheckpointError(
                    f"{where(scale.info)} has shape {list(scale.info.shape)}, expected"
                    f" [{out}, {inp // MX_GROUP}] (one E8M0 scale per 32 inputs)"
                )
        else:
            raise CheckpointError(
                f"{where(info)} has dtype {info.dtype}; expected a float, FP8 e4m3 or packed"
                " FP4 (int8) weight"
            )


def inventory(
    cfg: ModelConfig, infos: Iterable[TensorInfo], quantized: Mapping[str, Format] | None = None
) -> Inventory:
    """Index a checkpoint's tensors by internal path and check them against ``cfg``
    (missing, unexpected, wrong shape or encoding: the error names file and tensor)."""
    return Inventory(cfg, infos, quantized)
