"""One KV cache entry on disk (``*.kvc``, version 1): its values, its file format, its checks.

File format::

    magic "DS4KVC\\0\\0" | u32 format | u32 header length | u32 header crc32 | u32 0
    header JSON (fingerprint, key, tokens, ints, sections with dtype, shape,
                 offset, length and crc32 each, data length)
    padding to 64 bytes, then the sections' bytes

:func:`encode_entry` lays an entry out; :func:`read_entry` reads one back with a
single read and checks every size, checksum, the fingerprint and the key, raising
:class:`EntryDamaged` with the reason. Where files live, the index and eviction are
:mod:`local_engine.cache.kv_store`'s. This module is numpy-only (no mlx).

It is not safetensors: a KV entry needs per-section checksums and its own header
fields, which a safetensors header has no place for.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"DS4KVC\x00\x00"
FILE_FORMAT = 1
ALIGN = 64
_PREAMBLE = struct.Struct("<8sIIII")
TOKENS_SECTION = "_token_ids"
LOGITS_SECTION = "_logits"

_DTYPES: dict[str, tuple[str, int]] = {
    # name -> (numpy storage dtype, bytes); bfloat16 travels as its uint16 bit pattern.
    "float32": ("<f4", 4),
    "float16": ("<f2", 2),
    "bfloat16": ("<u2", 2),
    "int32": ("<i4", 4),
    "int64": ("<i8", 8),
    "uint16": ("<u2", 2),
    "uint32": ("<u4", 4),
    "uint8": ("u1", 1),
}


class EntryDamaged(Exception):
    """An entry file failed a check; the message says which."""


@dataclass(frozen=True)
class RawArray:
    """An array to write: dtype name, shape, and an object numpy can read (buffer protocol).

    ``data`` must already be computed: the writer thread only reads its bytes.
    """

    dtype: str
    shape: tuple[int, ...]
    data: Any


@dataclass(frozen=True)
class EntryInfo:
    """One entry as the index knows it."""

    key: str
    fingerprint: str
    anchor: str
    tokens: int
    nbytes: int
    file: str  # relative to the store root
    created: float
    last_used: float
    hits: int = 0

    def score(self, now: float) -> float:
        """Eviction value: the lowest goes first (see the module docstring)."""
        age_h = max(0.0, now - self.last_used) / 3600.0
        return (1 + self.hits) / (1 + age_h) / math.sqrt(1 + self.nbytes / 2**20)


@dataclass(frozen=True)
class StoredState:
    """An entry read back and verified: what the engine restores from."""

    info: EntryInfo
    token_ids: np.ndarray
    arrays: Mapping[str, np.ndarray]  # storage views (bfloat16 as uint16)
    dtypes: Mapping[str, str]  # section name -> dtype name
    ints: Mapping[str, int]
    logits: np.ndarray
    read_s: float


@dataclass(frozen=True)
class EncodedEntry:
    """An entry laid out for writing: ``head`` (preamble, header, padding), then ``sections``."""

    head: bytes
    sections: tuple[memoryview, ...]
    total: int  # bytes of the whole file


def encode_entry(
    fingerprint: str,
    key: str,
    token_ids: np.ndarray,
    arrays: Mapping[str, RawArray],
    ints: Mapping[str, int],
    logits: RawArray,
) -> EncodedEntry:
    """The file of one entry: the state's arrays (sorted), the token ids and the logits."""
    n = len(token_ids)
    views: list[memoryview] = []
    meta = []
    offset = 0
    for name, raw in [
        *sorted(arrays.items()),
        (TOKENS_SECTION, RawArray("int32", (n,), token_ids)),
        (LOGITS_SECTION, logits),
    ]:
        if raw.dtype not in _DTYPES:
            raise ValueError(f"cannot store dtype {raw.dtype} ({name})")
        store_dtype, _ = _DTYPES[raw.dtype]
        data = np.ascontiguousarray(np.asarray(raw.data).view(store_dtype).reshape(raw.shape))
        view = data.reshape(-1).view(np.uint8).data
        views.append(view)
        meta.append(
            {
                "name": name,
                "dtype": raw.dtype,
                "shape": list(raw.shape),
                "offset": offset,
                "nbytes": len(view),
                "crc32": zlib.crc32(view),
            }
        )
        offset += len(view)
    header = json.dumps(
        {
            "format": FILE_FORMAT,
            "fingerprint": fingerprint,
            "key": key,
            "tokens": n,
            "created": time.time(),
            "ints": {k: int(v) for k, v in sorted(ints.items())},
            "sections": meta,
            "data_bytes": offset,
        },
        separators=(",", ":"),
    ).encode()
    start = _align(_PREAMBLE.size + len(header))
    preamble = _PREAMBLE.pack(MAGIC, FILE_FORMAT, len(header), zlib.crc32(header), 0)
    pad = bytes(start - len(preamble) - len(header))
    return EncodedEntry(preamble + header + pad, tuple(views), start + offset)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _parse_preamble(raw: bytes, size: int) -> tuple[int, int]:
    if len(raw) < _PREAMBLE.size:
        raise EntryDamaged(f"truncated: {size} bytes, shorter than the file preamble")
    magic, fmt, header_len, header_crc, _ = _PREAMBLE.unpack(raw[: _PREAMBLE.size])
    if magic != MAGIC:
        raise EntryDamaged("not a KV cache entry (bad magic bytes)")
    if fmt != FILE_FORMAT:
        raise EntryDamaged(f"file format {fmt}, this engine reads {FILE_FORMAT}")
    if _PREAMBLE.size + header_len > size:
        raise EntryDamaged(f"truncated: {size} bytes, the header alone needs more")
    return header_len, header_crc


