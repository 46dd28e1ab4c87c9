"""Quantization recipes: which storage format each part of the model gets, as data.

A recipe names a :class:`Format` for every *component* of DeepSeek V4 (routed
experts, attention projections, shared experts, head, embedding, router,
compressor and indexer projections, norms, sinks, mHC parameters, position
biases). The built-in ones live in ``configs/recipes/*.yaml``; ``q2`` keeps the
routed experts -- about 90 % of the weights but read sparsely -- at affine
2-bit and everything read on every token at 8 bits or better, because those
bytes set the decode speed and most of the quality (``shared/ENGINE.md``).

:func:`component_of` maps an internal tensor path (``layers.3.attn.wq_a``,
see :mod:`local_engine.checkpoint.names`) to its component, so the converter,
the memory plan and the tests all agree on what a tensor is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from local_engine.errors import EngineError

F32, BF16, AFFINE, MXFP8, MXFP4 = "f32", "bf16", "affine", "mxfp8", "mxfp4"
FLOAT_KINDS = (F32, BF16)
QUANT_KINDS = (AFFINE, MXFP8, MXFP4)
AFFINE_BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)
MX_GROUP = 32
# Affine scales and biases are stored in bf16 (two 16-bit values per group).
AFFINE_PARAM_BYTES = 2

# component -> (what it holds, may it be quantized)
COMPONENTS: dict[str, tuple[str, bool]] = {
    "routed_experts": ("routed experts' gate and up projections (w1, w3)", True),
    "routed_experts_down": ("routed experts' down projection (w2)", True),
    "attention": ("attention projections wq_a, wq_b, wkv, wo_a, wo_b", True),
    "shared_experts": ("the shared expert (w1, w2, w3)", True),
    "head": ("the LM head", True),
    "embed": ("the token embedding", True),
    "compressor": ("CSA/HCA and indexer compressor projections (wkv, wgate)", True),
    "indexer": ("lightning indexer projections (wq_b, weights_proj)", True),
    "router": ("MoE router gate", False),
    "router_bias": ("MoE score-correction bias", False),
    "norms": ("RMSNorm weights", False),
    "sinks": ("attention sink logits", False),
    "mhc": ("mHC (hyper-connection) fn, base and scale", False),
    "position_bias": ("compressor position biases (ape)", False),
}
# Not a recipe choice: the hash layers' token -> expert table stays int32.
HASH_TABLE = "hash_table"

_BUILTIN_DIR = Path(__file__).resolve().parents[2] / "configs" / "recipes"


class RecipeError(EngineError):
    """A recipe file or option is not valid; the message says which key and why."""


@dataclass(frozen=True)
class Format:
    """How one tensor is stored: a float dtype or an MLX quantization mode."""

    kind: str
    bits: int | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind in FLOAT_KINDS:
            if self.bits is not None or self.group_size is not None:
                raise RecipeError(f"format {self.kind} takes no bits or group_size")
        elif self.kind == AFFINE:
            if self.bits not in AFFINE_BITS:
                raise RecipeError(
                    f"affine bits must be one of {list(AFFINE_BITS)}, got {self.bits}"
                )
            if self.group_size not in GROUP_SIZES:
                raise RecipeError(
                    f"affine group_size must be one of {list(GROUP_SIZES)}, got {self.group_size}"
                )
        elif self.kind in (MXFP8, MXFP4):
            bits = 8 if self.kind == MXFP8 else 4
            if self.bits not in (None, bits) or self.group_size not in (None, MX_GROUP):
                raise RecipeError(f"{self.kind} is fixed at {bits} bits, group {MX_GROUP}")
            object.__setattr__(self, "bits", bits)
            object.__setattr__(self, "group_size", MX_GROUP)
        else:
            raise RecipeError(
                f"unknown format {self.kind!r}; use one of {list(FLOAT_KINDS + QUANT_KINDS)}"
            )

    @property
    def quantized(self) -> bool:
        return self.kind in QUANT_KINDS

    @property
    def mode(self) -> str:
        """MLX's ``mode`` argument (quantized formats only)."""
        return self.kind

    @property
    def label(self) -> str:
        if self.kind == AFFINE:
            return f"affine{self.bits}/g{self.group_size}"
        return self.kind

    def bits_per_weight(self) -> float:
        """Stored bits per logical weight, scales and biases included."""
        if self.kind == F32:
            return 32.0
        if self.kind == BF16:
            return 16.0
        assert self.bits is not None and self.group_size is not None
        if self.kind == AFFINE:
            return self.bits + 2 * AFFINE_PARAM_BYTES * 8 / self.group_size
        return self.bits + 8 / self.group_size  # one E8M0 byte per group

    def to_dict(self) -> dict[str, Any]:
        if self.kind == AFFINE:
            return {"format": self.kind, "bits": self.bits, "group_size": self.group_size}
        return {"format": self.kind}


