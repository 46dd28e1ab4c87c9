"""Read and write ``.safetensors`` files ourselves, byte for byte.

The official checkpoint stores FP8 e4m3 weights, E8M0 scales and packed FP4
bytes, which common loaders either reject or convert. We parse the header
(8-byte little-endian length, JSON, raw data), memory-map the file and hand out
raw numpy views, so every encoding reaches the converter untouched. Files are
opened one at a time and a tensor's bytes are only read when asked for.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.errors import CheckpointError

# safetensors dtype -> the numpy dtype we read its raw bytes as. Formats numpy
# lacks (bf16, fp8, e8m0) come out as unsigned integers of the same width.
RAW_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "F8_E8M0": np.dtype("u1"),
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and how it is encoded."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos and ``__metadata__`` of one file (reads only the header)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > 100_000_000:
                raise CheckpointError(f"{path}: header length {length} is implausible")
            raw = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    base = 8 + length
    size = path.stat().st_size
    meta = header.pop("__metadata__", None) or {}
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        dtype = entry.get("dtype")
        if dtype not in RAW_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        shape = tuple(int(d) for d in entry.get("shape", []))
        start, end = (int(o) for o in entry["data_offsets"])
        count = 1
        for d in shape:
            count *= d
        if end - start != count * RAW_DTYPES[dtype].itemsize or base + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({dtype} {list(shape)}) has inconsistent data offsets"
                " (truncated or corrupt file?)"
            )
        infos[name] = TensorInfo(name, path, dtype, shape, base + start, base + end)
    return infos, {str(k): str(v) for k, v in meta.items()}


class SafetensorsFile:
    """One memory-mapped file; ``read`` returns raw numpy copies of tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.infos, self.metadata = read_header(path)
        self._file = path.open("rb")
        size = path.stat().st_size
        self._map = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ) if size else None

    def read(self, name: str) -> np.ndarray:
        info = self.infos[name]
        raw_dtype = RAW_DTYPES[info.dtype]
        if self._map is None or info.end == info.start:
            return np.zeros(info.shape, dtype=raw_dtype)
        buf = np.frombuffer(
            self._map, dtype=np.uint8, count=info.end - info.start, offset=info.start
        )
        return buf.view(raw_dtype).reshape(info.shape).copy()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._file.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_shards(model_dir: Path) -> list[Path]:
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{model_dir}: no *.safetensors files found")
    return shards


def iter_tensors(path: Path) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """Every tensor of one file, read one at a time."""
    with SafetensorsFile(path) as f:
        for name, info in f.infos.items():
            yield info, f.read(name)


def write_safetensors(
    path: Path,
    tensors: Mapping[str, tuple[str, np.ndarray]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``{name: (safetensors dtype, raw numpy array)}`` in sorted-name order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    order = sorted(tensors)
    for name in order:
        dtype, arr = tensors[name]
        want = RAW_DTYPES[dtype]
        if arr.dtype.itemsize != want.itemsize:
            raise ValueError(f"{name}: raw array itemsize {arr.dtype.itemsize} != {dtype}")
        n = arr.nbytes
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in order:
            f.write(np.ascontiguousarray(tensors[name][1]).tobytes())
