"""Prefix reuse: the engine restores the longest cached prefix from disk and prefills the rest.

A real tiny random model, a real cache directory. "Exact" means the logits of a restored
state are bit-identical (float32) to those of a state that prefilled the same tokens, here
and in a fresh process. Chat and thinking conversations reuse earlier turns as the DeepSeek
V4 chat encoding allows: chat turns continue from the previous turn's end, thinking turns
from just before the previous prompt's closing ``<think>``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from local_engine.cache.kv_cache import state_nbytes
from local_engine.cache.kv_store import KVStore
from local_engine.cache.prefix_cache import PrefixCache
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.runtime.engine import Engine
from local_engine.runtime.generate import Done, GenerationParams, GenerationStats

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("reuse"), preset="tiny", seed=11)


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Engine:
    return Engine.load(model_dir)


@pytest.fixture(autouse=True)
def no_cache_left_on(engine: Engine) -> Any:
    yield
    engine.use_kv_cache(None)


def ids_of(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(2, 128000, size=n).astype(int).tolist()


def run(engine: Engine, prompt: list[int], **params: Any) -> Done:
    gen = GenerationParams(**{"temperature": 0.0, "max_tokens": 6, **params})
    done = list(engine.generate_ids(prompt, gen))[-1]
    assert isinstance(done, Done)
    engine.flush_kv_cache()
    return done


def test_a_restored_state_continues_exactly_like_a_prefilled_one(
    engine: Engine, tmp_path: Path
) -> None:
    model = engine.model
    ids = mx.array([ids_of(760)], dtype=mx.int32)
    cache = PrefixCache(KVStore(tmp_path), engine.fingerprint)
    live = model.make_cache()
    reference: dict[int, mx.array] = {}
    for n in (256, 300, 700):  # a block boundary, then exact points
        start = live.offset
        reference[n] = model.prefill(ids[:, start:n], live, chunk_size=128)[:, -1, :]
        assert cache.save(live, ids[0, :n].tolist(), reference[n])
    assert cache.flush(timeout=30)
    # The state holds exactly the architecture's count (which the benchmark reports).
    assert live.nbytes == state_nbytes(model.config, 700, 4)
    (entry,) = [e for e in cache.store.entries() if e.tokens == 700]
    assert live.nbytes < entry.nbytes < live.nbytes + 4 * 700 + 4 * model.config.vocab_size + 8192
    follow = [ids[:, 700:730], ids[:, 730:731], ids[:, 731:760]]

    def continue_from(c: Any) -> list[np.ndarray]:
        return [np.array(model(part, cache=c)) for part in follow]

    expected = continue_from(live)
    restored = cache.restore(ids[0].tolist(), model.make_cache)
    assert restored is not None and restored.tokens == 700
    assert np.array_equal(np.array(restored.logits), np.array(reference[700]))
    got = continue_from(restored.cache)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    # A prompt that leaves the cached path after 290 tokens gets the 256-token state.
    other = ids[0].tolist()[:290] + ids_of(50, seed=5)
    shorter = cache.restore(other, model.make_cache)
    assert shorter is not None and shorter.tokens == 256
    assert np.array_equal(np.array(shorter.logits), np.array(reference[256]))


def test_generation_restores_the_prompt_and_prefills_only_the_rest(
    engine: Engine, tmp_path: Path
) -> None:
    prompt = ids_of(700, seed=1)
    fresh = run(engine, prompt)  # no cache configured: the reference
    assert fresh.stats.cached_prompt_tokens == 0
    engine.use_kv_cache(tmp_path, snapshot_every=256)
    first = run(engine, prompt)
    assert first.token_ids == fresh.token_ids
    assert first.stats.cached_prompt_tokens == 0
    # Snapshots every 256 tokens of the prefill, at the prompt's end and at the turn's end.
    store = engine.prefix_cache.store if engine.prefix_cache else None
    assert store is not None
    assert sorted(e.tokens for e in store.entries()) == [256, 512, 700, 700 + 5]
    again = run(engine, prompt)
    assert again.token_ids == fresh.token_ids
    stats: GenerationStats = again.stats
    assert stats.cached_prompt_tokens == 700 and stats.kv_restore_s > 0
    assert stats.prefill_tok_s == 0.0  # nothing was prefilled
    # Sharing only the first 600 tokens: the 512-token snapshot, then 188 prefilled.
    branch = prompt[:600] + ids_of(100, seed=2)
    reference = run_without_cache(engine, branch, tmp_path)
    got = run(engine, branch)
    assert got.stats.cached_prompt_tokens == 512
    assert got.token_ids == reference.token_ids


def run_without_cache(engine: Engine, prompt: list[int], kv: Path) -> Done:
    saved = engine.prefix_cache
    engine.use_kv_cache(None)
    try:
        return run(engine, prompt)
    finally:
        engine.use_kv_cache(kv, snapshot_every=saved.snapshot_every if saved else None)


_CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    import mlx.core as mx
    from local_engine.runtime.engine import Engine
    from local_engine.runtime.generate import GenerationParams

    model_dir, kv, prompt = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    engine = Engine.load(model_dir)
    engine.use_kv_cache(kv)
    params = GenerationParams(temperature=0.0, max_tokens=6)
    done = list(engine.generate_ids(prompt, params))[-1]
    engine.flush_kv_cache()
    # Logits after 20 more tokens: restored state vs a fresh prefill, in this process.
    follow = mx.array([list(range(1000, 1020))], dtype=mx.int32)
    restored = engine.prefix_cache.restore(prompt, engine.model.make_cache)
    digests = []
    for cache in (restored.cache if restored else None, engine.model.make_cache()):
        if cache is None:
            digests.append(None)
            continue
        if cache.offset == 0:
            engine.model.prefill(mx.array([prompt], dtype=mx.int32), cache, chunk_size=512)
        logits = engine.model(follow, cache=cache)
        digests.append(hashlib.sha256(bytes(memoryview(logits))).hexdigest())
    print(json.dumps({"tokens": list(done.token_ids),
                      "cached": done.stats.cached_prompt_tokens, "digests": digests}))
    """
)


