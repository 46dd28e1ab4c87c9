"""Views of a text that undo what hides a secret from a pattern, each mapped back to the text.

A scan runs over the text itself and over these views; a finding in a view is
placed in the original through ``View.span`` (so previews and redaction cover
the original characters):

- ``normalized`` (only for non-ASCII text): NFKC, zero-width characters and soft
  hyphens removed, non-breaking and other Unicode spaces made spaces, and a
  confusables skeleton (Cyrillic and Greek look-alikes read as the Latin letters
  they imitate), so ``pаsswоrd`` with Cyrillic ``а``/``о`` reads ``password``;
- ``escapes``: the lines holding JSON or Python string escapes, decoded
  (``\\"``, ``\\n``, ``\\uXXXX`` ...): a password inside an escaped JSON string or
  a notebook's source;
- ``diff``: the lines of a unified diff without their ``+``/``-``/space marker;
- ``unwrapped``: tokens a terminal wrapped onto the next line, joined again.

Written here rather than taken from a library: the Unicode confusables data (e.g.
the ``confusable-homoglyphs`` package) maps thousands of characters, but what a
scan needs is a reversible, offset-keeping pass over a handful of scripts; the
table below covers the letters of Cyrillic and Greek that render as Latin.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

_DROP = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2061\u2062\u2063\u2064")
_SPACES = frozenset("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                    "\u2009\u200a\u202f\u205f\u3000")  # fmt: skip
_CONFUSABLE = str.maketrans(
    "аеорсухіјѕԁһԛԝɡАВЕКМНОРСТХУІЈЅԌӏαβεικνοραυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhqwgABEKMHOPCTXYIJSGlaBeikvopauxABEZHIKMNOPTYX",
)
_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[nrt\"'\\/bf])")
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\", "/": "/",
           "b": "\b", "f": "\f"}  # fmt: skip
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_MARKER = re.compile(r"\n[+\- ]")
_WRAP_WIDTH = 60  # a line this long that ends inside a token was probably wrapped


@dataclass(frozen=True)
class View:
    """A derived text and where each of its characters came from in the parent text.

    Segment ``i`` starts at view index ``starts[i]`` and parent index ``origins[i]``;
    ``widths[i]`` is 0 for a copied run (one to one) or the number of parent
    characters its single character stands for (a decoded escape).
    """

    name: str
    text: str
    starts: tuple[int, ...] = ()
    origins: tuple[int, ...] = ()
    widths: tuple[int, ...] = ()
    parent: View | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that ``text[start:end]`` was made from."""
        if not self.starts:
            lo, hi = start, end
        else:
            lo = self._origin(start)
            i = bisect_right(self.starts, end - 1) - 1
            width = self.widths[i]
            hi = (
                self.origins[i] + (end - 1 - self.starts[i]) + 1
                if width == 0
                else (self.origins[i] + width)
            )
        return (lo, hi) if self.parent is None else self.parent.span(lo, max(hi, lo + 1))

    def _origin(self, pos: int) -> int:
        i = bisect_right(self.starts, pos) - 1
        if i < 0:
            return 0
        return self.origins[i] + (pos - self.starts[i] if self.widths[i] == 0 else 0)


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.origins: list[int] = []
        self.widths: list[int] = []
        self.size = 0

    def copy(self, text: str, start: int, end: int) -> None:
        if end > start:
            self._segment(text[start:end], start, 0)

    def put(self, value: str, origin: int, width: int) -> None:
        for char in value:
            self._segment(char, origin, width)

    def _segment(self, value: str, origin: int, width: int) -> None:
        self.parts.append(value)
        self.starts.append(self.size)
        self.origins.append(origin)
        self.widths.append(width)
        self.size += len(value)

    def view(self, name: str, parent: View) -> View:
        return View(
            name,
            "".join(self.parts),
            tuple(self.starts),
            tuple(self.origins),
            tuple(self.widths),
            None if parent.name == "text" else parent,
        )


def views(text: str) -> Iterator[View]:
    """The text itself, then each derived view that differs from it.

    Derived views other than ``diff`` hold only the lines they change (each ends
    with a newline): what is unchanged was scanned in the text already.
    """
    base = View("text", text)
    yield base
    if not text.isascii():
        normal = normalized(base)
        if normal is not None:
            yield normal
            base = _full_normalized(text)
    if "\\" in base.text:
        decoded = escapes(base)
        if decoded is not None:
            yield decoded
    if _is_diff(base.text):
        base = diff(base)
        yield base
    if "\n" in base.text:
        joined = unwrapped(base)
        if joined is not None:
            yield joined


def _is_diff(text: str) -> bool:
    """A unified diff has a hunk header at a line start. ('@' is rare, so the search is
    fast; a MULTILINE regex would try every position of the text.)"""
    pos = text.find("@@ -")
    while pos != -1:
        if pos == 0 or text[pos - 1] == "\n":
            return True
        pos = text.find("@@ -", pos + 4)
    return text.startswith(("diff --git", "--- a/"))


