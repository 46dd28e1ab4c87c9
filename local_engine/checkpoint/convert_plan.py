"""The plan of a conversion (``ds4router engine convert``), made before a byte is written.

From the source's headers only: every output tensor (a :class:`Job`: its stored
entries in the recipe's format, and the source rows each block comes from), which
shard it goes to, its offset there, and each shard's header
(:func:`local_engine.checkpoint.safetensors.encode_header`). Also what identifies a
source and a set of options, so that a resumed conversion continues the same one.
:mod:`local_engine.checkpoint.convert` carries the plan out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.checkpoint.names import expected_shapes, official_name, to_official
from local_engine.checkpoint.quantize import (
    QUANT_SECTION,
    WEIGHT,
    Entry,
    encoded_layout,
    quantized_paths,
)
from local_engine.checkpoint.recipes import HASH_TABLE, Format, Recipe, component_of
from local_engine.checkpoint.safetensors import TensorInfo, encode_header, list_shards, read_header
from local_engine.errors import CheckpointError, EngineError
from local_engine.model.config import ModelConfig, config_from_dict, read_config_json

CONVERT_FORMAT = 1
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
GB = 10**9
# Header bytes planned per stored tensor beyond its name (dtype, shape, offsets in JSON).
_HEADER_PER_ENTRY = 128


class ConvertError(EngineError):
    """The conversion cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class RowSource:
    """Rows ``[row0, row0 + rows)`` of a source tensor viewed as ``[-1, in]``."""

    info: TensorInfo
    scale: TensorInfo | None  # FP8 block scales / FP4 group scales
    row0: int
    rows: int

    @property
    def source_bytes(self) -> int:
        total_rows = max(1, int(np.prod(self.info.shape[:-1], dtype=np.int64)))
        n = (self.info.end - self.info.start) * self.rows // total_rows
        if self.scale is not None:
            n += (self.scale.end - self.scale.start) * self.rows // total_rows
        return n


@dataclass(frozen=True)
class Job:
    """One output tensor: its stored entries, its format, and where its rows come from."""

    path: str  # internal path
    fmt: Format | None  # None: copied as int32 (the hash table)
    shape: tuple[int, ...]  # logical
    entries: tuple[Entry, ...]
    names: tuple[str, ...]  # stored name of each entry
    sources: tuple[tuple[int, RowSource], ...]  # (first output row, source rows)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    @property
    def source_bytes(self) -> int:
        return sum(src.source_bytes for _, src in self.sources)


@dataclass(frozen=True)
class ShardPlan:
    name: str
    jobs: tuple[Job, ...]
    header: bytes  # 8-byte length + JSON, padded
    offsets: Mapping[str, int]  # stored name -> absolute start in the file
    size: int  # file bytes

    @property
    def source_bytes(self) -> int:
        return sum(j.source_bytes for j in self.jobs)


@dataclass(frozen=True)
class ConversionPlan:
    src: Path
    recipe: Recipe
    config: ModelConfig
    raw_config: Mapping[str, Any]
    shards: tuple[ShardPlan, ...]
    source_id: str
    options_id: str
    largest_source_tensor: int

    @property
    def source_bytes(self) -> int:
        return sum(s.source_bytes for s in self.shards)

    @property
    def tensor_bytes(self) -> int:
        return sum(j.nbytes for s in self.shards for j in s.jobs)

    @property
    def ram_bound_bytes(self) -> int:
        """The promise: peak memory at most 3x the largest source tensor + 1 GB."""
        return 3 * self.largest_source_tensor + GB

    def quantization_section(self) -> dict[str, Any]:
        paths = {}
        for shard in self.shards:
            for job in shard.jobs:
                if job.fmt is not None and job.fmt.quantized:
                    paths[base_name(job.path)] = job.fmt.to_dict()
        return {
            "writer": "ds4router engine convert",
            "format_version": CONVERT_FORMAT,
            "recipe": self.recipe.to_dict(),
            "scales_dtype": "bfloat16",
            "paths": dict(sorted(paths.items())),
        }


def base_name(path: str) -> str:
    if path.endswith(".moe.experts.gate_up"):
        return path.removesuffix(".moe.experts.gate_up") + ".ffn.experts.gate_up_proj"
    if path.endswith(".moe.experts.down"):
        return path.removesuffix(".moe.experts.down") + ".ffn.experts.down_proj"
    return official_name(path)


