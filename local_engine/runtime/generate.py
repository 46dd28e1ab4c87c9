"""Streaming generation: prompt ids in, events out (text, reasoning, tool calls, usage, done).

Two layers. The token loop here is model-agnostic: it needs ``model.make_cache()`` and
``model(tokens, cache=cache)`` returning [1, T, vocab] logits, and uses
``model.prefill(tokens, cache, chunk_size=...)`` (logits of the last position only) when the
model has it. The prompt is prefilled in chunks, so a long prompt reports progress and can be
cancelled between chunks. Decoding is pipelined: the next step's graph is queued with
``mx.async_eval`` before the host reads the current token, so the device is not idle while
Python detokenizes. The event layer (``local_engine.runtime.token_events``) turns the sampled
ids into text, reasoning and tool-call events. Nothing here imports ds4router.

``generation_steps`` yields ``None`` between prefill chunks and after tokens that complete no
event: points where a scheduler (``local_engine.runtime.scheduler``) may run another
generation's step. ``stream_generate`` is the same stream without them.

With a prefix cache (``local_engine.cache.prefix_cache``, or a session's view of live states
in RAM, ``local_engine.cache.sessions``) the longest cached prefix of the prompt is restored
and only the rest is prefilled; snapshots of the state are queued at the prompt's end, at
given save points, every ``snapshot_every`` tokens of a long prefill and at the end of the
generated turn. ``GenerationStats`` then says how many prompt tokens came from the cache and
how long the restore took.

In thinking mode the prompt ends with ``<think>``; generated text up to ``</think>`` is
streamed as ``ReasoningDelta``, the rest as ``TextDelta``. Stop strings apply to the answer
only (a model's reasoning may legitimately mention them), and the stop string itself is
never emitted. With tools, DSML tool calls in the answer become ``ToolCallStart`` /
``ToolCallDelta`` / ``ToolCallEnd`` events, and a turn that ends after complete calls
finishes with ``"tool_calls"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from local_engine.errors import EngineError
from local_engine.runtime.events import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    FINISH_TOOL_CALLS,
    Done,
    Event,
    GenerationStats,
    ReasoningDelta,
    TextDelta,
    Usage,
)
from local_engine.runtime.sampling import Sampler, SamplingParams
from local_engine.runtime.token_events import ReasoningSplitter, TokenEvents
from local_engine.runtime.tokenizer import Tokenizer

if TYPE_CHECKING:
    from local_engine.cache.prefix_cache import Restored

__all__ = [
    "FINISH_CANCELLED",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "FINISH_TOOL_CALLS",
    "Done",
    "Event",
    "GenerationError",
    "GenerationParams",
    "GenerationStats",
    "ReasoningDelta",
    "ReasoningSplitter",
    "TextDelta",
    "Usage",
    "generation_steps",
    "stream_generate",
]

PrefillProgress = Callable[[int, int], None]  # (tokens done, tokens total)


class Cancel(Protocol):
    """What a generation polls to stop early (a ``threading.Event`` is one)."""

    def is_set(self) -> bool: ...


class StateCache(Protocol):
    """Where decode states are restored from and saved to (``PrefixCache``, a session)."""

    snapshot_every: int

    def restore(
        self, prompt_ids: Sequence[int], make_cache: Callable[[], Any]
    ) -> Restored | None: ...

    def save(self, cache: Any, token_ids: Sequence[int], logits: Any) -> bool: ...


class GenerationError(EngineError):
    """A generation request cannot run as given (parameters, prompt too long)."""


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
    # OpenAI tool definitions and response format: rendered into the prompt (DSML) and,
    # with tools, tool calls read out of the answer.
    tools: tuple[Any, ...] = ()
    response_format: Any = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise GenerationError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.prefill_chunk_size < 1:
            raise GenerationError(
                f"prefill_chunk_size must be at least 1, got {self.prefill_chunk_size}"
            )
        if isinstance(self.tools, (str, dict)):
            raise GenerationError("tools must be a sequence of tool definitions")
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


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if tokens > 0 and seconds > 0 else 0.0


@dataclass
class _Run:
    """The mutable state of one generation's token loop."""

    model: Any
    prompt_ids: Sequence[int]
    params: GenerationParams
    state_cache: StateCache | None
    cancel: Cancel | None
    on_prefill_progress: PrefillProgress | None
    t_start: float
    cache: Any = None
    logits: Any = None  # after the last token the cache has seen
    cached: int = 0
    restore_s: float = 0.0
    prefilled_to: int = 0
    prefill_s: float = 0.0
    sampled: list[int] = field(default_factory=list)
    first_token_at: float | None = None
    last_token_at: float | None = None

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def progress(self, done: int) -> None:
        if self.on_prefill_progress is not None:
            self.on_prefill_progress(done, len(self.prompt_ids))

    def restore(self, new_cache: Callable[[], Any]) -> None:
        """The longest cached prefix of the prompt, or an empty state."""
        if self.state_cache is not None:
            t_restore = time.perf_counter()
            restored = self.state_cache.restore(self.prompt_ids, new_cache)
            self.restore_s = time.perf_counter() - t_restore
            if restored is not None:
                self.cache, self.cached, self.logits = (
                    restored.cache,
                    restored.tokens,
                    restored.logits,
                )
                self.progress(self.cached)
        if self.cache is None:
            self.cache = new_cache()
        self.prefilled_to = self.cached

    def save_points(self, extra: Sequence[int]) -> set[int]:
        if self.state_cache is None:
            return set()
        total, cached = len(self.prompt_ids), self.cached
        every = self.state_cache.snapshot_every
        saves = {p for p in extra if cached < p <= total} | {total}
        if every:
            saves |= set(range((cached // every + 1) * every, total, every))
        saves.discard(cached)
        return saves

    def prefill(self, saves: set[int]) -> Iterator[None]:
        """Prefills the rest of the prompt in chunks, yielding after each."""
        import mlx.core as mx

        prefill_last = getattr(self.model, "prefill", None)
        prompt = mx.array(list(self.prompt_ids), dtype=mx.int32)[None]
        total, chunk = len(self.prompt_ids), self.params.prefill_chunk_size
        t_prefill = time.perf_counter()
        done = self.cached
        while done < total and not self.cancelled():
            # Chunks end at multiples of the chunk size and at save points.
            next_save = min((p for p in saves if p > done), default=total)
            end = min((done // chunk + 1) * chunk, total, next_save)
            piece = prompt[:, done:end]
            if prefill_last is not None:
                # The model's own prefill computes the head for the last position only.
                self.logits = prefill_last(piece, self.cache, chunk_size=end - done)[:, -1, :]
            else:
                self.logits = self.model(piece, cache=self.cache)[:, -1, :]
            # Evaluating forces this chunk (and the cache it wrote) now, so progress reports
            # and cancellation happen at true chunk boundaries.
            mx.eval(self.logits)
            done = end
            if self.state_cache is not None and done in saves:
                self.state_cache.save(self.cache, self.prompt_ids[:done], self.logits)
            self.progress(done)
            self.prefill_s = time.perf_counter() - t_prefill
            self.prefilled_to = done
            yield None

    def decode(self, sampler: Sampler, max_tokens: int) -> Iterator[int]:
        """Sampled token ids, pipelined: the next step is queued before this one is read.
        The consumer stops by no longer asking; at most one queued step is then wasted."""
        import mlx.core as mx

        y = sampler(self.logits)
        mx.async_eval(y)
        while True:
            next_y = None
            if len(self.sampled) + 1 < max_tokens:
                next_logits = self.model(y.reshape(1, 1), cache=self.cache)[:, -1, :]
                self.logits = next_logits
                next_y = sampler(next_logits)
                mx.async_eval(next_y)
            token = int(y.item())  # type: ignore[arg-type]
            self.sampled.append(token)
            now = time.perf_counter()
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
            yield token
            if next_y is None:
                return
            y = next_y

    def save_turn_end(self) -> None:
        """Snapshot after the generated turn, keyed by exactly what the cache has seen (the
        pipelined loop may or may not have fed the last sampled token)."""
        if self.state_cache is None or self.logits is None:
            return
        seen = int(getattr(self.cache, "offset", 0))
        turn = [*self.prompt_ids, *self.sampled]
        if len(self.prompt_ids) < seen <= len(turn):
            self.state_cache.save(self.cache, turn[:seen], self.logits)

    def stats(self) -> GenerationStats:
        import mlx.core as mx

        first, last = self.first_token_at, self.last_token_at
        decode_s = (last - first) if first is not None and last is not None else 0.0
        generated = len(self.sampled)
        return GenerationStats(
            prompt_tokens=len(self.prompt_ids),
            generated_tokens=generated,
            prefill_s=self.prefill_s,
            prefill_tok_s=_rate(self.prefilled_to - self.cached, self.prefill_s),
            ttft_s=(first - self.t_start) if first is not None else 0.0,
            decode_s=decode_s,
            decode_tok_s=_rate(generated - 1, decode_s),
            total_s=time.perf_counter() - self.t_start,
            peak_memory_bytes=int(mx.get_peak_memory()),
            cached_prompt_tokens=self.cached,
            kv_restore_s=self.restore_s,
        )


def _token_budget(prompt_tokens: int, params: GenerationParams, context_limit: int | None) -> int:
    if prompt_tokens == 0:
        raise GenerationError("the prompt is empty; send at least one message")
    if context_limit is None:
        return params.max_tokens
    room = context_limit - prompt_tokens
    if room < 1:
        raise GenerationError(
            f"the prompt is {prompt_tokens} tokens but the model's context limit is "
            f"{context_limit}; shorten the conversation"
        )
    return min(params.max_tokens, room)


def generation_steps(
    model: Any,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    *,
    eos_token_ids: Sequence[int] = (),
    context_limit: int | None = None,
    cancel: Cancel | None = None,
    on_prefill_progress: PrefillProgress | None = None,
    started_at: float | None = None,
    prefix_cache: StateCache | None = None,
    make_cache: Callable[[], Any] | None = None,
    save_points: Sequence[int] = (),
    save_turn_end: bool = True,
) -> Iterator[Event | None]:
    """``stream_generate``'s events, with ``None`` at every point another generation may
    take a turn (after each prefill chunk and each token that completed no event)."""
    import mlx.core as mx

    t_start = time.perf_counter() if started_at is None else started_at
    max_tokens = _token_budget(len(prompt_ids), params, context_limit)
    stop_ids = {tokenizer.special.eos, *eos_token_ids, *params.extra_stop_token_ids}
    layer = TokenEvents(
        tokenizer, thinking=params.thinking, stop=params.stop, tools=bool(params.tools)
    )
    mx.reset_peak_memory()
    run = _Run(model, prompt_ids, params, prefix_cache, cancel, on_prefill_progress, t_start)
    run.restore(make_cache or model.make_cache)
    yield from run.prefill(run.save_points(save_points))

    # Cancelled during prefill (a cancel after it is seen after the first token).
    finish = FINISH_CANCELLED if run.prefilled_to < len(prompt_ids) else FINISH_LENGTH
    if finish != FINISH_CANCELLED and run.logits is not None:
        for token in run.decode(Sampler(params.sampling()), max_tokens):
            if token in stop_ids:
                finish = FINISH_STOP
                break
            events = layer.token(token)
            yield from events or [None]
            if layer.stopped:
                finish = FINISH_STOP
                break
            if run.cancelled() and len(run.sampled) < max_tokens:
                finish = FINISH_CANCELLED
                break
    yield from layer.finish()
    if finish == FINISH_STOP and layer.completed_calls and not layer.stopped:
        finish = FINISH_TOOL_CALLS
    if save_turn_end and finish != FINISH_CANCELLED:
        run.save_turn_end()
    yield Usage(len(prompt_ids), len(run.sampled), layer.reasoning_tokens)
    yield Done(finish, run.stats(), tuple(run.sampled))


def stream_generate(
    model: Any,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    **options: Any,
) -> Iterator[Event]:
    """Generate from ``prompt_ids`` with ``model``; yields deltas, then ``Usage``, then ``Done``.

    Options (keywords): ``eos_token_ids``; ``context_limit``; ``cancel`` (set from any
    thread; checked between prefill chunks and between tokens; ends the stream with
    ``Done("cancelled")``); ``on_prefill_progress``; ``started_at`` (a
    ``time.perf_counter()`` value, so TTFT can include prompt encoding); ``prefix_cache``:
    the longest cached prefix of the prompt is restored and only the rest prefilled;
    snapshots are saved at the prompt's end, at ``save_points`` (prompt positions, e.g.
    where a re-rendered conversation will diverge), every ``prefix_cache.snapshot_every``
    tokens of a long prefill, and -- with ``save_turn_end`` -- after the generated turn;
    ``make_cache`` builds the empty decode state (default ``model.make_cache``).
    """
    for event in generation_steps(model, tokenizer, prompt_ids, params, **options):
        if event is not None:
            yield event
