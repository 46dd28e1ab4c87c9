"""The memory plan of a model under a recipe: weight bytes, bytes read per token, KV, fit.

Everything here is arithmetic on the config and the recipe -- no weights, no
mlx -- so ``ds4router engine plan --preset deepseek-v4-flash --recipe q2``
answers in a blink for the 284 B-parameter model. The formulas are the
storage formats' own (affine: ``bits`` per weight + a bf16 scale and bias per
group; mxfp8/mxfp4: + one E8M0 byte per 32; bf16, f32), written independently
of the converter, and checked against it: the bytes ``engine convert`` writes
and the bytes the loaded model holds match the plan exactly on scaled configs
(tests) and within 1 % on a full-size layer (``bench/quant_plan.py``).

* ``total_weight_bytes``: tensor bytes in the converted shards (what the
  converter writes; the MTP block, which the engine does not run, is left out).
* ``resident_weight_bytes``: what the loaded model holds at bf16 compute (the
  Mac's): the loader keeps the router, norms, sinks, mHC and position biases in
  f32 and affine scales in the compute dtype.
* ``bytes_read_per_token``: resident bytes one decoded token reads: one
  embedding row, one hash-table row per hash layer, ``k / n_experts`` of the
  routed experts, everything else whole.
* KV: the decode state at ``context`` tokens by layer type, as the engine keeps
  it (sliding window rows, compressed rows, indexer rows, pending tokens, the
  CSA overlap), in the compute dtype.
* Fit: weights + KV + the engine's own allowance for activations (10 % of the
  weights + 512 MiB, as ``Engine.load`` checks) against what the GPU may use:
  by default 84 % of the machine's memory, the stock Metal working set measured
  on 128 GiB Macs (107.52 GiB; the rest is what macOS keeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from local_engine.checkpoint.names import expected_shapes
from local_engine.checkpoint.recipes import (
    AFFINE,
    AFFINE_PARAM_BYTES,
    BF16,
    COMPONENTS,
    F32,
    HASH_TABLE,
    Format,
    Recipe,
    component_of,
)
from local_engine.errors import EngineError
from local_engine.model.config import CSA, HCA, SLIDING, ModelConfig

GIB = 1024**3
DEFAULT_MEMORY_GB = 128.0
# recommendedMaxWorkingSetSize on stock 128 GiB Macs, measured at 107.52 GiB on two
# machines (M-series, macOS 26; github.com/antirez/ds4 pull 893). Scaled to other sizes
# as a fraction, which is an assumption there.
DEFAULT_GPU_FRACTION = 107.52 / 128
DEFAULT_CONTEXT = 65536
COMPUTE_BYTES = 2  # bf16, the GPU compute dtype
# Components the loader keeps in fp32 whatever the compute dtype (loader._FP32_SUFFIXES).
_FP32_RESIDENT = {"router", "router_bias", "norms", "sinks", "mhc", "position_bias"}
COMPONENT_ORDER = (*COMPONENTS, HASH_TABLE)


def stored_bytes(fmt: Format, n: int) -> int:
    """Bytes of ``n`` weights (whole groups) stored in ``fmt``."""
    if fmt.kind == F32:
        return 4 * n
    if fmt.kind == BF16:
        return 2 * n
    assert fmt.bits is not None and fmt.group_size is not None
    groups = n // fmt.group_size
    per_group = 2 * AFFINE_PARAM_BYTES if fmt.kind == AFFINE else 1
    return n * fmt.bits // 8 + groups * per_group


def resident_bytes(fmt: Format, n: int, component: str, compute_bytes: int) -> int:
    """Bytes the loaded model holds for ``n`` weights."""
    if not fmt.quantized:
        if component in _FP32_RESIDENT:
            return 4 * n
        return compute_bytes * n
    assert fmt.bits is not None and fmt.group_size is not None
    if fmt.kind == AFFINE:
        return n * fmt.bits // 8 + (n // fmt.group_size) * 2 * compute_bytes
    return stored_bytes(fmt, n)


@dataclass(frozen=True)
class ComponentPlan:
    """One component's parameters and bytes."""

    component: str
    format: str
    parameters: int
    stored_bytes: int
    resident_bytes: int
    read_per_token_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "parameters": self.parameters,
            "stored_bytes": self.stored_bytes,
            "resident_bytes": self.resident_bytes,
            "read_per_token_bytes": self.read_per_token_bytes,
        }