def format_from(raw: Any, *, where: str) -> Format:
    """A :class:`Format` from YAML: ``bf16`` or ``{format: affine, bits: 2, group_size: 64}``."""
    if isinstance(raw, str):
        raw = {"format": raw}
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{where}: expected a format name or a mapping, got {raw!r}")
    unknown = sorted(set(raw) - {"format", "bits", "group_size"})
    if unknown:
        raise RecipeError(f"{where}: unknown keys {unknown}; expected format, bits, group_size")
    if "format" not in raw:
        raise RecipeError(f"{where}: missing 'format' (one of {list(FLOAT_KINDS + QUANT_KINDS)})")
    try:
        return Format(str(raw["format"]), raw.get("bits"), raw.get("group_size"))
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Recipe:
    """A name, a description and one :class:`Format` per component."""

    name: str
    description: str
    formats: Mapping[str, Format]

    def __post_init__(self) -> None:
        missing = [c for c in COMPONENTS if c not in self.formats]
        if missing:
            raise RecipeError(f"recipe {self.name!r} does not say how to store {missing}")
        for component, fmt in self.formats.items():
            if component not in COMPONENTS:
                raise RecipeError(
                    f"recipe {self.name!r}: unknown component {component!r};"
                    f" expected {list(COMPONENTS)}"
                )
            if fmt.quantized and not COMPONENTS[component][1]:
                raise RecipeError(
                    f"recipe {self.name!r}: {component} ({COMPONENTS[component][0]}) must stay"
                    f" f32 or bf16, not {fmt.label}"
                )

    def format_for(self, component: str) -> Format:
        return self.formats[component]

    def with_options(
        self,
        *,
        group_size: int | None = None,
        down_bits: int | None = None,
        eight_bit: str | None = None,
    ) -> Recipe:
        """The recipe with the routed experts' group size, the down projection's bits, or the
        8-bit components' mode (``affine`` or ``mxfp8``) changed."""
        formats = dict(self.formats)
        tags = []
        if group_size is not None:
            for c in ("routed_experts", "routed_experts_down"):
                fmt = formats[c]
                if fmt.kind != AFFINE:
                    raise RecipeError(
                        f"--group-size applies to affine routed experts; recipe {self.name!r}"
                        f" stores {c} as {fmt.label}"
                    )
                formats[c] = replace(fmt, group_size=group_size)
            tags.append(f"g{group_size}")
        if down_bits is not None:
            base = formats["routed_experts_down"]
            if base.kind != AFFINE:
                raise RecipeError(f"--down-bits needs affine routed experts, not {base.label}")
            formats["routed_experts_down"] = replace(base, bits=down_bits)
            tags.append(f"down{down_bits}")
        if eight_bit is not None:
            if eight_bit not in (AFFINE, MXFP8):
                raise RecipeError(f"--eight-bit must be affine or mxfp8, got {eight_bit!r}")
            new = Format(AFFINE, 8, 64) if eight_bit == AFFINE else Format(MXFP8)
            for c, fmt in formats.items():
                if fmt.quantized and fmt.bits == 8:
                    formats[c] = new
            tags.append(f"8bit-{eight_bit}")
        if not tags:
            return self
        return Recipe(f"{self.name}+{'+'.join(tags)}", self.description, formats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "components": {c: self.formats[c].to_dict() for c in COMPONENTS},
        }


