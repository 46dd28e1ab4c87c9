"""Reading text whose encoding nobody promised: files, stdin, attachments.

:func:`read_text_any` takes a path or raw bytes and returns ``(text, encoding)``:

1. a byte-order mark decides (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE);
2. otherwise strict UTF-8, which almost every file today is;
3. otherwise charset-normalizer's detection (the maintained library for this;
   no hand-written statistics here). On a short text several legacy code pages
   decode about equally cleanly; Windows-1252 is taken when it reads the bytes
   with hardly more "chaos" than the detector's best guess, because a
   Western-European file is by far the most common non-UTF-8 input (``café``
   would otherwise read as ``cp1006``).

Bytes that decode to control characters (NUL, escape bytes of a binary file)
are not text: :class:`UndecodableText` names the source and says what to do.
This module sits in ``pricing`` because it is the lowest layer both the app and
the price sheets may import (DESIGN.md: pricing knows nothing of ds4router);
``ds4router.textio`` is the app's face of it.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from pricing.errors import PricingError

# Longest first: UTF-32 LE's BOM starts with UTF-16 LE's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# What text never holds: C0 controls other than tab, newlines, form feed and
# escape (ANSI colours in pasted logs), and DEL.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
# Preferred among equally clean guesses (see the module docstring).
_PREFERRED = "cp1252"
# How much more "chaos" Windows-1252 may show than the best guess and still win:
# a euro sign or a lone symbol in a short Western text costs about 0.04, while
# Polish read as Windows-1252 (``Za¿ó³æ``) costs 0.06 and more.
_WESTERN_MARGIN = 0.05


class UndecodableText(PricingError):
    """Input that is not text in any encoding we can recognise."""


def read_text_any(source: Path | bytes, name: str | None = None) -> tuple[str, str]:
    """The text of ``source`` (a file, or bytes from ``name``) and the encoding read.

    Raises :class:`UndecodableText` naming the file (or ``name``) for binary or
    undecodable input, and ``OSError`` when a file cannot be read.
    """
    if isinstance(source, Path):
        data = source.read_bytes()
        label = name or str(source)
    else:
        data = bytes(source)
        label = name or "input"
    return decode_text(data, label)


def decode_text(data: bytes, label: str) -> tuple[str, str]:
    """``data`` decoded (see the module docstring); ``label`` names it in the error."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data[len(bom) :].decode(encoding), encoding, label)
            except UnicodeDecodeError:
                raise _undecodable(label, f"it starts with a {encoding} mark but is not") from None
    try:
        return _checked(data.decode("utf-8"), "utf-8", label)
    except UnicodeDecodeError:
        pass
    # Detection may still find UTF-16/32 without a mark; binary fails the check below.
    text, encoding = _detect(data, label)
    return _checked(text, encoding, label)


def _detect(data: bytes, label: str) -> tuple[str, str]:
    from charset_normalizer import from_bytes  # imported when UTF-8 failed, rarely

    results = list(from_bytes(data))
    if not results:
        raise _undecodable(label, "no known encoding reads it")
    # Without a mark, "UTF-16/32" is the detector's reading of any even-length bytes; a
    # real one from a tool that writes no BOM is mostly ASCII, so it holds NUL bytes.
    readable = [m for m in results if not _unmarked_wide(m.encoding, str(m), data)]
    if not readable:
        raise _undecodable(label, "it holds binary data")
    best = readable[0]
    western = from_bytes(data, cp_isolation=[_PREFERRED]).best()
    if western is not None and western.chaos <= best.chaos + _WESTERN_MARGIN:
        return str(western), western.encoding
    return str(best), best.encoding


def _unmarked_wide(encoding: str, text: str, data: bytes) -> bool:
    return encoding.startswith(("utf_16", "utf_32")) and (
        b"\x00" not in data or not _mostly_ascii(text)
    )


def _mostly_ascii(text: str) -> bool:
    return sum(ch < "\x80" for ch in text) * 2 >= len(text)


def _checked(text: str, encoding: str, label: str) -> tuple[str, str]:
    if _NOT_TEXT.search(text):
        raise _undecodable(label, "it holds binary data")
    return text, encoding


def _undecodable(label: str, why: str) -> UndecodableText:
    return UndecodableText(f"{label}: not readable as text ({why}); save it as UTF-8 text")


__all__ = ["UndecodableText", "decode_text", "read_text_any"]
