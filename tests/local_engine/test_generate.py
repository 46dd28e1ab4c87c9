"""The engine end to end on a real tiny random checkpoint in the official layout.

Loading (errors, memory check, sharing), streaming generation (seeded determinism, max
tokens, stop strings across tokens, cancellation from another thread, multibyte text,
thinking mode) and the stats it reports. Where a test needs known output text, the real
model runs and a wrapper pushes its logits towards a script of token ids, so the engine's
loop, sampler and detokenizer see exactly the tokens the test is about.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.errors import CheckpointError, EngineError
from local_engine.runtime.chat import ChatEncodingError
from local_engine.runtime.engine import Engine, InsufficientMemoryError, estimate_memory
from local_engine.runtime.generate import (
    Done,
    Event,
    GenerationError,
    GenerationParams,
    ReasoningDelta,
    ReasoningSplitter,
    TextDelta,
    Usage,
    stream_generate,
)

MESSAGES = [{"role": "user", "content": "Write a haiku about the sea."}]
LONG_MESSAGES = [
    {"role": "system", "content": "You are a careful assistant who answers briefly."},
    {"role": "user", "content": "Explain in one sentence why the sky looks blue at noon."},
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=0)


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Engine:
    return Engine.load(tiny_dir)


@dataclass
class Run:
    events: list[Event]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def reasoning(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, ReasoningDelta))

    @property
    def usage(self) -> Usage:
        usage = self.events[-2]
        assert isinstance(usage, Usage)
        return usage

    @property
    def done(self) -> Done:
        done = self.events[-1]
        assert isinstance(done, Done)
        return done


def collect(events: Any) -> Run:
    run = Run(list(events))
    # Deltas first, then exactly one Usage, then Done, always.
    deltas = [e for e in run.events[:-2] if isinstance(e, TextDelta | ReasoningDelta)]
    assert len(deltas) == len(run.events) - 2 and all(d.text for d in deltas)  # none empty
    assert run.usage.generated_tokens == run.done.stats.generated_tokens == len(run.done.token_ids)
    return run


class ScriptedModel:
    """The real model, its logits pushed (+1e4) towards ``script`` then end-of-sentence."""

    def __init__(self, model: Any, script: list[int], prompt_len: int, end_id: int) -> None:
        self.model = model
        self.script = script
        self.prompt_len = prompt_len
        self.end_id = end_id
        self.fed = 0

    def make_cache(self) -> Any:
        self.fed = 0
        return self.model.make_cache()

    def __call__(self, tokens: mx.array, cache: Any) -> mx.array:
        logits = self.model(tokens, cache=cache)
        self.fed += tokens.shape[1]
        return self._push(logits)

    def _push(self, logits: mx.array) -> mx.array:
        position = self.fed - self.prompt_len  # index of the token these logits choose
        target = self.script[position] if position < len(self.script) else self.end_id
        vocab = logits.shape[-1]
        return logits + mx.where(mx.arange(vocab) == target, 1e4, 0.0)


def scripted_run(engine: Engine, text_or_ids: str | list[int], **params: Any) -> Run:
    gen_params = GenerationParams(**{"temperature": 0.0, "max_tokens": 64, **params})
    prompt = engine.encode_messages(MESSAGES, gen_params)
    script = engine.tokenizer.encode(text_or_ids) if isinstance(text_or_ids, str) else text_or_ids
    model = ScriptedModel(engine.model, script, len(prompt), engine.tokenizer.special.eos)
    return collect(stream_generate(model, engine.tokenizer, prompt, gen_params))


# -- loading ---------------------------------------------------------------------------------


def test_load_is_shared_per_resolved_path(
    engine: Engine, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Engine.load(str(tiny_dir)) is engine
    assert Engine.load(tiny_dir / ".." / tiny_dir.name) is engine
    monkeypatch.chdir(tiny_dir.parent)
    assert Engine.load(tiny_dir.name) is engine
    assert tiny_dir in Engine.loaded()


def test_concurrent_loads_of_one_model_load_it_once(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import local_engine

    real_load = local_engine.load_model
    calls: list[Path] = []

    def counting_load(path: Path, **kwargs: Any) -> Any:
        calls.append(path)
        return real_load(path, **kwargs)

    monkeypatch.setattr(local_engine, "load_model", counting_load)
    model_dir = _variant(tiny_dir, tmp_path / "m")
    results: list[Engine] = []
    threads = [
        threading.Thread(target=lambda: results.append(Engine.load(model_dir))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert len(results) == 3 and all(r is results[0] for r in results)
        assert calls == [model_dir.resolve()]
    finally:
        assert Engine.unload(model_dir)
    assert model_dir.resolve() not in Engine.loaded()


def test_graph_options_default_by_provenance_and_cannot_silently_change(
    engine: Engine, tiny_dir: Path
) -> None:
    from local_engine import GraphOptions

    # Random test weights run the transformers-exact graph; asking for another graph on a
    # loaded model is an error rather than a silently ignored option.
    assert engine.graph == GraphOptions()
    assert Engine.load(tiny_dir, graph=GraphOptions()) is engine
    with pytest.raises(EngineError, match="unload it first"):
        Engine.load(tiny_dir, graph=GraphOptions.official())


def test_unmarked_weights_run_the_official_graph(tiny_dir: Path, tmp_path: Path) -> None:
    from local_engine import GraphOptions
    from local_engine.model.config import RANDOM_MARKER_KEY

    unmarked = _variant(tiny_dir, tmp_path / "m", **{RANDOM_MARKER_KEY: None})
    try:
        engine = Engine.load(unmarked)
        assert engine.graph == GraphOptions.official() and not engine.info().is_random
        run = collect(engine.generate(MESSAGES, GenerationParams(max_tokens=3, seed=0)))
        assert run.usage.generated_tokens == 3
    finally:
        Engine.unload(unmarked)


def test_info_describes_the_random_tiny_model(engine: Engine, tiny_dir: Path) -> None:
    info = engine.info()
    config = json.loads((tiny_dir / "config.json").read_text())
    assert info.is_random and info.random_weights is not None
    assert info.layers == config["num_hidden_layers"]
    assert info.context_limit == engine.config.max_position_embeddings > 0
    assert info.vocab_size == 129280 == engine.tokenizer.vocab_size
    assert info.parameters == engine.model.num_parameters() > 0
    assert info.weight_bytes == sum(info.bytes_by_dtype.values()) > 0
    # FP4 experts and FP8 projections stay packed after loading.
    assert {"mxfp4", "mxfp8"} <= set(info.bytes_by_dtype)
    assert json.loads(json.dumps(info.to_dict()))["is_random"] is True


def test_memory_estimate_from_headers_matches_what_loading_took(
    engine: Engine, tiny_dir: Path
) -> None:
    estimate = estimate_memory(tiny_dir)
    loaded = engine.info().weight_bytes
    assert abs(estimate.weights_bytes - loaded) / loaded < 0.05
    assert estimate.needed_bytes > estimate.weights_bytes
    assert estimate.available_bytes is not None and estimate.available_bytes > 0


def _variant(tiny_dir: Path, where: Path, **config_changes: Any) -> Path:
    """A new model directory sharing the tiny weights, with config.json edited."""
    where.mkdir()
    for f in tiny_dir.iterdir():
        if f.name != "config.json":
            os.symlink(f, where / f.name)
    config = json.loads((tiny_dir / "config.json").read_text())
    config.update(config_changes)
    (where / "config.json").write_text(json.dumps(config))
    return where


def test_refuses_clearly_when_the_model_cannot_fit(tiny_dir: Path, tmp_path: Path) -> None:
    copy = _variant(tiny_dir, tmp_path / "m")
    with pytest.raises(InsufficientMemoryError) as info:
        Engine.load(copy, available_memory_bytes=64 * 1024**2)
    message = str(info.value)
    assert str(copy) in message and "GiB" in message and "smaller quantization" in message
    assert copy not in Engine.loaded()


def test_shape_mismatch_names_the_tensor(tiny_dir: Path, tmp_path: Path) -> None:
    bad = _variant(tiny_dir, tmp_path / "m", hidden_size=256)
    with pytest.raises(CheckpointError, match=r"embed\.weight.*\[129280, 128\]"):
        Engine.load(bad)


def test_unknown_model_type_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model_type is 'llama'"):
        Engine.load(_variant(tiny_dir, tmp_path / "m", model_type="llama"))


@pytest.mark.parametrize("layout", ["missing", "a file", "no config", "no weights"])
def test_missing_files_are_actionable_errors(tiny_dir: Path, tmp_path: Path, layout: str) -> None:
    target = tmp_path / "m"
    if layout == "a file":
        target.write_text("not a model")
    elif layout == "no config":
        target.mkdir()
        os.symlink(tiny_dir / "model-00001-of-00001.safetensors", target / "w.safetensors")
    elif layout == "no weights":
        target.mkdir()
        (target / "config.json").write_text((tiny_dir / "config.json").read_text())
    needle = {
        "missing": "does not exist",
        "a file": "pass the model directory",
        "no config": "config.json",
        "no weights": "init-random",
    }[layout]
    with pytest.raises(EngineError, match=needle):
        Engine.load(target)


# -- generation ------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_and_depends_on_the_seed(engine: Engine) -> None:
    def run(seed: int) -> Run:
        params = GenerationParams(max_tokens=10, temperature=1.0, seed=seed)
        return collect(engine.generate(MESSAGES, params))

    first, again, other = run(11), run(11), run(12)
    assert first.done.token_ids == again.done.token_ids
    assert first.text == again.text
    assert first.done.token_ids != other.done.token_ids


def test_greedy_output_and_progress_do_not_depend_on_prefill_chunking(engine: Engine) -> None:
    progress: list[tuple[int, int]] = []
    whole = collect(engine.generate(LONG_MESSAGES, GenerationParams(max_tokens=6, temperature=0)))
    chunked = collect(
        engine.generate(
            LONG_MESSAGES,
            GenerationParams(max_tokens=6, temperature=0, prefill_chunk_size=7),
            on_prefill_progress=lambda done, total: progress.append((done, total)),
        )
    )
    assert chunked.done.token_ids == whole.done.token_ids
    total = whole.done.stats.prompt_tokens
    assert total > 14
    assert progress == [(min(end, total), total) for end in range(7, total + 7, 7)]


def test_pipelined_greedy_decode_equals_a_plain_argmax_loop(engine: Engine) -> None:
    params = GenerationParams(max_tokens=12, temperature=0)
    run = collect(engine.generate(MESSAGES, params))
    cache = engine.model.make_cache()
    logits = engine.model(mx.array([engine.encode_messages(MESSAGES, params)]), cache=cache)
    expected: list[int] = []
    while len(expected) < 12:
        token = int(mx.argmax(logits[0, -1]).item())  # type: ignore[arg-type]
        expected.append(token)
        if token == engine.tokenizer.special.eos:
            break
        logits = engine.model(mx.array([[token]]), cache=cache)
    assert run.done.token_ids == tuple(expected)


def test_max_tokens_ends_with_length(engine: Engine) -> None:
    run = collect(engine.generate(MESSAGES, GenerationParams(max_tokens=5, seed=1)))
    assert run.done.finish_reason == "length"
    assert run.usage.generated_tokens == 5
    assert run.usage.prompt_tokens == len(engine.encode_messages(MESSAGES, GenerationParams()))


def test_stats_are_present_and_positive(engine: Engine) -> None:
    run = collect(engine.generate(LONG_MESSAGES, GenerationParams(max_tokens=8, seed=2)))
    stats = run.done.stats
    assert stats.prompt_tokens == run.usage.prompt_tokens > 0
    assert stats.generated_tokens == 8
    assert stats.prefill_s > 0 and stats.prefill_tok_s > 0
    assert stats.decode_s > 0 and stats.decode_tok_s > 0
    assert 0 < stats.prefill_s < stats.ttft_s < stats.total_s
    assert stats.peak_memory_bytes > 0
    assert set(stats.to_dict()) >= {"prompt_tokens", "prefill_tok_s", "decode_tok_s", "ttft_s"}


def test_stop_string_spanning_two_tokens_of_real_output(engine: Engine) -> None:
    params = GenerationParams(max_tokens=16, temperature=0)
    free = collect(engine.generate(MESSAGES, params))
    pieces = [e.text for e in free.events if isinstance(e, TextDelta)]
    # A stop string made of the last character of one piece and the first of the next.
    index = next(i for i in range(2, len(pieces) - 1) if pieces[i].strip() and pieces[i + 1])
    stop = pieces[index][-1] + pieces[index + 1][0]
    expected = free.text[: free.text.find(stop)]

    stopped = collect(
        engine.generate(MESSAGES, GenerationParams(**{**vars(params), "stop": (stop,)}))
    )
    assert stopped.text == expected
    assert stop not in stopped.text
    assert stopped.done.finish_reason == "stop"
    assert stopped.usage.generated_tokens < free.usage.generated_tokens


def test_stop_string_across_scripted_tokens_is_cut_exactly(engine: Engine) -> None:
    script = "The answer is 42. END of story, and more"
    ids = engine.tokenizer.encode(script)
    assert len(ids) > 8
    run = scripted_run(engine, ids, stop=("END of",))
    assert run.text == "The answer is 42. "
    assert run.done.finish_reason == "stop"
    # It stopped at the token that completed the stop string, not at the end of the script.
    assert len(run.done.token_ids) < len(ids)


def test_eos_ends_generation_with_stop(engine: Engine) -> None:
    run = scripted_run(engine, "Short.")
    assert run.text == "Short."
    assert run.done.finish_reason == "stop"
    assert run.done.token_ids[-1] == engine.tokenizer.special.eos


def test_multibyte_text_streams_without_broken_characters(engine: Engine) -> None:
    text = "海 😀 👨‍👩‍👧 ok 你好，世界 🇯🇵"
    ids = engine.tokenizer.encode(text)
    # The test only means something if some tokens are fragments of a character.
    assert any(_is_fragment(engine.tokenizer.token_bytes(i)) for i in ids)
    run = scripted_run(engine, ids)
    assert run.text == text
    assert not any("\ufffd" in e.text for e in run.events if isinstance(e, TextDelta))
    assert len([e for e in run.events if isinstance(e, TextDelta)]) < len(ids)


def _is_fragment(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_thinking_mode_streams_reasoning_then_answer(engine: Engine) -> None:
    tok = engine.tokenizer
    reasoning_ids = tok.encode("Sea, salt, waves.</think>")
    script = [tok.special.think_start, *reasoning_ids, *tok.encode("Waves fold on the shore.")]
    run = scripted_run(engine, script, thinking=True)
    assert run.reasoning == "Sea, salt, waves."
    assert run.text == "Waves fold on the shore."
    kinds = [type(e) for e in run.events[:-2]]
    assert kinds.index(TextDelta) > max(i for i, k in enumerate(kinds) if k is ReasoningDelta)
    # The repeated <think> and the </think> token count as reasoning.
    assert run.usage.reasoning_tokens == 1 + len(reasoning_ids)


def test_stop_strings_do_not_apply_to_reasoning(engine: Engine) -> None:
    script = "The END is near.</think>It ends. END here"
    run = scripted_run(engine, script, thinking=True, stop=("END",))
    assert run.reasoning == "The END is near."
    assert run.text == "It ends. "


def test_cancel_mid_decode_from_another_thread(engine: Engine) -> None:
    cancel = threading.Event()
    events: queue.Queue[Event | BaseException | None] = queue.Queue()

    def worker() -> None:
        try:
            params = GenerationParams(max_tokens=10_000, seed=5)
            for event in engine.generate(MESSAGES, params, cancel=cancel):
                events.put(event)
            events.put(None)
        except BaseException as exc:  # hand the failure to the test thread
            events.put(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    seen: list[Event] = []
    while len([e for e in seen if isinstance(e, TextDelta)]) < 3:
        event = events.get(timeout=60)
        if isinstance(event, BaseException):
            raise event
        assert event is not None, "generation ended before it could be cancelled"
        seen.append(event)
    cancel.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    while (event := events.get_nowait()) is not None:
        assert not isinstance(event, BaseException)
        seen.append(event)
    run = collect(seen)
    assert run.done.finish_reason == "cancelled"
    assert 3 <= run.usage.generated_tokens < 10_000


def test_cancel_during_prefill_generates_nothing(engine: Engine) -> None:
    cancel = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        cancel.set()

    params = GenerationParams(max_tokens=5, prefill_chunk_size=4)
    run = collect(
        engine.generate(LONG_MESSAGES, params, cancel=cancel, on_prefill_progress=progress)
    )
    assert calls == [4]
    assert run.done.finish_reason == "cancelled"
    assert run.usage.generated_tokens == 0 and run.text == ""


def test_context_limit_caps_generation_and_refuses_overlong_prompts(engine: Engine) -> None:
    params = GenerationParams(max_tokens=50, seed=3)
    prompt = engine.encode_messages(MESSAGES, params)
    run = collect(
        stream_generate(
            engine.model, engine.tokenizer, prompt, params, context_limit=len(prompt) + 3
        )
    )
    assert run.usage.generated_tokens == 3 and run.done.finish_reason == "length"
    with pytest.raises(GenerationError, match="context limit"):
        list(
            stream_generate(
                engine.model, engine.tokenizer, prompt, params, context_limit=len(prompt)
            )
        )


def test_a_malformed_tool_definition_is_refused_before_anything_runs(engine: Engine) -> None:
    tools = [{"type": "function", "function": {"parameters": {}}}]  # no name
    with pytest.raises(ChatEncodingError, match="message 0: a tool needs"):
        engine.generate([{"role": "system", "content": "s", "tools": tools}, *MESSAGES])


@pytest.mark.parametrize(
    "messages",
    [
        [*MESSAGES, {"role": "assistant", "content": "Done."}],
        [{"role": "user", "content": "q"}, {"role": "system", "content": "late rules"}],
    ],
)
def test_a_conversation_not_ending_for_a_reply_is_refused(
    engine: Engine, messages: list[dict[str, str]]
) -> None:
    with pytest.raises(ChatEncodingError, match="must end with a user"):
        engine.generate(messages)


@pytest.mark.parametrize(
    "kwargs", [{"max_tokens": 0}, {"temperature": -1.0}, {"prefill_chunk_size": 0}, {"stop": "x"}]
)
def test_invalid_generation_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(EngineError):
        GenerationParams(**kwargs)


def test_reasoning_splitter_finds_think_end_split_across_pieces() -> None:
    splitter = ReasoningSplitter(thinking=True)
    assert splitter.feed("abc</th") == ("abc", "")
    assert splitter.feed("ink>ans") == ("", "ans")
    assert splitter.feed("wer</think>") == ("", "wer</think>")
    held = ReasoningSplitter(thinking=True)
    assert held.feed("x</") == ("x", "")
    assert held.flush() == "</"
