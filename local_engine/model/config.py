"""The model's shape, read from a checkpoint's ``config.json``.

Two spellings of the same architecture reach us: the official release's
``config.json`` (``compress_ratios`` with one value per layer plus one for the
MTP block, ``num_hash_layers``, ``qk_rope_head_dim``, ``rope_scaling``) and the
one transformers' ``save_pretrained`` writes (``layer_types``,
``mlp_layer_types``, ``compress_rates``, nested ``rope_parameters``). Both are
folded into one frozen :class:`ModelConfig`, interpreted the way the
transformers 5.24 reference interprets them, so the same weights give the same
logits whichever file they came with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from local_engine.errors import CheckpointError

SLIDING = "sliding_attention"
CSA = "compressed_sparse_attention"
HCA = "heavily_compressed_attention"
LAYER_TYPES = (SLIDING, CSA, HCA)
HASH_MOE = "hash_moe"
MOE = "moe"
MLP_LAYER_TYPES = (HASH_MOE, MOE)

# The official config spells the attention schedule as compression ratios.
_RATIO_TO_LAYER_TYPE = {0: SLIDING, 4: CSA, 128: HCA}
_DEFAULT_COMPRESS_RATES = {CSA: 4, HCA: 128}
_DEFAULT_NUM_HASH_LAYERS = 3
SCORING_FUNCS = ("sqrtsoftplus", "sigmoid", "softmax")

# The key our random-checkpoint writer puts in config.json, so `engine info`
# can say the weights are noise.
RANDOM_MARKER_KEY = "ds4router_random_weights"


@dataclass(frozen=True)
class YarnRope:
    """YaRN parameters of the compressed layers' RoPE (Flash: factor 16, original 65536)."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float = 1.0
    truncate: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Everything the MLX model needs to know about the architecture's sizes."""

    vocab_size: int = 129280
    hidden_size: int = 4096
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 43
    num_attention_heads: int = 64
    head_dim: int = 512
    qk_rope_head_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    num_experts_per_tok: int = 6
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    scoring_func: str = "sqrtsoftplus"
    routed_scaling_factor: float = 1.5
    swiglu_limit: float = 10.0
    layer_types: tuple[str, ...] = ()
    mlp_layer_types: tuple[str, ...] = ()
    csa_ratio: int = 4
    hca_ratio: int = 128
    sliding_window: int = 128
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    # None: plain RoPE on the compressed layers too (the reference's default).
    compress_yarn: YarnRope | None = None
    max_position_embeddings: int = 1048576
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 1
    num_nextn_predict_layers: int = 1
    # The random-weights marker written by local_engine.checkpoint.random_weights, if any.
    random_weights: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise CheckpointError("invalid model config: " + "; ".join(problems))

    # -- derived sizes -------------------------------------------------------------
    @property
    def is_random(self) -> bool:
        """True when the checkpoint was written by our random-weights writer."""
        return self.random_weights is not None

    @property
    def nope_head_dim(self) -> int:
        return self.head_dim - self.qk_rope_head_dim

    def compress_ratio(self, layer: int) -> int:
        """Compression ratio of a layer: 0 for sliding-only layers."""
        kind = self.layer_types[layer]
        if kind == CSA:
            return self.csa_ratio
        if kind == HCA:
            return self.hca_ratio
        return 0

    def with_overrides(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (used by `engine info` and bench output)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, YarnRope):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


def _validate(c: ModelConfig) -> list[str]:
    problems: list[str] = []
    n = c.num_hidden_layers
    if n <= 0:
        problems.append(f"num_hidden_layers must be positive, got {n}")
    if len(c.layer_types) != n:
        problems.append(f"layer_types has {len(c.layer_types)} entries, expected {n}")
    if len(c.mlp_layer_types) != n:
        problems.append(f"mlp_layer_types has {len(c.mlp_layer_types)} entries, expected {n}")
    bad = sorted({t for t in c.layer_types if t not in LAYER_TYPES})
    if bad:
        problems.append(f"unknown layer_types {bad}; expected values from {list(LAYER_TYPES)}")
    bad = sorted({t for t in c.mlp_layer_types if t not in MLP_LAYER_TYPES})
    if bad:
        problems.append(f"unknown mlp_layer_types {bad}; expected {list(MLP_LAYER_TYPES)}")
    if c.scoring_func not in SCORING_FUNCS:
        problems.append(f"scoring_func {c.scoring_func!r} is not one of {list(SCORING_FUNCS)}")
    if c.qk_rope_head_dim % 2 or not 0 < c.qk_rope_head_dim <= c.head_dim:
        problems.append(
            f"qk_rope_head_dim {c.qk_rope_head_dim} must be even and within head_dim {c.head_dim}"
        )
    if c.index_head_dim < c.qk_rope_head_dim:
        problems.append(
            f"index_head_dim {c.index_head_dim} is smaller than the RoPE slice {c.qk_rope_head_dim}"
        )
    if c.num_attention_heads % c.o_groups:
        problems.append(
            f"num_attention_heads {c.num_attention_heads} is not divisible by o_groups {c.o_groups}"
        )
    if c.num_experts_per_tok > c.n_routed_experts:
        problems.append(
            f"num_experts_per_tok {c.num_experts_per_tok} exceeds n_routed_experts"
            f" {c.n_routed_experts}"
        )
    for name in ("csa_ratio", "hca_ratio", "sliding_window", "hc_mult", "index_topk"):
        if getattr(c, name) <= 0:
            problems.append(f"{name} must be positive, got {getattr(c, name)}")
    if c.hc_sinkhorn_iters < 1:
        problems.append(f"hc_sinkhorn_iters must be at least 1, got {c.hc_sinkhorn_iters}")
    if c.n_shared_experts not in (0, 1):
        problems.append(f"n_shared_experts {c.n_shared_experts} is not supported (0 or 1)")
    return problems


