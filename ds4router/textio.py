"""The app's one way to read text it did not write: files, stdin, attachments, configs.

The decoding itself (byte-order marks, strict UTF-8, then detection) is
:mod:`pricing.textio`, where the price sheets can use it too; here its refusal
becomes a :class:`~ds4router.errors.Ds4RouterError` (one line naming the file or
stdin, exit 2), and stdin is read as bytes so no locale decides for the user.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ds4router.errors import Ds4RouterError
from pricing.textio import UndecodableText, decode_text

STDIN = "stdin"


class UnreadableInput(Ds4RouterError):
    """A file or stdin that is not text, or cannot be read; exit 2."""


def read_text_any(source: Path | bytes, name: str | None = None) -> tuple[str, str]:
    """``(text, encoding)`` of a file or of bytes from ``name``; one clear line otherwise."""
    label = name or (str(source) if isinstance(source, Path) else "input")
    try:
        data = source.read_bytes() if isinstance(source, Path) else bytes(source)
    except OSError as exc:
        raise UnreadableInput(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        return decode_text(data, label)
    except UndecodableText as exc:
        raise UnreadableInput(str(exc)) from None


def read_stdin() -> str:
    """All of stdin as text (any encoding :func:`read_text_any` knows)."""
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
    return read_text_any(data, STDIN)[0]


__all__ = ["STDIN", "UnreadableInput", "read_stdin", "read_text_any"]
