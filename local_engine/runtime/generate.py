"""Streaming generation: prompt ids in, events out (text, reasoning, usage, done with stats).

The loop is model-agnostic: it needs ``model.make_cache()`` and ``model(tokens, cache=cache)``
returning [1, T, vocab] logits, and uses ``model.prefill(tokens, cache, chunk_size=...)``
(logits of the last position only) when the model has it. The prompt is prefilled in
chunks, so a long prompt reports progress and can be cancelled between chunks. Decoding is
pipelined: the next step's graph is queued with ``mx.async_eval`` before the host reads the
current token, so the device is not idle while Python detokenizes. Nothing here imports
ds4router: events are plain frozen dataclasses that the application adapts.

With a prefix cache (``local_engine.cache.prefix_cache``) the longest cached prefix of the prompt is
restored from disk and only the rest is prefilled; snapshots of the state are queued for the
disk at the prompt's end, at given save points, every ``snapshot_every`` tokens of a long
prefill and at the end of the generated turn. ``GenerationStats`` then says how many prompt
tokens came from the cache and how long the restore took.

In thinking mode the prompt ends with ``<think>``; generated text up to ``</think>`` is
streamed as ``ReasoningDelta``, the rest as ``TextDelta``. Stop strings apply to the answer
only (a model's reasoning may legitimately mention them), and the stop string itself is
never emitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local_engine.errors import EngineError
from local_engine.runtime.sampling import Sampler, SamplingParams, StopMatcher
from local_engine.runtime.tokenizer import THINK_END, Tokenizer

if TYPE_CHECKING:
    from local_engine.cache.prefix_cache import PrefixCache

FINISH_STOP = "stop"  # end-of-sentence token or a stop string
FINISH_LENGTH = "length"  # max_tokens or the context limit
FINISH_CANCELLED = "cancelled"

PrefillProgress = Callable[[int, int], None]  # (tokens done, tokens total)


class GenerationError(EngineError):
    """A generation request cannot run as given (parameters, prompt too long)."""


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer; pieces concatenate to the full answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (thinking mode only)."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation. ``generated_tokens`` includes reasoning tokens."""

    prompt_tokens: int
    generated_tokens: int
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class GenerationStats:
    """What one generation cost in time and memory. Rates are 0.0 where undefined."""

    prompt_tokens: int
    generated_tokens: int
    prefill_s: float
    prefill_tok_s: float
    ttft_s: float  # from the call to the first sampled token, prompt encoding included
    decode_s: float  # from the first to the last sampled token
    decode_tok_s: float  # tokens after the first / decode_s
    total_s: float
    peak_memory_bytes: int
    # Prompt tokens restored from the KV cache on disk (not prefilled), and the time the
    # restore took (lookup, read, checks, rebuilding the state); both within ttft_s.
    cached_prompt_tokens: int = 0
    kv_restore_s: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "kv_restore_s": self.kv_restore_s,
            "prefill_s": self.prefill_s,
            "prefill_tok_s": self.prefill_tok_s,
            "ttft_s": self.ttft_s,
            "decode_s": self.decode_s,
            "decode_tok_s": self.decode_tok_s,
            "total_s": self.total_s,
            "peak_memory_bytes": self.peak_memory_bytes,
        }


@dataclass(frozen=True)
class Done:
    """The last event: why generation ended, its stats, and every sampled token id
    (a final end-of-sentence token included), e.g. to extend a cached prefix."""

    finish_reason: str
    stats: GenerationStats
    token_ids: tuple[int, ...] = ()


Event = TextDelta | ReasoningDelta | Usage | Done


@dataclass(frozen=True)
class GenerationParams:
    """One request's knobs. Sampling defaults follow DeepSeek's recommendation for V4
    (temperature 1.0, top_p 1.0); ``temperature=0`` is greedy."""

    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    thinking: bool = False
    reasoning_effort: str | None = None
    prefill_chunk_size: int = 512
    extra_stop_token_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise GenerationError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.prefill_chunk_size < 1:
            raise GenerationError(
                f"prefill_chunk_size must be at least 1, got {self.prefill_chunk_size}"
            )
        if isinstance(self.stop, str):
            raise GenerationError("stop must be a sequence of strings, not a single string")
        self.sampling()  # validates the sampling fields now rather than mid-request

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            min_p=self.min_p,
            top_k=self.top_k,
            seed=self.seed,
        )


