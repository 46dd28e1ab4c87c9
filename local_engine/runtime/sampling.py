"""Choosing the next token, and stopping on stop strings that may span token boundaries.

``Sampler`` works on mlx arrays and never syncs with the host itself, so the decode loop can
queue the next step before it reads the current token. Filters apply in the order
temperature -> top_k -> top_p -> min_p, each on the distribution the previous one left;
temperature 0 is greedy (argmax) and ignores the others. A seed makes the whole sequence of
draws reproducible: the sampler owns a PRNG key and splits it once per token.

``StopMatcher`` scans streamed text for stop strings. A stop string can arrive in pieces
("</" then "stop>"), so text that could still be the start of one is held back until the
next piece decides; nothing after a stop string's start is ever released.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from local_engine.errors import EngineError

if TYPE_CHECKING:
    import mlx.core as mx


class SamplingError(EngineError):
    """A sampling parameter is out of range."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick a token from logits. Defaults are the model card's recommendation for
    chat (temperature 1.0, top_p 1.0)."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    top_k: int = 0  # 0: no limit
    seed: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise SamplingError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise SamplingError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.top_k < 0:
            raise SamplingError(f"top_k must be >= 0 (0 means no limit), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logprobs(logprobs: mx.array, params: SamplingParams) -> mx.array:
    """Mask (to -inf) the tokens top_k, top_p and min_p exclude. ``logprobs``: [..., vocab],
    normalised log-probabilities after temperature."""
    import mlx.core as mx

    neg_inf = mx.array(-math.inf, dtype=logprobs.dtype)
    vocab = logprobs.shape[-1]
    if 0 < params.top_k < vocab:
        # The k-th largest value is the threshold; ties at it are all kept.
        kth = mx.sort(logprobs, axis=-1)[..., vocab - params.top_k : vocab - params.top_k + 1]
        logprobs = mx.where(logprobs < kth, neg_inf, logprobs)
        logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
    if params.top_p < 1.0:
        order = mx.argsort(-logprobs, axis=-1)
        sorted_probs = mx.exp(mx.take_along_axis(logprobs, order, axis=-1))
        # Keep a token when the mass strictly before it is below top_p: the smallest set
        # reaching top_p, and always the most likely token.
        before = mx.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = before < params.top_p
        keep = mx.put_along_axis(
            mx.zeros(logprobs.shape, dtype=mx.bool_), order, keep_sorted, axis=-1
        )
        logprobs = mx.where(keep, logprobs, neg_inf)
        logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
    if params.min_p > 0.0:
        threshold = mx.max(logprobs, axis=-1, keepdims=True) + math.log(params.min_p)
        logprobs = mx.where(logprobs < threshold, neg_inf, logprobs)
    return logprobs


class Sampler:
    """Picks token ids from logits; one instance per generation (it carries the PRNG state)."""

    def __init__(self, params: SamplingParams) -> None:
        import mlx.core as mx

        self.params = params
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self._key = mx.random.key(seed)

    def __call__(self, logits: mx.array) -> mx.array:
        """``logits``: [vocab] or [batch, vocab] -> int32 ids, [] or [batch]. Lazy."""
        import mlx.core as mx

        logits = logits.astype(mx.float32)
        if self.params.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        self._key, draw = mx.random.split(self._key)
        scaled = logits / self.params.temperature
        logprobs = scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)
        logprobs = filter_logprobs(logprobs, self.params)
        return mx.random.categorical(logprobs, axis=-1, key=draw).astype(mx.int32)


class StopMatcher:
    """Finds stop strings in streamed text, releasing only text that cannot be part of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped: str | None = None  # the stop string that matched, once one has

    def feed(self, text: str) -> tuple[str, bool]:
        """Add streamed text; returns (text safe to emit, whether a stop string matched).
        After a match, the text before it is returned and everything else is dropped."""
        if self.stopped is not None:
            return "", True
        buffer = self._held + text
        if not self.stops:
            self._held = ""
            return buffer, False
        # The stop that completes first wins (ties: the one that starts first). A stream
        # cannot wait for a longer stop that might still complete, so the whole-text
        # answer must be the same for every split of the text into pieces.
        first: tuple[int, int, str] | None = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0:
                key = (at + len(stop), at, stop)
                if first is None or key[:2] < first[:2]:
                    first = key
        if first is not None:
            self._held = ""
            self.stopped = first[2]
            return buffer[: first[1]], True
        hold = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest tail of ``buffer`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def flush(self) -> str:
        """Text held back at the end of the stream: it turned out not to be a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped is not None else held