def test_a_new_process_resumes_from_disk_exactly(model_dir: Path, tmp_path: Path) -> None:
    prompt = ids_of(600, seed=3)

    def child() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(model_dir), str(tmp_path), json.dumps(prompt)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    first = child()
    second = child()
    assert first["cached"] == 0 and second["cached"] == 600
    assert second["tokens"] == first["tokens"]
    restored, fresh = second["digests"]
    assert restored is not None and restored == fresh


class Scripted:
    """The real model, its logits pushed (+1e4) towards ``script[k]`` for the k-th reply
    token (end-of-sentence after the script). Raw logits are kept by position."""

    def __init__(self, model: Any, eos: int) -> None:
        self.model = model
        self.eos = eos
        self.script: list[int] = []
        self.prompt_len = 0
        self.raw: dict[int, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # graph, dtype, compiled: the fingerprint's
        return getattr(self.model, name)

    def make_cache(self) -> Any:
        return self.model.make_cache()

    def _push(self, logits: mx.array, cache: Any) -> mx.array:
        self.raw[cache.offset] = np.array(logits[:, -1, :])
        k = cache.offset - self.prompt_len
        target = self.script[k] if 0 <= k < len(self.script) else self.eos
        return logits + mx.where(mx.arange(logits.shape[-1]) == target, 1e4, 0.0)

    def prefill(self, tokens: mx.array, cache: Any, chunk_size: int) -> mx.array:
        return self._push(self.model.prefill(tokens, cache, chunk_size=chunk_size), cache)

    def __call__(self, tokens: mx.array, cache: Any) -> mx.array:
        return self._push(self.model(tokens, cache=cache), cache)


def scripted_engine(engine: Engine) -> tuple[Engine, Scripted]:
    scripted = Scripted(engine.model, engine.tokenizer.special.eos)
    return Engine(engine.path, scripted, engine.tokenizer, engine.config, engine.graph), scripted


def turn(
    eng: Engine, scripted: Scripted, messages: list[dict[str, str]], reply: list[int], **kw: Any
) -> tuple[Done, list[int]]:
    params = GenerationParams(temperature=0.0, max_tokens=64, **kw)
    prompt = eng.encode_messages(messages, params)
    scripted.prompt_len, scripted.script = len(prompt), reply
    done = list(eng.generate(messages, params))[-1]
    assert isinstance(done, Done)
    eng.flush_kv_cache()
    return done, prompt


SYSTEM = {"role": "system", "content": "You answer questions about the sea. " * 30}


def test_chat_turns_continue_from_the_previous_turn_end(engine: Engine, tmp_path: Path) -> None:
    eng, scripted = scripted_engine(engine)
    tok = engine.tokenizer
    eng.use_kv_cache(tmp_path)
    replies = ["The sea is calm tonight.", "Tides follow the moon."]
    messages: list[dict[str, str]] = [SYSTEM, {"role": "user", "content": "How is the sea?"}]
    done, prompt = turn(eng, scripted, messages, tok.encode(replies[0]))
    assert done.stats.cached_prompt_tokens == 0
    seen_after_turn1 = prompt + list(done.token_ids)  # the reply and its end-of-sentence
    messages += [
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "And the tides?"},
    ]
    done2, prompt2 = turn(eng, scripted, messages, tok.encode(replies[1]))
    assert prompt2[: len(seen_after_turn1)] == seen_after_turn1
    assert done2.stats.cached_prompt_tokens == len(seen_after_turn1)
    assert tok.decode(list(done2.token_ids)).startswith(replies[1])
    with_cache = scripted.raw[len(prompt2)]
    # The same turn without any cache. The cached reply tokens were computed one decode step
    # at a time, a fresh prefill computes them in one chunk: the same values up to float
    # rounding (bit-identity holds for the same split into calls; see the first test).
    eng.use_kv_cache(None)
    turn(eng, scripted, messages, tok.encode(replies[1]))
    assert np.allclose(scripted.raw[len(prompt2)], with_cache, rtol=0, atol=1e-4)