class ReasoningSplitter:
    """Routes streamed text to reasoning until ``</think>``, then to the answer.

    ``</think>`` normally arrives as one special token, but a model may spell it in pieces;
    a tail that could be its start is held back until the next piece decides.
    """

    def __init__(self, thinking: bool) -> None:
        self.in_reasoning = thinking
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Returns (reasoning text, answer text) that are safe to emit now."""
        if not self.in_reasoning:
            return "", text
        buffer = self._held + text
        end = buffer.find(THINK_END)
        if end >= 0:
            self._held = ""
            self.in_reasoning = False
            return buffer[:end], buffer[end + len(THINK_END) :]
        hold = 0
        for size in range(min(len(THINK_END) - 1, len(buffer)), 0, -1):
            if buffer.endswith(THINK_END[:size]):
                hold = size
                break
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], ""

    def flush(self) -> str:
        """Held-back reasoning at the end of the stream (it was not ``</think>``)."""
        held, self._held = self._held, ""
        return held


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if tokens > 0 and seconds > 0 else 0.0


def stream_generate(
    model: Any,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    *,
    eos_token_ids: Sequence[int] = (),
    context_limit: int | None = None,
    cancel: threading.Event | None = None,
    on_prefill_progress: PrefillProgress | None = None,
    started_at: float | None = None,
    prefix_cache: PrefixCache | None = None,
    make_cache: Callable[[], Any] | None = None,
    save_points: Sequence[int] = (),
    save_turn_end: bool = True,
) -> Iterator[Event]:
    """Generate from ``prompt_ids`` with ``model``; yields deltas, then ``Usage``, then ``Done``.

    ``cancel`` may be set from any thread; it is checked between prefill chunks and between
    tokens, and ends the stream with ``Done("cancelled")``. ``started_at`` (a
    ``time.perf_counter()`` value) lets the caller include prompt encoding in TTFT.

    With ``prefix_cache`` the longest cached prefix of the prompt is restored and only the
    rest is prefilled; snapshots are saved at the prompt's end, at ``save_points``
    (prompt positions, e.g. where a re-rendered conversation will diverge), every
    ``prefix_cache.snapshot_every`` tokens of a long prefill, and -- with
    ``save_turn_end`` -- after the generated turn. ``make_cache`` builds the empty
    decode state (default ``model.make_cache``; e.g. a tiered one).
    """
    import mlx.core as mx

    t_start = time.perf_counter() if started_at is None else started_at
    prompt_tokens = len(prompt_ids)
    if prompt_tokens == 0:
        raise GenerationError("the prompt is empty; send at least one message")
    max_tokens = params.max_tokens
    if context_limit is not None:
        room = context_limit - prompt_tokens
        if room < 1:
            raise GenerationError(
                f"the prompt is {prompt_tokens} tokens but the model's context limit is "
                f"{context_limit}; shorten the conversation"
            )
        max_tokens = min(max_tokens, room)

    stop_ids = {tokenizer.special.eos, *eos_token_ids, *params.extra_stop_token_ids}
    think_start = tokenizer.special.think_start
    sampler = Sampler(params.sampling())
    detok = tokenizer.detokenizer()
    splitter = ReasoningSplitter(params.thinking)
    stops = StopMatcher(params.stop)
    mx.reset_peak_memory()

    generated = 0
    sampled: list[int] = []
    reasoning_tokens = 0
    prefill_s = 0.0
    first_token_at: float | None = None
    last_token_at: float | None = None
    finish = FINISH_LENGTH

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    def route(piece: str, final: bool = False) -> Iterator[Event]:
        """Send decoded text through the reasoning split and the stop matcher."""
        reasoning, answer = splitter.feed(piece)
        if final:
            reasoning += splitter.flush()
        if reasoning:
            yield ReasoningDelta(reasoning)
        text, hit = stops.feed(answer)
        if final and not hit:
            text += stops.flush()
        if text:
            yield TextDelta(text)

    # -- restore the longest cached prefix ----------------------------------------------------
    new_cache: Callable[[], Any] = make_cache or model.make_cache
    cache = None
    last_logits = None
    cached = 0
    restore_s = 0.0
    if prefix_cache is not None:
        t_restore = time.perf_counter()
        restored = prefix_cache.restore(prompt_ids, new_cache)
        restore_s = time.perf_counter() - t_restore
        if restored is not None:
            cache, cached, last_logits = restored.cache, restored.tokens, restored.logits
            if on_prefill_progress is not None:
                on_prefill_progress(cached, prompt_tokens)
    if cache is None:
        cache = new_cache()
    saves: set[int] = set()
    if prefix_cache is not None:
        every = prefix_cache.snapshot_every
        saves = {p for p in save_points if cached < p <= prompt_tokens} | {prompt_tokens}
        if every:
            saves |= set(range((cached // every + 1) * every, prompt_tokens, every))
        saves.discard(cached)

    # -- prefill the rest, in chunks ------------------------------------------------------------
    prefill_last = getattr(model, "prefill", None)
    prompt = mx.array(list(prompt_ids), dtype=mx.int32)[None]
    chunk = params.prefill_chunk_size
    t_prefill = time.perf_counter()
    done = cached
    while done < prompt_tokens:
        if cancelled():
            finish = FINISH_CANCELLED
            break
        # Chunks end at multiples of the chunk size and at save points.
        end = min(
            (done // chunk + 1) * chunk,
            prompt_tokens,
            min((p for p in saves if p > done), default=prompt_tokens),
        )
        piece = prompt[:, done:end]
        if prefill_last is not None:
            # The model's own prefill computes the head for the last position only.
            last_logits = prefill_last(piece, cache, chunk_size=end - done)[:, -1, :]
        else:
            last_logits = model(piece, cache=cache)[:, -1, :]
        # Evaluating forces this chunk (and the cache it wrote) now, so progress reports
        # and cancellation happen at true chunk boundaries.
        mx.eval(last_logits)
        done = end
        if prefix_cache is not None and done in saves:
            prefix_cache.save(cache, prompt_ids[:done], last_logits)
        if on_prefill_progress is not None:
            on_prefill_progress(done, prompt_tokens)
    prefill_s = time.perf_counter() - t_prefill
    cache_logits = last_logits  # the logits after the last token the cache has seen

    # -- decode, pipelined -------------------------------------------------------------------
    if finish != FINISH_CANCELLED and last_logits is not None:
        y = sampler(last_logits)
        mx.async_eval(y)
        while True:
            next_y = None
            if generated + 1 < max_tokens:
                # Queue the next step before syncing on this one. If this token turns out
                # to be EOS or a stop, the extra step is wasted work, never emitted.
                next_logits = model(y.reshape(1, 1), cache=cache)[:, -1, :]
                cache_logits = next_logits
                next_y = sampler(next_logits)
                mx.async_eval(next_y)
            token = int(y.item())  # type: ignore[arg-type]
            sampled.append(token)
            now = time.perf_counter()
            if first_token_at is None:
                first_token_at = now
            last_token_at = now
            generated += 1
            if token in stop_ids:
                finish = FINISH_STOP
                break
            if splitter.in_reasoning:
                reasoning_tokens += 1
            # The prompt already opened the thinking block: a repeated <think> is not text.
            if not (generated == 1 and params.thinking and token == think_start):
                yield from route(detok.add(token))
            if stops.stopped is not None:
                finish = FINISH_STOP
                break
            if generated >= max_tokens or next_y is None:
                finish = FINISH_LENGTH
                break
            if cancelled():
                finish = FINISH_CANCELLED
                break
            y = next_y

    if stops.stopped is None:
        yield from route(detok.flush(), final=True)

    if (
        prefix_cache is not None
        and save_turn_end
        and finish != FINISH_CANCELLED
        and cache_logits is not None
    ):
        # The pipelined loop may have fed the last sampled token (an end-of-sentence one
        # included) or not: the snapshot is keyed by exactly what the cache has seen.
        seen = int(getattr(cache, "offset", 0))
        turn = [*prompt_ids, *sampled]
        if prompt_tokens < seen <= len(turn):
            prefix_cache.save(cache, turn[:seen], cache_logits)

    t_end = time.perf_counter()
    ttft = (first_token_at - t_start) if first_token_at is not None else 0.0
    decode_s = (
        (last_token_at - first_token_at)
        if first_token_at is not None and last_token_at is not None
        else 0.0
    )
    stats = GenerationStats(
        prompt_tokens=prompt_tokens,
        generated_tokens=generated,
        prefill_s=prefill_s,
        prefill_tok_s=_rate(done - cached, prefill_s),
        ttft_s=ttft,
        decode_s=decode_s,
        decode_tok_s=_rate(generated - 1, decode_s),
        total_s=t_end - t_start,
        peak_memory_bytes=int(mx.get_peak_memory()),
        cached_prompt_tokens=cached,
        kv_restore_s=restore_s,
    )
    yield Usage(prompt_tokens, generated, reasoning_tokens)
    yield Done(finish, stats, tuple(sampled))
