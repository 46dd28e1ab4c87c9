"""The engine's own events: what a generation streams to whoever runs it.

Plain frozen dataclasses, one vocabulary for the whole engine (``local_engine`` never imports
ds4router; the application adapts these to its own events). A stream is text and reasoning
deltas and tool-call events in order, then ``Usage``, then ``Done``. The tool-call events
are defined with their parser in ``local_engine.runtime.dsml_parser`` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from local_engine.runtime.dsml_parser import (
    ToolCallDelta,
    ToolCallEnd,
    ToolCallError,
    ToolCallStart,
)

FINISH_STOP = "stop"  # end-of-sentence token or a stop string
FINISH_LENGTH = "length"  # max_tokens or the context limit
FINISH_CANCELLED = "cancelled"
FINISH_TOOL_CALLS = "tool_calls"  # stopped after writing one or more complete tool calls


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
    # Prompt tokens restored from the KV cache (a live session in RAM or the store on disk,
    # not prefilled), and the time the restore took; both within ttft_s.
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


ToolEvent = ToolCallStart | ToolCallDelta | ToolCallEnd | ToolCallError
Event = TextDelta | ReasoningDelta | ToolEvent | Usage | Done

__all__ = [
    "FINISH_CANCELLED",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "FINISH_TOOL_CALLS",
    "Done",
    "Event",
    "GenerationStats",
    "ReasoningDelta",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallError",
    "ToolCallStart",
    "ToolEvent",
    "Usage",
]
