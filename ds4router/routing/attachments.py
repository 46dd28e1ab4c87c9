"""An attached file's bytes as text to scan: any encoding, inside archives, or unreadable.

The encoding is detected (byte-order marks, UTF-8, then charset-normalizer: see
``pricing.textio``), so a UTF-16 ``.env`` is scanned as the text it is. gzip, bzip2
and xz files are decompressed and zip archives opened (members up to a total size),
and their contents read the same way. Bytes that are not text in any encoding are
``unreadable``: the request is then at least ``privacy.unreadable``, and the
printable strings in them (as ``strings(1)`` would show) are still scanned.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import zipfile
from dataclasses import dataclass

from pricing.textio import UndecodableText, decode_text

MAX_EXPANDED_BYTES = 16 * 1024 * 1024  # a bomb stops here; what is past it counts unreadable
MAX_MEMBERS = 200
_STRINGS = re.compile(rb"[\x20-\x7e\t]{6,}")


@dataclass(frozen=True)
class Decoded:
    text: str
    unreadable: bool  # some of it could not be read as text
    how: str = ""  # "utf-16-le", "gzip: utf-8", "zip: 3 members" ...


def decode_attachment(data: bytes, label: str) -> Decoded:
    """The text of an attachment's bytes (see the module docstring)."""
    return _decode(data, label, depth=0)


def _decode(data: bytes, label: str, depth: int) -> Decoded:
    if depth < 3:
        match data[:6]:
            case b if b.startswith(b"\x1f\x8b"):
                return _expanded("gzip", gzip.GzipFile(fileobj=io.BytesIO(data)), label, depth)
            case b if b.startswith(b"BZh"):
                return _expanded("bzip2", bz2.BZ2File(io.BytesIO(data)), label, depth)
            case b if b.startswith(b"\xfd7zXZ\x00"):
                return _expanded("xz", lzma.LZMAFile(io.BytesIO(data)), label, depth)
            case b if b.startswith(b"PK\x03\x04") or b.startswith(b"PK\x05\x06"):
                return _zip(data, label, depth)
            case _:
                pass
    try:
        text, encoding = decode_text(data, label)
    except UndecodableText:
        strings = "\n".join(m.group(0).decode("ascii") for m in _STRINGS.finditer(data))
        return Decoded(strings, True, "binary")
    return Decoded(text, False, encoding)


def _expanded(kind: str, stream: io.BufferedIOBase, label: str, depth: int) -> Decoded:
    try:
        inner = stream.read(MAX_EXPANDED_BYTES + 1)
    except (OSError, EOFError, lzma.LZMAError):
        return Decoded("", True, f"{kind}: corrupt")
    decoded = _decode(inner[:MAX_EXPANDED_BYTES], label, depth + 1)
    too_big = len(inner) > MAX_EXPANDED_BYTES
    return Decoded(decoded.text, decoded.unreadable or too_big, f"{kind}: {decoded.how}")


def _zip(data: bytes, label: str, depth: int) -> Decoded:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return Decoded("", True, "zip: corrupt")
    parts: list[str] = []
    unreadable = len(members) > MAX_MEMBERS
    budget = MAX_EXPANDED_BYTES
    for member in members[:MAX_MEMBERS]:
        if member.file_size > budget or member.flag_bits & 0x1:  # too big, or encrypted
            unreadable = True
            continue
        try:
            body = archive.read(member)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, ValueError):
            unreadable = True
            continue
        budget -= len(body)
        inner = _decode(body, f"{label}:{member.filename}", depth + 1)
        unreadable |= inner.unreadable
        parts.append(f"--- {member.filename} ---\n{inner.text}")
    return Decoded("\n".join(parts), unreadable, f"zip: {len(members)} members")