def plan_conversion(
    src: str | Path, recipe: Recipe, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> ConversionPlan:
    """Check ``src`` and plan every output tensor, shard and offset (reads headers only)."""
    from local_engine.checkpoint.inventory import inventory

    src_dir = Path(src).expanduser().resolve()
    if not src_dir.is_dir():
        raise ConvertError(f"{src_dir} is not a directory (SRC must be a checkpoint directory)")
    raw = read_config_json(src_dir)
    if quantized_paths(raw):
        raise ConvertError(
            f"{src_dir} was already converted (its config.json has a '{QUANT_SECTION}'"
            " section); convert from the official release instead"
        )
    try:
        cfg = config_from_dict(raw)
    except CheckpointError as exc:
        raise ConvertError(f"{src_dir / 'config.json'}: {exc}") from None
    infos: list[TensorInfo] = []
    for shard in list_shards(src_dir):
        infos.extend(read_header(shard)[0].values())
    inv = inventory(cfg, infos)
    jobs = _plan_jobs(cfg, recipe, inv)
    order = {p: i for i, p in enumerate(sorted({i.file for i in infos}))}
    jobs.sort(key=lambda j: (order[j.sources[0][1].info.file], j.sources[0][1].info.start))
    shards = _pack_shards(jobs, max_shard_bytes)
    options = {
        "convert_format": CONVERT_FORMAT,
        "recipe": recipe.to_dict(),
        "max_shard_bytes": max_shard_bytes,
    }
    largest = max(i.end - i.start for i in infos)
    return ConversionPlan(
        src_dir,
        recipe,
        cfg,
        raw,
        shards,
        _source_id(src_dir),
        _digest(json.dumps(options, sort_keys=True).encode()),
        largest,
    )


def _plan_jobs(cfg: ModelConfig, recipe: Recipe, inv: Any) -> list[Job]:
    jobs: list[Job] = []
    for path, shape in expected_shapes(cfg).items():
        if ".moe.experts." in path:
            continue
        entry = inv.weights.get(path)
        if entry is None:  # a tied head
            continue
        info: TensorInfo = entry.info
        scale = inv.scales.get(path)
        component = component_of(path)
        rows = max(1, int(np.prod(shape[:-1], dtype=np.int64)))
        source = RowSource(info, scale.info if scale is not None else None, 0, rows)
        if component == HASH_TABLE:
            layout = [Entry(WEIGHT, "I32", shape)]
            jobs.append(
                Job(path, None, shape, tuple(layout), (to_official(info.name),), ((0, source),))
            )
            continue
        fmt = recipe.format_for(component)
        jobs.append(_job(path, fmt, shape, ((0, source),), float_name=to_official(info.name)))
    e, d, inter = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}.moe.experts."
        gu_src: list[tuple[int, RowSource]] = []
        down_src: list[tuple[int, RowSource]] = []
        fused_gu = inv.weights.get(p + "gate_up")
        fused_down = inv.weights.get(p + "down")
        if fused_gu is not None and fused_down is not None:
            gu_src.append((0, RowSource(fused_gu.info, None, 0, e * 2 * inter)))
            down_src.append((0, RowSource(fused_down.info, None, 0, e * d)))
        else:
            for k in range(e):

                def one(matrix: str, rows: int, k: int = k, i: int = i) -> RowSource:
                    w = inv.experts[(i, matrix, k)]
                    s = inv.expert_scales.get((i, matrix, k))
                    return RowSource(w.info, s.info if s is not None else None, 0, rows)

                gu_src.append((k * 2 * inter, one("w1", inter)))
                gu_src.append((k * 2 * inter + inter, one("w3", inter)))
                down_src.append((k * d, one("w2", d)))
        jobs.append(
            _job(
                p + "gate_up", recipe.format_for("routed_experts"), (e, 2 * inter, d), tuple(gu_src)
            )
        )
        jobs.append(
            _job(
                p + "down", recipe.format_for("routed_experts_down"), (e, d, inter), tuple(down_src)
            )
        )
    return jobs


def _job(
    path: str,
    fmt: Format,
    shape: tuple[int, ...],
    sources: tuple[tuple[int, RowSource], ...],
    *,
    float_name: str | None = None,
) -> Job:
    base = base_name(path)
    layout = encoded_layout(fmt, shape, where=f"tensor {base} ({component_of(path)})")
    if fmt.quantized or float_name is None:
        names = tuple(f"{base}.{e.suffix}" for e in layout)
    else:
        names = (float_name,)
    return Job(path, fmt, shape, tuple(layout), names, sources)


def _pack_shards(jobs: list[Job], max_bytes: int) -> tuple[ShardPlan, ...]:
    groups: list[list[Job]] = []
    size = 0
    for job in jobs:
        need = job.nbytes + sum(len(n) + _HEADER_PER_ENTRY for n in job.names)
        if need + 8 + 256 > max_bytes:
            raise ConvertError(
                f"tensor {base_name(job.path)} needs {need / GB:.2f} GB, more than the shard"
                f" limit of {max_bytes / GB:.2f} GB; raise the limit (--shard-gb)"
            )
        if groups and size + need + 8 + 256 <= max_bytes:
            groups[-1].append(job)
            size += need
        else:
            groups.append([job])
            size = need
    total = len(groups)
    return tuple(
        _shard_plan(f"model-{k:05d}-of-{total:05d}.safetensors", group)
        for k, group in enumerate(groups, start=1)
    )


def _shard_plan(name: str, jobs: list[Job]) -> ShardPlan:
    head, offsets = encode_header(
        (
            (stored, entry.dtype, entry.shape, entry.nbytes)
            for job in jobs
            for entry, stored in zip(job.entries, job.names, strict=True)
        ),
        {"format": "mlx", "writer": "ds4router engine convert"},
    )
    size = len(head) + sum(job.nbytes for job in jobs)
    return ShardPlan(name, tuple(jobs), head, offsets, size)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_id(src: Path) -> str:
    """What makes a source this source: its config, shard names, headers, sizes, and a
    sample of each shard's bytes (hashing 160 GB would take longer than converting)."""
    h = hashlib.sha256((src / "config.json").read_bytes())
    sample = 1 << 20
    for shard in list_shards(src):
        size = shard.stat().st_size
        h.update(f"{shard.name}:{size}".encode())
        with shard.open("rb") as f:
            h.update(f.read(sample))
            f.seek(max(0, size - sample))
            h.update(f.read(sample))
    return h.hexdigest()


def iter_plan_entries(plan: ConversionPlan) -> Iterator[tuple[str, Entry, Job]]:
    """Every stored entry of a plan, with its job (for reports and the memory plan's tests)."""
    for shard in plan.shards:
        for job in shard.jobs:
            for entry, stored in zip(job.entries, job.names, strict=True):
                yield stored, entry, job
