"""The engine's one reader (and writer) of ``.safetensors`` files.

Every header is parsed here (8-byte little-endian length, JSON, raw data): the
loader's inventory, the engine's memory estimate and the KV fingerprint all read it
through :func:`read_header` / :func:`header_bytes`.

Tensors come two ways (:func:`read_shard`). A shard whose every dtype MLX reads as
itself (floats but F64, integers, bool: what ``ds4router engine convert`` and
``save_pretrained`` write) is opened with ``mx.load``: lazy arrays whose bytes are
read from the file once, when evaluated, with no numpy copy in between. A shard
that holds FP8 e4m3 or E8M0 bytes (the official release: MLX either rejects these
or reads them as plain uint8, depending on its version) or F64 goes through the raw
reader: the file is memory-mapped and each tensor's bytes are copied out as a numpy
array of the same width, so every encoding reaches the loader and the converter
untouched. Files are opened one at a time; a tensor's bytes are read when asked for.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from local_engine.errors import CheckpointError

if TYPE_CHECKING:
    import mlx.core as mx

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

# What mx.load returns as the dtype the header names (F8 comes back as uint8 or not at
# all, F64 not at all): only shards of these dtypes take the mx.load path.
MLX_DTYPES = frozenset(RAW_DTYPES) - {"F64", "F8_E4M3", "F8_E5M2", "F8_E8M0"}

# A tensor as read_shard hands it out: an MLX array (mx.load path) or raw numpy bytes.
Tensor: TypeAlias = "mx.array | np.ndarray"

# No real header comes near this; a larger length means the file is not safetensors.
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and how it is encoded."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def header_bytes(path: Path) -> bytes:
    """The JSON header of one file, as stored (reads nothing else)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header length {length} is implausible")
            raw = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    if len(raw) != length:
        raise CheckpointError(f"{path}: truncated in its header ({len(raw)} of {length} bytes)")
    return raw


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos and ``__metadata__`` of one file (reads only the header)."""
    raw = header_bytes(path)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    base = 8 + len(raw)
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


class RowReader:
    """``pread`` row blocks of tensors viewed as ``[-1, last dim]``, as raw numpy bytes.

    No mmap: pages read are not kept mapped, so resident memory stays what the caller
    holds (the converter reports its peak and promises a bound on it).
    """

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def rows(self, info: TensorInfo, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)`` of ``info``."""
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
                raise CheckpointError(f"{info.file}: ends early while reading {info.name!r}")
            got += n
        return np.frombuffer(buf, dtype=dtype).reshape(b - a, width)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def raw_to_mx(raw: np.ndarray, dtype: str) -> mx.array:
    """Raw bytes of a float or integer tensor as the MLX array they encode (BF16 is read
    as uint16 bits; MLX has no F64, so F64 becomes float32)."""
    import mlx.core as mx

    if dtype == "BF16":
        return mx.array(raw).view(mx.bfloat16)
    return mx.array(raw.astype(np.float32) if dtype == "F64" else raw)


def shard_files(model_dir: Path) -> list[Path]:
    """The ``*.safetensors`` files of a directory, sorted; none is an empty list."""
    return sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())


def list_shards(model_dir: Path) -> list[Path]:
    """The shards of a model directory, sorted; a directory without any is an error."""
    shards = shard_files(model_dir)
    if not shards:
        raise CheckpointError(f"{model_dir}: no *.safetensors files found")
    return shards


def iter_tensors(path: Path) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """Every tensor of one file as raw numpy bytes, read one at a time."""
    with SafetensorsFile(path) as f:
        for name, info in f.infos.items():
            yield info, f.read(name)


def loads_with_mlx(infos: Mapping[str, TensorInfo]) -> bool:
    """Whether a shard of these tensors takes the ``mx.load`` path (see the module doc)."""
    return all(info.dtype in MLX_DTYPES for info in infos.values())


def read_shard(
    path: Path, infos: Mapping[str, TensorInfo] | None = None
) -> Iterator[tuple[TensorInfo, Tensor]]:
    """Every tensor of one shard, in header order: MLX arrays or raw numpy bytes.

    ``infos`` is the shard's header when the caller has read it already.
    """
    if infos is None:
        infos, _ = read_header(path)
    if not loads_with_mlx(infos):
        yield from iter_tensors(path)
        return
    import mlx.core as mx

    try:
        arrays = mx.load(str(path))
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: MLX cannot read this file ({exc})") from exc
    assert isinstance(arrays, dict)
    for name, info in infos.items():
        yield info, arrays[name]


def encode_header(
    entries: Iterable[tuple[str, str, Sequence[int], int]],
    metadata: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, int]]:
    """The header of a file of ``(name, dtype, shape, nbytes)`` tensors laid out in this order.

    Returns the bytes that start the file (8-byte length, JSON padded to keep tensor data
    8-byte aligned) and each tensor's absolute start in the file.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    starts: dict[str, int] = {}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        starts[name] = offset
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    head = struct.pack("<Q", len(blob)) + blob
    return head, {name: len(head) + start for name, start in starts.items()}


def write_safetensors(
    path: Path,
    tensors: Mapping[str, tuple[str, np.ndarray]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``{name: (safetensors dtype, raw numpy array)}`` in sorted-name order."""
    order = sorted(tensors)
    for name in order:
        dtype, arr = tensors[name]
        if arr.dtype.itemsize != RAW_DTYPES[dtype].itemsize:
            raise ValueError(f"{name}: raw array itemsize {arr.dtype.itemsize} != {dtype}")
    head, _ = encode_header(
        (
            (name, tensors[name][0], tensors[name][1].shape, tensors[name][1].nbytes)
            for name in order
        ),
        metadata,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(head)
        for name in order:
            f.write(np.ascontiguousarray(tensors[name][1]).tobytes())
