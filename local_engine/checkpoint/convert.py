"""Convert an official-layout checkpoint to a recipe (``ds4router engine convert``).

The official release is ~160 GB in 46 shards (FP4 experts, FP8 block-scaled
projections, bf16/f32 rest). The converter reads it one tensor -- for experts,
one expert matrix -- at a time, in row blocks, and writes MLX safetensors
shards of at most ``max_shard_bytes`` (5 GB) plus ``config.json`` (with a
``quantization`` section listing every quantized tensor's format) and an index.

Everything about the output is planned before a byte is written: which tensors
go to which shard, their dtypes, shapes and offsets (the formats fix them, see
:func:`local_engine.checkpoint.quantize.encoded_layout`). So a shard's header is written
first and each block of rows goes straight to its place in the file
(``pwrite``); a layer's experts are fused into ``[E, 2I, D]`` / ``[E, D, I]``
stacks without ever holding the layer. Peak memory is a few row blocks, well
under 3x the largest tensor + 1 GB (measured and reported).

Each shard is written as ``NAME.partial``, read back and checked (header,
every written block's digest), then renamed; its sha256 goes into
``.ds4router-convert.json`` in the destination. ``resume=True`` re-verifies the
finished shards and continues with the next: quantization is deterministic, so
the result is byte-identical to an uninterrupted run. A destination that holds
anything else -- another model, another recipe, a corrupt shard, files we did
not write -- is refused with a message that says what to do. ``config.json`` is
written last: a directory without it is not a model yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.checkpoint.names import expected_shapes, official_name, to_official
from local_engine.checkpoint.official import FP8_BLOCK, MX_GROUP, float_to_e8m0
from local_engine.checkpoint.quantize import (
    QUANT_SECTION,
    WEIGHT,
    Entry,
    encode_rows,
    encoded_layout,
    mx_quantized_rows,
    quantized_paths,
)
from local_engine.checkpoint.recipes import (
    F32,
    HASH_TABLE,
    MXFP4,
    MXFP8,
    Format,
    Recipe,
    component_of,
)
from local_engine.checkpoint.safetensors import RAW_DTYPES, TensorInfo, list_shards, read_header
from local_engine.errors import CheckpointError, EngineError
from local_engine.model.config import ModelConfig, config_from_dict, read_config_json

CONVERT_FORMAT = 1
STATE_FILE = ".ds4router-convert.json"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
GB = 10**9
# Float32 bytes of source rows decoded and encoded at once.
CHUNK_BYTES = 64 * 2**20
_FLOAT_SOURCES = {"F64", "F32", "BF16", "F16"}
# Upper bound of one tensor's JSON in a header, beyond its name (dtype, shape, offsets).
_HEADER_PER_ENTRY = 128

Progress = Callable[[int, int, str], None]


class ConvertError(EngineError):
    """The conversion cannot start or continue; the message says why and what to do."""


# -- the plan -------------------------------------------------------------------------
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
                    paths[_base_name(job.path)] = job.fmt.to_dict()
        return {
            "writer": "ds4router engine convert",
            "format_version": CONVERT_FORMAT,
            "recipe": self.recipe.to_dict(),
            "scales_dtype": "bfloat16",
            "paths": dict(sorted(paths.items())),
        }


def _base_name(path: str) -> str:
    if path.endswith(".moe.experts.gate_up"):
        return path.removesuffix(".moe.experts.gate_up") + ".ffn.experts.gate_up_proj"
    if path.endswith(".moe.experts.down"):
        return path.removesuffix(".moe.experts.down") + ".ffn.experts.down_proj"
    return official_name(path)


def plan_conversion(
    src: str | Path, recipe: Recipe, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> ConversionPlan:
    """Check ``src`` and plan every output tensor, shard and offset (reads headers only)."""
    from local_engine.checkpoint.loader import inventory

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
    base = _base_name(path)
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
                f"tensor {_base_name(job.path)} needs {need / GB:.2f} GB, more than the shard"
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
    header: dict[str, Any] = {
        "__metadata__": {"format": "mlx", "writer": "ds4router engine convert"}
    }
    rel: dict[str, int] = {}
    offset = 0
    for job in jobs:
        for entry, stored in zip(job.entries, job.names, strict=True):
            header[stored] = {
                "dtype": entry.dtype,
                "shape": list(entry.shape),
                "data_offsets": [offset, offset + entry.nbytes],
            }
            rel[stored] = offset
            offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    head = len(blob).to_bytes(8, "little") + blob
    return ShardPlan(
        name, tuple(jobs), head, {k: len(head) + v for k, v in rel.items()}, len(head) + offset
    )


# -- identity of a source and of a destination ----------------------------------------
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


@dataclass
class _State:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, dst: Path) -> _State | None:
        path = dst / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("shards"), dict):
            raise ConvertError(
                f"{path} is unreadable, so {dst} cannot be trusted; delete {dst} and convert again"
            ) from None
        return cls(path, data)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(16 << 20):
            h.update(block)
    return h.hexdigest()


def _check_destination(dst: Path, plan: ConversionPlan, resume: bool) -> _State:
    if dst.exists() and not dst.is_dir():
        raise ConvertError(f"{dst} is a file; give a directory to write the converted model in")
    dst.mkdir(parents=True, exist_ok=True)
    state = _State.read(dst)
    if state is None:
        if any(dst.iterdir()):
            what = "a model" if (dst / "config.json").exists() else "files"
            raise ConvertError(
                f"{dst} already holds {what} that `ds4router engine convert` did not write;"
                " refusing to write over it: choose a new or empty directory"
            )
        return _State(dst / STATE_FILE, _fresh_state(plan))
    data = state.data
    old_recipe = (data.get("recipe") or {}).get("name", "?")
    if data.get("source_id") != plan.source_id:
        raise ConvertError(
            f"{dst} holds a conversion of a different model (from {data.get('source', '?')},"
            f" recipe {old_recipe}); refusing to write over it: choose a new directory or"
            f" delete {dst}"
        )
    if data.get("options_id") != plan.options_id:
        raise ConvertError(
            f"{dst} holds a conversion of this model with other options (recipe {old_recipe},"
            f" shard limit {data.get('max_shard_bytes', '?')} bytes); rerun with those options"
            " to resume it, or choose a new directory"
        )
    done = len(data["shards"])
    if not resume:
        if data.get("complete"):
            raise ConvertError(
                f"{dst} already holds this conversion, complete; pass --resume to verify it"
            )
        raise ConvertError(
            f"{dst} holds an unfinished conversion of this model ({done} of"
            f" {len(plan.shards)} shards written); pass --resume to continue it"
        )
    return state


def _fresh_state(plan: ConversionPlan) -> dict[str, Any]:
    return {
        "format": CONVERT_FORMAT,
        "source": str(plan.src),
        "source_id": plan.source_id,
        "options_id": plan.options_id,
        "recipe": plan.recipe.to_dict(),
        "max_shard_bytes": None,
        "planned": [s.name for s in plan.shards],
        "shards": {},
        "complete": False,
    }


# -- reading source rows ----------------------------------------------------------------
class _Reader:
    """``pread`` row blocks of source tensors (no mmap: pages we read are not kept mapped,
    so resident memory stays what we hold, and the peak we report is honest)."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def rows(self, info: TensorInfo, a: int, b: int) -> np.ndarray:
        dtype = RAW_DTYPES[info.dtype]
        width = info.shape[-1] if info.shape else 1
        row_bytes = width * dtype.itemsize
        fd = self._fds.get(info.file)
        if fd is None:
            fd = self._fds[info.file] = os.open(info.file, os.O_RDONLY)
        want, start = (b - a) * row_bytes, info.start + a * row_bytes
        buf = bytearray(want)
        view = memoryview(buf)
        got = 0
        while got < want:
            n = os.preadv(fd, [view[got:]], start + got)
            if n <= 0:
                raise ConvertError(f"{info.file}: ends early while reading {info.name!r}")
            got += n
        return np.frombuffer(buf, dtype=dtype).reshape(b - a, width)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _scale_codes(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.dtype == "F32":
        return float_to_e8m0(raw, where=f"{info.file.name}: tensor {info.name!r}")
    return raw.view(np.uint8)


def _mx_codes(
    reader: _Reader, src: RowSource, a: int, b: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(codes, per-32 E8M0 scales, mode) of rows [a, b) of an FP8 or FP4 source."""
    assert src.scale is not None
    info, sinfo = src.info, src.scale
    codes = reader.rows(info, a, b)
    if info.dtype == "F8_E4M3":
        inp = info.shape[-1]
        b0, b1 = a // FP8_BLOCK, -(-b // FP8_BLOCK)
        blocks = _scale_codes(reader.rows(sinfo, b0, b1), sinfo)
        per_row = np.repeat(blocks, FP8_BLOCK, axis=0)[a - b0 * FP8_BLOCK : b - b0 * FP8_BLOCK]
        scales = np.repeat(per_row, FP8_BLOCK // MX_GROUP, axis=1)[:, : inp // MX_GROUP]
        return codes, scales, MXFP8
    return codes, _scale_codes(reader.rows(sinfo, a, b), sinfo), MXFP4


def _decode(reader: _Reader, src: RowSource, a: int, b: int, want_f32: bool) -> Any:
    """Rows [a, b) as an ``mx.array`` (bf16, or f32 when ``want_f32``); exact for FP8/FP4."""
    import mlx.core as mx

    target = mx.float32 if want_f32 else mx.bfloat16
    info = src.info
    if info.dtype in _FLOAT_SOURCES:
        raw = reader.rows(info, a, b)
        if info.dtype == "F64":
            raw = raw.astype(np.float32)
        arr = mx.array(raw).view(mx.bfloat16) if info.dtype == "BF16" else mx.array(raw)
        return arr.astype(target)
    if src.scale is None:
        raise ConvertError(
            f"{info.file.name}: tensor {info.name!r} is {info.dtype} without a scale"
        )
    codes, scales, mode = _mx_codes(reader, src, a, b)
    words = np.ascontiguousarray(codes.view(np.uint8)).view(np.uint32)
    return mx.dequantize(
        mx.array(words),
        mx.array(np.ascontiguousarray(scales)),
        None,
        group_size=MX_GROUP,
        bits=8 if mode == MXFP8 else 4,
        mode=mode,
        dtype=target,
    )


def _encode(reader: _Reader, job: Job, src: RowSource, a: int, b: int) -> dict[str, np.ndarray]:
    fmt = job.fmt
    if fmt is None:  # the hash table, as int32
        return {WEIGHT: reader.rows(src.info, a, b).astype(np.int32)}
    exact = {"F8_E4M3": MXFP8, "I8": MXFP4, "U8": MXFP4}.get(src.info.dtype)
    if exact is not None and fmt.kind == exact and src.scale is not None:
        codes, scales, mode = _mx_codes(reader, src, a, b)
        return mx_quantized_rows(codes, scales, mode)  # the release's bytes, not re-quantized
    return encode_rows(_decode(reader, src, a, b, want_f32=fmt.kind == F32), fmt)


def _chunk_rows(src: RowSource) -> int:
    width = src.info.shape[-1] if src.info.shape else 1
    rows = max(FP8_BLOCK, CHUNK_BYTES // (4 * width) // FP8_BLOCK * FP8_BLOCK)
    return min(rows, src.rows)


# -- writing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Piece:
    offset: int
    length: int
    digest: bytes


def _write_shard(
    path: Path,
    shard: ShardPlan,
    reader: _Reader,
    on_bytes: Callable[[int, str], None],
) -> list[_Piece]:
    import mlx.core as mx

    pieces = [_Piece(0, len(shard.header), hashlib.blake2b(shard.header).digest())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, shard.size)
        os.pwrite(fd, shard.header, 0)
        for job in shard.jobs:
            what = _base_name(job.path)
            for out_row0, src in job.sources:
                step = _chunk_rows(src)
                for a in range(0, src.rows, step):
                    b = min(src.rows, a + step)
                    encoded = _encode(reader, job, src, src.row0 + a, src.row0 + b)
                    for entry, stored in zip(job.entries, job.names, strict=True):
                        data = np.ascontiguousarray(encoded[entry.suffix])
                        if data.nbytes != (b - a) * entry.row_bytes:
                            raise ConvertError(
                                f"internal error: {stored} rows {a}:{b} encoded to"
                                f" {data.nbytes} bytes, planned {(b - a) * entry.row_bytes}"
                            )
                        at = shard.offsets[stored] + (out_row0 + a) * entry.row_bytes
                        blob = data.tobytes()
                        written = os.pwrite(fd, blob, at)
                        if written != len(blob):
                            raise ConvertError(f"{path}: short write (disk full?)")
                        pieces.append(_Piece(at, len(blob), hashlib.blake2b(blob).digest()))
                    on_bytes(src.source_bytes * (b - a) // max(1, src.rows), what)
            mx.clear_cache()
        os.fsync(fd)
    finally:
        os.close(fd)
    return pieces


def _verify_written(path: Path, shard: ShardPlan, pieces: list[_Piece]) -> str:
    """Read the shard back: its header must be the plan's and every block what we wrote.
    Returns the file's sha256."""
    infos, _ = read_header(path)
    planned = {stored for job in shard.jobs for stored in job.names}
    if set(infos) != planned or path.stat().st_size != shard.size:
        raise ConvertError(f"{path}: written shard does not match its plan (disk error?)")
    h = hashlib.sha256()
    expect = 0
    with path.open("rb") as f:
        for piece in sorted(pieces, key=lambda p: p.offset):
            if piece.offset != expect:
                raise ConvertError(f"{path}: bytes {expect}..{piece.offset} were never written")
            f.seek(piece.offset)
            blob = f.read(piece.length)
            if hashlib.blake2b(blob).digest() != piece.digest:
                raise ConvertError(
                    f"{path}: bytes at {piece.offset} differ from what was written (disk error?);"
                    " run the conversion again with --resume"
                )
            h.update(blob)
            expect = piece.offset + piece.length
    if expect != shard.size:
        raise ConvertError(f"{path}: the end of the shard was never written")
    return h.hexdigest()


# -- the conversion ------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote and what it cost."""

    dst: Path
    recipe: str
    shards: tuple[str, ...]
    tensor_bytes: int
    file_bytes: int
    source_bytes: int
    seconds: float
    shards_written: int
    shards_verified: int  # finished earlier, checked on resume
    peak_rss_bytes: int
    ram_bound_bytes: int
    largest_source_tensor_bytes: int

    @property
    def within_ram_bound(self) -> bool:
        return self.peak_rss_bytes <= self.ram_bound_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "dst": str(self.dst),
            "recipe": self.recipe,
            "shards": list(self.shards),
            "tensor_bytes": self.tensor_bytes,
            "file_bytes": self.file_bytes,
            "source_bytes": self.source_bytes,
            "seconds": round(self.seconds, 3),
            "shards_written": self.shards_written,
            "shards_verified": self.shards_verified,
            "peak_rss_bytes": self.peak_rss_bytes,
            "ram_bound_bytes": self.ram_bound_bytes,
            "largest_source_tensor_bytes": self.largest_source_tensor_bytes,
            "within_ram_bound": self.within_ram_bound,
        }


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (the OS's high-water mark).

    Linux: ``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` there survives ``exec`` and
    so may report the parent's size at ``fork`` (a CLI started from a big process).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def convert(
    src: str | Path,
    dst: str | Path,
    recipe: Recipe,
    *,
    resume: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Progress | None = None,
) -> ConvertResult:
    """Convert ``src`` (official layout) to ``recipe`` in ``dst``; see the module docstring.

    ``progress(done, total, what)`` is called as source bytes are processed; an
    exception it raises (e.g. ``KeyboardInterrupt``) stops the conversion, which
    ``resume=True`` continues later.
    """
    import mlx.core as mx

    started = time.perf_counter()
    plan = plan_conversion(src, recipe, max_shard_bytes=max_shard_bytes)
    out = Path(dst).expanduser().resolve()
    if out == plan.src:
        raise ConvertError("DST must differ from SRC")
    state = _check_destination(out, plan, resume)
    state.data["max_shard_bytes"] = max_shard_bytes
    state.save()  # from now on the directory is ours, resumable
    for stale in out.glob("*.partial"):
        stale.unlink()  # an interrupted shard: written again from its start
    total = plan.source_bytes
    done = 0
    verified = written = 0
    report = progress or (lambda d, t, w: None)
    for shard in plan.shards:
        path = out / shard.name
        record = state.data["shards"].get(shard.name)
        if record is not None and path.exists():
            if path.stat().st_size != record["bytes"] or _file_sha256(path) != record["sha256"]:
                raise ConvertError(
                    f"{path} is corrupt (its size or sha256 differs from the one recorded when it"
                    " was written); delete that file and run again with --resume to rewrite it"
                )
            verified += 1
            done += shard.source_bytes
            report(done, total, f"verified {shard.name}")
            continue
        state.data["shards"].pop(shard.name, None)
        partial = out / (shard.name + ".partial")

        def on_bytes(n: int, what: str) -> None:
            nonlocal done
            done += n
            report(done, total, what)

        reader = _Reader()
        try:
            pieces = _write_shard(partial, shard, reader, on_bytes)
        finally:
            reader.close()
        digest = _verify_written(partial, shard, pieces)
        os.replace(partial, path)
        state.data["shards"][shard.name] = {"bytes": shard.size, "sha256": digest}
        state.save()
        written += 1
        mx.clear_cache()
    _finish(out, plan)
    state.data["complete"] = True
    state.save()
    return ConvertResult(
        dst=out,
        recipe=recipe.name,
        shards=tuple(s.name for s in plan.shards),
        tensor_bytes=plan.tensor_bytes,
        file_bytes=sum(s.size for s in plan.shards),
        source_bytes=total,
        seconds=time.perf_counter() - started,
        shards_written=written,
        shards_verified=verified,
        peak_rss_bytes=peak_rss_bytes(),
        ram_bound_bytes=plan.ram_bound_bytes,
        largest_source_tensor_bytes=plan.largest_source_tensor,
    )


# Files beside the weights that describe the source's encoding and no longer apply.
_DROPPED_CONFIG_KEYS = ("quantization_config", "expert_dtype")


def _finish(out: Path, plan: ConversionPlan) -> None:
    """Index, tokenizer and other side files, then config.json (last: it makes a model)."""
    weight_map = {
        stored: shard.name for shard in plan.shards for job in shard.jobs for stored in job.names
    }
    index = {
        "metadata": {"total_size": plan.tensor_bytes},
        "weight_map": dict(sorted(weight_map.items())),
    }
    _atomic_write(out / INDEX_FILE, json.dumps(index, indent=1) + "\n")
    for item in sorted(plan.src.iterdir()):
        skip = item.suffix == ".safetensors" or item.name in ("config.json", INDEX_FILE)
        if item.is_file() and not skip and not item.name.startswith("."):
            shutil.copyfile(item, out / item.name)
    config = {k: v for k, v in plan.raw_config.items() if k not in _DROPPED_CONFIG_KEYS}
    config["torch_dtype"] = "bfloat16"
    config[QUANT_SECTION] = plan.quantization_section()
    _atomic_write(out / "config.json", json.dumps(config, indent=2) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def iter_plan_entries(plan: ConversionPlan) -> Iterator[tuple[str, Entry, Job]]:
    """Every stored entry of a plan, with its job (for reports and the memory plan's tests)."""
    for shard in plan.shards:
        for job in shard.jobs:
            for entry, stored in zip(job.entries, job.names, strict=True):
                yield stored, entry, job


def expand_to_float(src: str | Path, dst: str | Path) -> Path:
    """Write the float32 twin of a converted directory: the recipe's values, dequantized.

    Loading it gives the converted model's function with dense weights: comparing
    the two checks the quantized kernels; comparing it with the original isolates
    the recipe's rounding error.
    """
    from local_engine.checkpoint.names import parse_name
    from local_engine.checkpoint.quantize import dequantize_entries
    from local_engine.checkpoint.safetensors import iter_tensors, write_safetensors

    src_dir, out = Path(src), Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    raw = read_config_json(src_dir)
    formats = quantized_paths(raw)
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    for shard in list_shards(src_dir):
        for info, arr in iter_tensors(shard):
            tensors[info.name] = (info.dtype, arr)

    def decoded() -> Iterator[tuple[str, str, np.ndarray]]:
        # Small models only: every tensor is held at once.
        for name in sorted(tensors):
            dtype, arr = tensors[name]
            parsed = parse_name(name)
            assert parsed is not None
            fmt = formats.get(parsed.path)
            if fmt is None:
                if dtype == "BF16":
                    yield name, "F32", (arr.astype(np.uint32) << 16).view(np.float32)
                else:
                    yield name, dtype, arr
                continue
            if parsed.part != WEIGHT:
                continue
            base = name.removesuffix(".weight")
            parts = {WEIGHT: arr}
            for suffix in ("scales", "biases"):
                if f"{base}.{suffix}" in tensors:
                    parts[suffix] = tensors[f"{base}.{suffix}"][1]
            yield name, "F32", dequantize_entries(parts, fmt)

    config = {k: v for k, v in raw.items() if k != QUANT_SECTION}
    config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(out / "model.safetensors", {n: (d, a) for n, d, a in decoded()})
    return out


__all__ = [
    "CONVERT_FORMAT",
    "ConversionPlan",
    "ConvertError",
    "ConvertResult",
    "DEFAULT_MAX_SHARD_BYTES",
    "STATE_FILE",
    "convert",
    "expand_to_float",
    "iter_plan_entries",
    "peak_rss_bytes",
    "plan_conversion",
]