def recipe_from_dict(raw: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
    """Build a recipe from its YAML/JSON form (``name``, ``description``, ``components``)."""
    unknown = sorted(set(raw) - {"name", "description", "components"})
    if unknown:
        raise RecipeError(
            f"{where}: unknown keys {unknown}; expected name, description, components"
        )
    comps = raw.get("components")
    if not isinstance(comps, Mapping):
        raise RecipeError(f"{where}: 'components' must map component names to formats")
    formats = {str(c): format_from(v, where=f"{where}: components.{c}") for c, v in comps.items()}
    # The down projection follows the other expert matrices unless the recipe says otherwise.
    if "routed_experts_down" not in formats and "routed_experts" in formats:
        formats["routed_experts_down"] = formats["routed_experts"]
    name = str(raw.get("name") or "").strip()
    if not name:
        raise RecipeError(f"{where}: missing 'name'")
    try:
        return Recipe(name, str(raw.get("description", "")).strip(), formats)
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def builtin_recipes(recipes_dir: Path | None = None) -> list[str]:
    """Names of the recipes shipped in ``configs/recipes``."""
    folder = recipes_dir or _BUILTIN_DIR
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_recipe(spec: str, recipes_dir: Path | None = None) -> Recipe:
    """A recipe by built-in name (``q2``) or from a YAML file path."""
    import yaml

    folder = recipes_dir or _BUILTIN_DIR
    path = Path(spec).expanduser()
    if not (spec.endswith((".yaml", ".yml")) or path.is_file()):
        path = folder / f"{spec}.yaml"
        if not path.is_file():
            known = ", ".join(builtin_recipes(folder)) or "none found"
            raise RecipeError(f"unknown recipe {spec!r}; built-in recipes: {known}, or a YAML path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    return recipe_from_dict(raw, where=str(path))


# -- which component a tensor belongs to -----------------------------------------------
_LAYER_SUFFIX_COMPONENT: tuple[tuple[str, str], ...] = (
    # Order matters: the indexer's compressor is a compressor, its norm a norm.
    ("attn.indexer.compressor.ape", "position_bias"),
    ("attn.indexer.compressor.norm", "norms"),
    ("attn.indexer.compressor.", "compressor"),
    ("attn.indexer.", "indexer"),
    ("attn.compressor.ape", "position_bias"),
    ("attn.compressor.norm", "norms"),
    ("attn.compressor.", "compressor"),
    ("attn.q_norm", "norms"),
    ("attn.kv_norm", "norms"),
    ("attn.sinks", "sinks"),
    ("attn.", "attention"),
    ("attn_norm", "norms"),
    ("ffn_norm", "norms"),
    ("hc_attn.", "mhc"),
    ("hc_ffn.", "mhc"),
    ("moe.gate", "router"),
    ("moe.bias", "router_bias"),
    ("moe.tid2eid", HASH_TABLE),
    ("moe.shared.", "shared_experts"),
    ("moe.experts.w2", "routed_experts_down"),
    ("moe.experts.down", "routed_experts_down"),
    ("moe.experts.", "routed_experts"),
)
_TOP_COMPONENT = {"embed": "embed", "head": "head", "norm": "norms"}


def component_of(path: str) -> str:
    """The component of an internal tensor path (``layers.3.attn.wq_a`` -> ``attention``)."""
    if path in _TOP_COMPONENT:
        return _TOP_COMPONENT[path]
    if path.startswith("hc_head."):
        return "mhc"
    if path.startswith("layers."):
        rest = path.split(".", 2)[2] if path.count(".") >= 2 else ""
        for prefix, component in _LAYER_SUFFIX_COMPONENT:
            if rest == prefix or rest.startswith(prefix):
                return component
    raise RecipeError(f"tensor {path!r} belongs to no recipe component")