def _decode_header(body: bytes, crc: int) -> dict[str, Any]:
    if zlib.crc32(body) != crc:
        raise EntryDamaged("header checksum mismatch")
    try:
        header = json.loads(body)
        for key in ("fingerprint", "key", "tokens", "ints", "sections", "data_bytes"):
            header[key]  # noqa: B018 -- presence check
    except (ValueError, KeyError, TypeError) as exc:
        raise EntryDamaged(f"unreadable header ({exc})") from None
    return dict(header)


def read_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(_PREAMBLE.size)
        header_len, crc = _parse_preamble(head, size)
        header = _decode_header(fh.read(header_len), crc)
    expected = _align(_PREAMBLE.size + header_len) + int(header["data_bytes"])
    if size != expected:
        raise EntryDamaged(f"truncated or padded: {size} bytes, expected {expected}")
    return header


def tokens_from(path: Path, header: Mapping[str, Any]) -> np.ndarray:
    """Just the token-id section (for rebuilding the index)."""
    for sec in header["sections"]:
        if sec["name"] == TOKENS_SECTION:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                header_len, _ = _parse_preamble(fh.read(_PREAMBLE.size), size)
                fh.seek(_align(_PREAMBLE.size + header_len) + int(sec["offset"]))
                raw = fh.read(int(sec["nbytes"]))
            if len(raw) != int(sec["nbytes"]) or zlib.crc32(raw) != int(sec["crc32"]):
                raise EntryDamaged("token id section checksum mismatch")
            return np.frombuffer(raw, dtype="<i4").copy()
    raise EntryDamaged("no token id section")


def read_entry(path: Path, info: EntryInfo, fingerprint: str) -> StoredState:
    """Read a whole entry with one read and check everything; raises EntryDamaged."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
    if got != size:
        raise EntryDamaged(f"truncated while reading: {got} of {size} bytes")
    header_len, crc = _parse_preamble(bytes(view[: _PREAMBLE.size]), size)
    header = _decode_header(bytes(view[_PREAMBLE.size : _PREAMBLE.size + header_len]), crc)
    start = _align(_PREAMBLE.size + header_len)
    if size != start + int(header["data_bytes"]):
        raise EntryDamaged(f"truncated: {size} bytes, expected {start + int(header['data_bytes'])}")
    if header["fingerprint"] != fingerprint:
        raise EntryDamaged("it was written for another model (fingerprint differs)")
    if header["key"] != info.key or int(header["tokens"]) != info.tokens:
        raise EntryDamaged("its header does not match the index")
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for sec in header["sections"]:
        name, dtype = str(sec["name"]), str(sec["dtype"])
        if dtype not in _DTYPES:
            raise EntryDamaged(f"section {name} has unknown dtype {dtype}")
        store_dtype, width = _DTYPES[dtype]
        shape = tuple(int(s) for s in sec["shape"])
        lo, nbytes = start + int(sec["offset"]), int(sec["nbytes"])
        if nbytes != math.prod(shape) * width or lo + nbytes > size:
            raise EntryDamaged(f"section {name} does not fit its shape")
        chunk = view[lo : lo + nbytes]
        if zlib.crc32(chunk) != int(sec["crc32"]):
            raise EntryDamaged(f"checksum mismatch in section {name}")
        flat = np.frombuffer(buf, dtype=store_dtype, count=math.prod(shape), offset=lo)
        arrays[name] = flat.reshape(shape)
        dtypes[name] = dtype
    tokens = arrays.pop(TOKENS_SECTION, None)
    logits = arrays.pop(LOGITS_SECTION, None)
    if tokens is None or logits is None:
        raise EntryDamaged("token ids or logits are missing")
    if len(tokens) != info.tokens:
        raise EntryDamaged(f"holds {len(tokens)} token ids, the index says {info.tokens}")
    dtypes.pop(TOKENS_SECTION)
    dtypes.pop(LOGITS_SECTION)
    ints = {str(k): int(v) for k, v in header["ints"].items()}
    return StoredState(info, tokens, arrays, dtypes, ints, logits, 0.0)
