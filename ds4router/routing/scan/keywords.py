"""Where the scan's keywords occur: one Aho-Corasick pass over the lower-cased text.

Every context detector starts from a word ("password", "--token", "authorization",
"docker", "://" ...). Searching for each word on its own costs a pass over the text
per word, and a regex alternation of them tries every position; an Aho-Corasick
automaton finds all of them in one pass, and each detector then looks only at
the places its words occur. ``ahocorasick-rs`` (Rust) is used over ``pyahocorasick``:
it finds the same matches in half the time on source code.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

_REGISTERED: set[str] = set()


def register(words: Iterable[str]) -> tuple[str, ...]:
    """Declare keywords (matched case-insensitively); returns them lower-cased."""
    out = tuple(w.lower() for w in words)
    _REGISTERED.update(out)
    _automaton.cache_clear()
    return out


@lru_cache(maxsize=1)
def _automaton() -> tuple[Any, Any, tuple[str, ...]]:
    """(for str, for ASCII bytes, the words): DFAs, 2.5x faster than the default NFA here;
    ASCII text is searched as bytes, where the offsets are the same and no copy is made."""
    import ahocorasick_rs as ac

    words = tuple(sorted(_REGISTERED))
    dfa = ac.Implementation.DFA
    text = ac.AhoCorasick(words, matchkind=ac.MatchKind.Standard, implementation=dfa)
    raw = ac.BytesAhoCorasick([w.encode() for w in words], implementation=dfa)
    return text, raw, words


class KeywordIndex:
    """Start positions of each registered keyword in a lower-cased text."""

    def __init__(self, lower: str) -> None:
        self._at: dict[str, list[int]] = {}
        if not lower:
            return
        text, raw, words = _automaton()
        if lower.isascii():
            found = raw.find_matches_as_indexes(lower.encode("ascii"), overlapping=True)
        else:
            found = text.find_matches_as_indexes(lower, overlapping=True)
        for index, start, _end in found:
            self._at.setdefault(words[index], []).append(start)

    def positions(self, *words: str) -> list[int]:
        found: list[int] = []
        for word in words:
            found.extend(self._at.get(word, ()))
        return sorted(found) if len(words) > 1 else found

    def has(self, *words: str) -> bool:
        return any(word in self._at for word in words)

    def __contains__(self, word: str) -> bool:
        return word in self._at
