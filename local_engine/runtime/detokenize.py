"""Streaming detokenization that never emits a broken UTF-8 sequence.

Byte-level BPE splits characters: one CJK character or emoji is often two or three tokens,
each a fragment of its UTF-8 bytes. Decoding each token alone would print replacement
characters mid-stream. We feed the raw bytes of every token to an incremental UTF-8 decoder,
which returns only complete characters and holds back an unfinished tail until the next
token completes it. Bytes that can never become valid UTF-8 come out as U+FFFD once that is
certain, so the stream never stalls on garbage.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable


class StreamingDetokenizer:
    """Token ids in, complete text out; ``flush`` at the end of the stream."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tokens = 0

    def add(self, token_id: int) -> str:
        """The text that became complete with this token (possibly empty)."""
        self.tokens += 1
        return str(self._decoder.decode(self._token_bytes(token_id)))

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished character are held back."""
        buffered, _ = self._decoder.getstate()
        return bool(buffered)

    def flush(self) -> str:
        """Whatever is still held back; an unfinished character becomes U+FFFD."""
        return str(self._decoder.decode(b"", final=True))
