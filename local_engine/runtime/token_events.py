"""The event layer of a generation: sampled token ids in, engine events out.

Each token goes through the streaming detokenizer (whole characters only), the reasoning
split (thinking mode: text up to ``</think>`` is reasoning), the DSML tool-call parser (when
the request has tools) and the stop strings (answer text only: a model's reasoning may
mention them, and a tool call's arguments are not prose). The token loop in
``local_engine.runtime.generate`` knows nothing of text; this layer knows nothing of models.
"""

from __future__ import annotations

from local_engine.runtime.dsml_parser import Parsed, ToolCallEnd, ToolCallParser
from local_engine.runtime.events import Event, ReasoningDelta, TextDelta
from local_engine.runtime.sampling import StopMatcher
from local_engine.runtime.tokenizer import THINK_END, Tokenizer


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


class TokenEvents:
    """Turns one generation's token ids into events (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        thinking: bool,
        stop: tuple[str, ...] = (),
        tools: bool = False,
        call_id_prefix: str | None = None,
    ) -> None:
        self._detok = tokenizer.detokenizer()
        self._think_start = tokenizer.special.think_start
        self._thinking = thinking
        self._splitter = ReasoningSplitter(thinking)
        self._stops = StopMatcher(stop)
        self._calls = ToolCallParser(call_id_prefix) if tools else None
        self.tokens = 0
        self.reasoning_tokens = 0
        self.completed_calls = 0

    @property
    def stopped(self) -> bool:
        """A stop string matched: the generation should end."""
        return self._stops.stopped is not None

    def token(self, token_id: int) -> list[Event]:
        """Events that became certain with this (non end-of-sentence) token."""
        self.tokens += 1
        if self._splitter.in_reasoning:
            self.reasoning_tokens += 1
        # The prompt already opened the thinking block: a repeated <think> is not text.
        if self.tokens == 1 and self._thinking and token_id == self._think_start:
            return []
        return self._route(self._detok.add(token_id), final=False)

    def finish(self) -> list[Event]:
        """Whatever was held back, at the end of the stream."""
        if self.stopped:
            return []
        return self._route(self._detok.flush(), final=True)

    def _route(self, piece: str, final: bool) -> list[Event]:
        out: list[Event] = []
        reasoning, answer = self._splitter.feed(piece)
        if final:
            reasoning += self._splitter.flush()
        if reasoning:
            out.append(ReasoningDelta(reasoning))
        parsed: list[Parsed] = [answer] if self._calls is None else self._calls.feed(answer)
        if final and self._calls is not None:
            parsed += self._calls.close()
        for item in parsed:
            if isinstance(item, str):
                out += self._text(item, final=False)
            else:
                if isinstance(item, ToolCallEnd):
                    self.completed_calls += 1
                out.append(item)
        if final:
            out += self._text("", final=True)
        return out

    def _text(self, text: str, final: bool) -> list[Event]:
        if self._stops.stopped is not None:
            return []
        safe, hit = self._stops.feed(text)
        if final and not hit:
            safe += self._stops.flush()
        return [TextDelta(safe)] if safe else []
