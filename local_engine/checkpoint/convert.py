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

The plan is :mod:`local_engine.checkpoint.convert_plan`'s; reading, encoding and
writing a shard's rows is :mod:`local_engine.checkpoint.convert_rows`'s; this module
keeps the destination's state and runs the shards in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.checkpoint.convert_plan import (
    CONVERT_FORMAT,
    DEFAULT_MAX_SHARD_BYTES,
    ConversionPlan,
    ConvertError,
    iter_plan_entries,
    plan_conversion,
)
from local_engine.checkpoint.convert_rows import verify_written, write_shard
from local_engine.checkpoint.quantize import QUANT_SECTION, WEIGHT, quantized_paths
from local_engine.checkpoint.recipes import Recipe
from local_engine.checkpoint.safetensors import RowReader, list_shards
from local_engine.model.config import read_config_json

STATE_FILE = ".ds4router-convert.json"
INDEX_FILE = "model.safetensors.index.json"

Progress = Callable[[int, int, str], None]


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

        reader = RowReader()
        try:
            pieces = write_shard(partial, shard, reader, on_bytes)
        finally:
            reader.close()
        digest = verify_written(partial, shard, pieces)
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