def _line_spans(text: str, positions: Iterator[int]) -> Iterator[tuple[int, int]]:
    """The (start, end) of each line holding one of ``positions`` (ascending), once each."""
    done = -1
    for pos in positions:
        if pos < done:
            continue
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        end = len(text) if end == -1 else end
        done = end + 1
        yield start, end


def _normal_char(char: str) -> str:
    if char in _DROP:
        return ""
    if char in _SPACES:
        return " "
    mapped = unicodedata.normalize("NFKC", char).translate(_CONFUSABLE)
    if not mapped.isascii():
        # Accents off Latin letters, so "pássword" reads as a keyword.
        bare = "".join(
            c for c in unicodedata.normalize("NFKD", mapped) if not unicodedata.combining(c)
        )
        mapped = bare if bare.isascii() and bare else mapped
    return mapped


def _normalize_into(out: _Builder, text: str, start: int, end: int) -> bool:
    changed = False
    last = start
    for match in _NON_ASCII.finditer(text, start, end):
        out.copy(text, last, match.start())
        for i in range(match.start(), match.end()):
            mapped = _normal_char(text[i])
            if mapped == text[i]:
                out.copy(text, i, i + 1)
            else:
                changed = True
                if mapped:
                    out.put(mapped, i, 1)
        last = match.end()
    out.copy(text, last, end)
    return changed


def normalized(parent: View) -> View | None:
    """The lines holding non-ASCII characters, normalised (None when nothing changes)."""
    text = parent.text
    out = _Builder()
    changed = False
    for start, end in _line_spans(text, (m.start() for m in _NON_ASCII.finditer(text))):
        changed |= _normalize_into(out, text, start, end)
        out.put("\n", end - 1 if end > start else start, 1)
    return out.view("normalized", parent) if changed else None


def _full_normalized(text: str) -> View:
    """The whole text normalised: the base of the escape, diff and wrap views."""
    out = _Builder()
    _normalize_into(out, text, 0, len(text))
    return out.view("normalized", View("text", text))


def escapes(parent: View) -> View | None:
    """The lines with string escapes, decoded."""
    text = parent.text
    out = _Builder()
    found = False
    for start, end in _line_spans(text, _find_all(text, "\\")):
        last = start
        for match in _ESCAPE.finditer(text, start, end):
            found = True
            out.copy(text, last, match.start())
            out.put(_decode(match.group(0)), match.start(), match.end() - match.start())
            last = match.end()
        out.copy(text, last, end)
        out.put("\n", max(start, end - 1), 1)
    return out.view("escapes", parent) if found else None


def _find_all(text: str, needle: str) -> Iterator[int]:
    pos = text.find(needle)
    while pos != -1:
        yield pos
        pos = text.find(needle, pos + 1)


def _decode(escape: str) -> str:
    code = escape[1]
    if code in _SIMPLE:
        return _SIMPLE[code]
    value = int(escape[2:], 16)
    return chr(value) if value < 0x110000 else "?"


def diff(parent: View) -> View:
    """A unified diff without its line markers (a ``+password = ...`` line reads as code).

    Built from slices between the markers (found by one regex with a literal first
    character), not character by character: a 100 KB diff has thousands of lines."""
    text = parent.text
    cuts = [m.start() + 1 for m in _MARKER.finditer(text)]
    if text[:1] in ("+", "-", " "):
        cuts.insert(0, 0)
    cuts = [c for c in cuts if not text.startswith(("+++ ", "--- "), c)]
    origins = [0, *(c + 1 for c in cuts)]
    ends = [*cuts, len(text)]
    parts = [text[a:b] for a, b in zip(origins, ends, strict=True)]
    starts = list(accumulate((len(p) for p in parts[:-1]), initial=0))
    return View(
        "diff", "".join(parts), tuple(starts), tuple(origins), (0,) * len(origins),
        None if parent.name == "text" else parent,
    )  # fmt: skip


_WRAP_TABLE = bytes(
    97 if chr(i).isalnum() or chr(i) in "+/=_-" else (110 if i == 10 else 32) for i in range(256)
)
_WRAP_NEEDLE = b"a" * 16 + b"n"


def unwrapped(parent: View) -> View | None:
    """Tokens wrapped at a terminal's width, joined: a long line ending inside a token
    continues on the next line. Holds the joined lines only."""
    text = parent.text
    mapped = text.encode("ascii", "replace").translate(_WRAP_TABLE)
    out = _Builder()
    found = False
    pos = mapped.find(_WRAP_NEEDLE)
    while pos != -1:
        newline = pos + 16
        line_start = text.rfind("\n", 0, newline) + 1
        nxt = newline + 1
        while nxt < len(text) and text[nxt] in " \t":
            nxt += 1
        if newline - line_start >= _WRAP_WIDTH and mapped[nxt : nxt + 4] == b"aaaa":
            end = text.find("\n", nxt)
            end = len(text) if end == -1 else end
            out.copy(text, line_start, newline)
            out.copy(text, nxt, end)
            out.put("\n", end - 1, 1)
            found = True
        pos = mapped.find(_WRAP_NEEDLE, newline + 1)
    return out.view("unwrapped", parent) if found else None
