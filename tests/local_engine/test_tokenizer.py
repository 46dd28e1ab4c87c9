"""The DeepSeek V4 tokenizer and the streaming detokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_engine.errors import EngineError
from local_engine.runtime import tokenizer as tokenizer_module
from local_engine.runtime.chat import render_prompt
from local_engine.runtime.tokenizer import Tokenizer, TokenizerError, bundled_tokenizer_path

MIXED_TEXTS = [
    "plain ascii, with punctuation!",
    "héllo wörld — ünïcode",
    "你好，世界。日本語のテキストも。",
    "emoji 😀🎉 and a family 👨‍👩‍👧 and a flag 🇯🇵",
    "def f(x):\n    return x ** 2  # 注释\n",
    "",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.load()


def test_bundled_file_is_used_when_the_model_dir_has_none(tmp_path: Path) -> None:
    loaded = Tokenizer.load(tmp_path)
    assert loaded.source == bundled_tokenizer_path()
    assert loaded.vocab_size == 129280


def test_model_directory_file_wins_over_the_bundled_one(tmp_path: Path) -> None:
    bundled = bundled_tokenizer_path()
    assert bundled is not None
    shutil.copy(bundled, tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path)
    assert loaded.source == (tmp_path / "tokenizer.json").resolve()


def test_no_tokenizer_anywhere_is_an_actionable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenizer_module, "bundled_tokenizer_path", lambda: None)
    with pytest.raises(TokenizerError) as info:
        Tokenizer.load(tmp_path)
    assert isinstance(info.value, EngineError)
    assert "tokenizer.json" in str(info.value) and str(tmp_path) in str(info.value)


def test_a_tokenizer_without_the_v4_special_tokens_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel

    foreign = HFTokenizer(WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    foreign.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="begin▁of▁sentence"):
        Tokenizer.load(tmp_path)


def test_unreadable_tokenizer_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)


def test_special_tokens_resolve_to_the_ids_in_the_file(tok: Tokenizer) -> None:
    bundled = bundled_tokenizer_path()
    assert bundled is not None
    added = {t["content"]: t["id"] for t in json.loads(bundled.read_text())["added_tokens"]}
    special = tok.special
    assert special.bos == added["<｜begin▁of▁sentence｜>"] == 0
    assert special.eos == added["<｜end▁of▁sentence｜>"] == 1
    assert special.user == added["<｜User｜>"]
    assert special.assistant == added["<｜Assistant｜>"]
    assert special.think_start == added["<think>"]
    assert special.think_end == added["</think>"]


def test_a_rendered_prompt_encodes_special_strings_as_single_ids(tok: Tokenizer) -> None:
    prompt = render_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}],
        thinking=True,
    )
    ids = tok.encode(prompt)
    special = tok.special
    assert ids[0] == special.bos  # the prompt carries BOS; encode adds no second one
    assert ids.count(special.bos) == 1
    assert ids[-2:] == [special.assistant, special.think_start]
    assert special.user in ids
    assert tok.decode(ids) == prompt


@pytest.mark.parametrize("text", MIXED_TEXTS)
def test_token_bytes_concatenate_to_the_utf8_of_the_text(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert tok.decode(ids) == text


def test_emoji_and_cjk_really_are_split_across_tokens(tok: Tokenizer) -> None:
    # The streaming tests below only mean something if single characters span tokens.
    ids = tok.encode("😀")
    assert len(ids) >= 2
    first = tok.token_bytes(ids[0])
    with pytest.raises(UnicodeDecodeError):
        first.decode("utf-8")


def _stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    detok = tok.detokenizer()
    pieces = [detok.add(i) for i in ids]
    pieces.append(detok.flush())
    return pieces


@pytest.mark.parametrize("text", MIXED_TEXTS)
def test_streaming_detokenizer_reassembles_text_without_replacement_chars(
    tok: Tokenizer, text: str
) -> None:
    pieces = _stream(tok, tok.encode(text))
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_streaming_holds_back_an_unfinished_character_until_it_completes(tok: Tokenizer) -> None:
    ids = tok.encode("a😀b")
    detok = tok.detokenizer()
    released = []
    held_at_some_point = False
    for token_id in ids:
        released.append(detok.add(token_id))
        held_at_some_point |= detok.pending
        # Everything released so far is a prefix of the text: never half a character.
        assert "a😀b".startswith("".join(released))
    assert held_at_some_point
    assert "".join(released) == "a😀b"
    assert detok.flush() == ""


def test_flush_turns_a_truncated_character_into_one_replacement(tok: Tokenizer) -> None:
    ids = tok.encode("😀")
    detok = tok.detokenizer()
    assert detok.add(ids[0]) == ""
    assert detok.pending
    assert detok.flush() == "\ufffd"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_streaming_equals_whole_decode_for_any_text(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert "".join(_stream(tok, ids)) == tok.decode(ids) == text


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(min_value=0, max_value=129279), max_size=30))
def test_streaming_any_id_sequence_matches_lossy_whole_decode(
    tok: Tokenizer, ids: list[int]
) -> None:
    # Arbitrary ids (what a random model emits) can be invalid UTF-8 as a whole; the stream
    # must still equal a one-shot lossy decode of all the bytes, never add extra U+FFFD.
    whole = b"".join(tok.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
    assert "".join(_stream(tok, ids)) == whole