@dataclass(frozen=True)
class KVPlan:
    """Decode-state bytes at a context length, by layer type."""

    context: int
    dtype_bytes: int
    by_layer_type: dict[str, int]
    layers_by_type: dict[str, int]
    per_layer: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.per_layer)


@dataclass(frozen=True)
class MemoryPlan:
    """Weights, bytes per token, KV and whether it fits, for a config and a recipe."""

    preset: str
    recipe: str
    components: tuple[ComponentPlan, ...]
    kv: KVPlan
    memory_bytes: int
    usable_bytes: int
    overhead_bytes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def total_weight_bytes(self) -> int:
        return sum(c.stored_bytes for c in self.components)

    @property
    def resident_weight_bytes(self) -> int:
        return sum(c.resident_bytes for c in self.components)

    @property
    def bytes_read_per_token(self) -> int:
        return sum(c.read_per_token_bytes for c in self.components)

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components if c.component != HASH_TABLE)

    @property
    def needed_bytes(self) -> int:
        return self.resident_weight_bytes + self.overhead_bytes + self.kv.total_bytes

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.usable_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "recipe": self.recipe,
            "parameters": self.parameters,
            "total_weight_bytes": self.total_weight_bytes,
            "resident_weight_bytes": self.resident_weight_bytes,
            "bytes_read_per_token": self.bytes_read_per_token,
            "components": {c.component: c.to_dict() for c in self.components},
            "context": self.kv.context,
            "kv_bytes": self.kv.total_bytes,
            "kv_bytes_by_layer_type": dict(self.kv.by_layer_type),
            "kv_layers_by_type": dict(self.kv.layers_by_type),
            "kv_dtype_bytes": self.kv.dtype_bytes,
            "overhead_bytes": self.overhead_bytes,
            "needed_bytes": self.needed_bytes,
            "memory_bytes": self.memory_bytes,
            "usable_bytes": self.usable_bytes,
            "fits": self.fits,
            "notes": list(self.notes),
        }


def weight_components(
    cfg: ModelConfig, recipe: Recipe, *, compute_bytes: int = COMPUTE_BYTES
) -> tuple[ComponentPlan, ...]:
    """Per-component parameters and bytes of ``cfg``'s tensors under ``recipe``."""
    acc: dict[str, list[int]] = {}
    fmt_of: dict[str, str] = {}
    frac_num, frac_den = cfg.num_experts_per_tok, cfg.n_routed_experts
    for path, shape in expected_shapes(cfg).items():
        component = component_of(path)
        n = 1
        for d in shape:
            n *= d
        if component == HASH_TABLE:
            stored = resident = 4 * n
            read = resident // cfg.vocab_size  # one row per token
            fmt_of[component] = "int32"
        else:
            fmt = recipe.format_for(component)
            fmt_of[component] = fmt.label
            if ".moe.experts." in path:  # one expert's matrix: all of them are stored
                stored = stored_bytes(fmt, n) * cfg.n_routed_experts
                resident = resident_bytes(fmt, n, component, compute_bytes) * cfg.n_routed_experts
                n *= cfg.n_routed_experts
                read = resident * frac_num // frac_den
            else:
                stored = stored_bytes(fmt, n)
                resident = resident_bytes(fmt, n, component, compute_bytes)
                read = resident // cfg.vocab_size if path == "embed" else resident
        row = acc.setdefault(component, [0, 0, 0, 0])
        row[0] += n
        row[1] += stored
        row[2] += resident
        row[3] += read
    return tuple(ComponentPlan(c, fmt_of[c], *acc[c]) for c in COMPONENT_ORDER if c in acc)