def test_thinking_turns_continue_from_before_the_closing_think(
    engine: Engine, tmp_path: Path
) -> None:
    eng, scripted = scripted_engine(engine)
    tok = engine.tokenizer
    eng.use_kv_cache(tmp_path)
    think = {"thinking": True}
    messages: list[dict[str, str]] = [SYSTEM, {"role": "user", "content": "How deep is it?"}]
    reasoning, answer = "They ask about depth.", "About four kilometres."
    reply = [*tok.encode(reasoning), tok.special.think_end, *tok.encode(answer)]
    done, prompt = turn(eng, scripted, messages, reply, **think)
    assert prompt[-1] == tok.special.think_start
    messages += [
        {"role": "assistant", "content": answer, "reasoning_content": reasoning},
        {"role": "user", "content": "And the deepest point?"},
    ]
    done2, prompt2 = turn(eng, scripted, messages, tok.encode("Eleven kilometres."), **think)
    # The earlier reasoning is dropped and <think> became </think>: the reusable state is
    # the one just before it.
    assert prompt2[: len(prompt) - 1] == prompt[:-1] and prompt2[len(prompt) - 1] != prompt[-1]
    assert done2.stats.cached_prompt_tokens == len(prompt) - 1
    with_cache = scripted.raw[len(prompt2)]
    messages += [
        {"role": "assistant", "content": "Eleven kilometres."},
        {"role": "user", "content": "Thanks."},
    ]
    done3, prompt3 = turn(eng, scripted, messages, tok.encode("You are welcome."), **think)
    assert done3.stats.cached_prompt_tokens == len(prompt2) - 1
    eng.use_kv_cache(None)
    messages = messages[:-2]
    turn(eng, scripted, messages, tok.encode("Eleven kilometres."), **think)
    assert np.allclose(scripted.raw[len(prompt2)], with_cache, rtol=0, atol=1e-4)