def _as_int(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise CheckpointError(f"config key {key!r} must be an integer, got {value!r}")
    return int(value)


def _as_float(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(f"config key {key!r} must be a number, got {value!r}")
    return float(value)


def _layer_types(raw: Mapping[str, Any], n: int) -> tuple[str, ...]:
    explicit = raw.get("layer_types")
    if explicit is not None:
        return tuple(str(t) for t in list(explicit)[:n])
    ratios = raw.get("compress_ratios")
    if ratios is not None:
        out = []
        # The official list carries one extra entry for the MTP block: only the
        # first num_hidden_layers describe the backbone.
        for i, r in enumerate(list(ratios)[:n]):
            if int(r) not in _RATIO_TO_LAYER_TYPE:
                raise CheckpointError(
                    f"config compress_ratios[{i}] is {r}; expected 0 (sliding), 4 (CSA) or"
                    " 128 (HCA)"
                )
            out.append(_RATIO_TO_LAYER_TYPE[int(r)])
        return tuple(out)
    # transformers' default schedule (V4-Pro): 2 HCA, then CSA/HCA interleaved.
    inter = [CSA if i % 2 else HCA for i in range(max(n - 2, 0))]
    return tuple([HCA] * min(n, 2) + inter)


def _mlp_layer_types(raw: Mapping[str, Any], n: int) -> tuple[str, ...]:
    explicit = raw.get("mlp_layer_types")
    if explicit is not None:
        return tuple(str(t) for t in list(explicit)[:n])
    n_hash = _as_int(raw, "num_hash_layers", _DEFAULT_NUM_HASH_LAYERS)
    return tuple([HASH_MOE] * min(n, n_hash) + [MOE] * max(0, n - n_hash))


def _compress_yarn(raw: Mapping[str, Any]) -> YarnRope | None:
    """The compressed layers' RoPE scaling, from whichever spelling the file uses."""
    params: Mapping[str, Any] | None = None
    rp = raw.get("rope_parameters")
    if isinstance(rp, Mapping) and isinstance(rp.get("compress"), Mapping):
        params = rp["compress"]
    elif isinstance(rp, Mapping) and rp:
        params = rp
    elif isinstance(raw.get("rope_scaling"), Mapping):
        params = raw["rope_scaling"]
    if not params:
        return None
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return None
    if kind != "yarn":
        raise CheckpointError(
            f"config rope type {kind!r} for the compressed layers is not supported (yarn or"
            " default)"
        )
    factor = params.get("factor")
    original = params.get("original_max_position_embeddings")
    if factor is None or original is None:
        raise CheckpointError(
            "config yarn rope needs 'factor' and 'original_max_position_embeddings'"
        )
    # The reference forces attention_factor 1.0 for these layers unless given.
    attention_factor = params.get("attention_factor")
    return YarnRope(
        factor=float(factor),
        original_max_position_embeddings=int(original),
        beta_fast=float(params.get("beta_fast") or 32.0),
        beta_slow=float(params.get("beta_slow") or 1.0),
        attention_factor=1.0 if attention_factor is None else float(attention_factor),
        # transformers reads `truncate` from the top level of its nested dict,
        # where it never is: it always truncates.
        truncate=True,
    )


def config_from_dict(raw: Mapping[str, Any]) -> ModelConfig:
    """Fold a DeepSeek V4 ``config.json`` (official or transformers spelling) into a config."""
    model_type = raw.get("model_type")
    if model_type is not None and model_type != "deepseek_v4":
        raise CheckpointError(
            f"config model_type is {model_type!r}; this engine runs 'deepseek_v4' checkpoints"
        )
    n = _as_int(raw, "num_hidden_layers", 43)
    head_dim = _as_int(raw, "head_dim", 512)
    if raw.get("qk_rope_head_dim") is not None:
        rope_dim = _as_int(raw, "qk_rope_head_dim", 64)
    elif raw.get("partial_rotary_factor") is not None:
        rope_dim = int(head_dim * _as_float(raw, "partial_rotary_factor", 0.125))
    else:
        rope_dim = head_dim * 64 // 512
    rates = dict(_DEFAULT_COMPRESS_RATES)
    if isinstance(raw.get("compress_rates"), Mapping):
        rates.update({str(k): int(v) for k, v in raw["compress_rates"].items()})
    if raw.get("compress_rate_csa") is not None:
        rates[CSA] = _as_int(raw, "compress_rate_csa", 4)
    if raw.get("compress_rate_hca") is not None:
        rates[HCA] = _as_int(raw, "compress_rate_hca", 128)
    eos = raw.get("eos_token_id", 1)
    if isinstance(eos, list):
        eos = tuple(int(e) for e in eos)
    rope_theta = _as_float(raw, "rope_theta", 10000.0)
    rp = raw.get("rope_parameters")
    if isinstance(rp, Mapping) and isinstance(rp.get("main"), Mapping):
        rope_theta = float(rp["main"].get("rope_theta", rope_theta))
    compress_theta = _as_float(raw, "compress_rope_theta", 160000.0)
    if isinstance(rp, Mapping) and isinstance(rp.get("compress"), Mapping):
        compress_theta = float(rp["compress"].get("rope_theta", compress_theta))
    random_marker = raw.get(RANDOM_MARKER_KEY)
    return ModelConfig(
        vocab_size=_as_int(raw, "vocab_size", 129280),
        hidden_size=_as_int(raw, "hidden_size", 4096),
        moe_intermediate_size=_as_int(raw, "moe_intermediate_size", 2048),
        num_hidden_layers=n,
        num_attention_heads=_as_int(raw, "num_attention_heads", 64),
        head_dim=head_dim,
        qk_rope_head_dim=rope_dim,
        q_lora_rank=_as_int(raw, "q_lora_rank", 1024),
        o_groups=_as_int(raw, "o_groups", 8),
        o_lora_rank=_as_int(raw, "o_lora_rank", 1024),
        num_experts_per_tok=_as_int(raw, "num_experts_per_tok", 6),
        n_routed_experts=_as_int(raw, "n_routed_experts", 256),
        n_shared_experts=_as_int(raw, "n_shared_experts", 1),
        scoring_func=str(raw.get("scoring_func", "sqrtsoftplus")),
        routed_scaling_factor=_as_float(raw, "routed_scaling_factor", 1.5),
        swiglu_limit=_as_float(raw, "swiglu_limit", 10.0),
        layer_types=_layer_types(raw, n),
        mlp_layer_types=_mlp_layer_types(raw, n),
        csa_ratio=int(rates[CSA]),
        hca_ratio=int(rates[HCA]),
        sliding_window=_as_int(raw, "sliding_window", 128),
        index_n_heads=_as_int(raw, "index_n_heads", 64),
        index_head_dim=_as_int(raw, "index_head_dim", 128),
        index_topk=_as_int(raw, "index_topk", 512),
        hc_mult=_as_int(raw, "hc_mult", 4),
        hc_sinkhorn_iters=_as_int(raw, "hc_sinkhorn_iters", 20),
        hc_eps=_as_float(raw, "hc_eps", 1e-6),
        rms_norm_eps=_as_float(raw, "rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        compress_rope_theta=compress_theta,
        compress_yarn=_compress_yarn(raw),
        max_position_embeddings=_as_int(raw, "max_position_embeddings", 1048576),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        bos_token_id=raw.get("bos_token_id", 0),
        eos_token_id=eos,
        num_nextn_predict_layers=_as_int(raw, "num_nextn_predict_layers", 1),
        random_weights=random_marker if isinstance(random_marker, Mapping) else None,
    )


def read_config_json(model_dir: str | Path) -> dict[str, Any]:
    """``<model_dir>/config.json`` as a dict, unvalidated; errors name the file."""
    path = Path(model_dir).expanduser() / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: a model directory needs config.json next to its *.safetensors"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return raw


def config_from_file_dict(raw: Mapping[str, Any], model_dir: str | Path) -> ModelConfig:
    """:func:`config_from_dict` for what :func:`read_config_json` read; errors name the file."""
    try:
        return config_from_dict(raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{Path(model_dir).expanduser() / 'config.json'}: {exc}") from exc


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read and check ``<model_dir>/config.json``; errors name the file."""
    return config_from_file_dict(read_config_json(model_dir), model_dir)


def yarn_inv_freq_params(cfg: ModelConfig) -> tuple[float, float] | None:
    """(low, high) of YaRN's correction range for the compressed RoPE, or None."""
    y = cfg.compress_yarn
    if y is None:
        return None
    dim = cfg.qk_rope_head_dim
    base = cfg.compress_rope_theta

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(y.original_max_position_embeddings / (rotations * 2 * math.pi))) / (
            2 * math.log(base)
        )

    low, high = correction_dim(y.beta_fast), correction_dim(y.beta_slow)
    if y.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)