def kv_plan(cfg: ModelConfig, context: int, *, dtype_bytes: int = COMPUTE_BYTES) -> KVPlan:
    """Bytes of the decode state after ``context`` tokens (what ``LayerCache.nbytes`` holds)."""
    if context < 0:
        raise EngineError(f"context must be at least 0, got {context}")
    hd = cfg.head_dim

    def compressor(ratio: int, width: int, row_width: int, overlap: bool) -> int:
        count = context // ratio
        pending = context - count * ratio
        values = count * row_width + 2 * pending * width
        if overlap and count > 0:
            values += 2 * ratio * row_width  # the previous window's A series: kv and gate
        return values

    per_layer = []
    by_type: dict[str, int] = {SLIDING: 0, CSA: 0, HCA: 0}
    count: dict[str, int] = {SLIDING: 0, CSA: 0, HCA: 0}
    for kind in cfg.layer_types:
        values = min(context, cfg.sliding_window - 1) * hd
        if kind == HCA:
            values += compressor(cfg.hca_ratio, hd, hd, False)
        elif kind == CSA:
            values += compressor(cfg.csa_ratio, 2 * hd, hd, True)
            ihd = cfg.index_head_dim
            values += compressor(cfg.csa_ratio, 2 * ihd, ihd, True)
        nbytes = values * dtype_bytes
        per_layer.append(nbytes)
        by_type[kind] += nbytes
        count[kind] += 1
    return KVPlan(context, dtype_bytes, by_type, count, tuple(per_layer))


def memory_plan(
    cfg: ModelConfig,
    recipe: Recipe,
    *,
    preset: str = "custom",
    context: int = DEFAULT_CONTEXT,
    memory_gb: float = DEFAULT_MEMORY_GB,
    usable_gb: float | None = None,
    compute_bytes: int = COMPUTE_BYTES,
) -> MemoryPlan:
    """The plan for ``cfg`` under ``recipe`` on a machine with ``memory_gb`` GiB (Apple's GB).

    ``usable_gb`` is what the GPU may use (default: 84 % of memory, the stock Metal
    working set on 128 GiB Macs); raise it with ``sudo sysctl iogpu.wired_limit_mb``.
    """
    from local_engine.runtime.engine import OVERHEAD_FIXED, OVERHEAD_FRACTION

    if memory_gb <= 0:
        raise EngineError(f"memory must be positive, got {memory_gb} GB")
    components = weight_components(cfg, recipe, compute_bytes=compute_bytes)
    resident = sum(c.resident_bytes for c in components)
    memory = int(memory_gb * GIB)
    usable = int((usable_gb if usable_gb is not None else memory_gb * DEFAULT_GPU_FRACTION) * GIB)
    if usable > memory:
        raise EngineError(
            f"usable memory {usable / GIB:.1f} GiB exceeds the machine's {memory_gb} GiB"
        )
    notes = [
        "bytes are exact for the tensors `engine convert` writes (the MTP block is not"
        " converted: the engine does not run it)",
        f"usable memory: {usable / GIB:.2f} GiB of {memory / GIB:.0f} GiB"
        + (
            " (the stock Metal working set, 84 % of memory: raise it with"
            " `sudo sysctl iogpu.wired_limit_mb=N`)"
            if usable_gb is None
            else ""
        ),
    ]
    return MemoryPlan(
        preset=preset,
        recipe=recipe.name,
        components=components,
        kv=kv_plan(cfg, context, dtype_bytes=compute_bytes),
        memory_bytes=memory,
        usable_bytes=usable,
        overhead_bytes=int(resident * OVERHEAD_FRACTION) + OVERHEAD_FIXED,
        notes=tuple(notes),
    )


# name -> (random_checkpoint preset, number of layers); deepseek-v4-flash is the real model.
PLAN_PRESETS: dict[str, tuple[str, int | None]] = {
    "deepseek-v4-flash": ("full-layer", 43),
    "full-layer": ("full-layer", None),
    "small": ("small", None),
    "tiny": ("tiny", None),
}


def preset_model_config(preset: str, *, num_layers: int | None = None) -> ModelConfig:
    """The config of a plan preset (``deepseek-v4-flash``: the released model's shape)."""
    from local_engine.checkpoint.random_weights import official_config
    from local_engine.model.config import RANDOM_MARKER_KEY, config_from_dict

    if preset not in PLAN_PRESETS:
        raise EngineError(f"unknown preset {preset!r}; choose one of {sorted(PLAN_PRESETS)}")
    base, layers = PLAN_PRESETS[preset]
    raw = official_config(base, num_layers=num_layers or layers)
    raw.pop(RANDOM_MARKER_KEY, None)
    return config_from_dict(raw)
