"""DeepSeek V4 chat encoding: messages -> prompt text, and generated text -> (reasoning, answer).

Matched against the official encoder shipped with the model release,
``encoding/encoding_dsv4.py`` of deepseek-ai/DeepSeek-V4-Flash (the copy we read is the one
FlagOS republished from the release's ModelScope tree, flagos-ai/DeepSeek-V4-FlagOS
``encoding_dsv4.py`` at commit 55022498, cross-checked against supermy/ds4rs
``encoding/encoding_dsv4.py`` at 2ecc534c). This is our own code; it reproduces that
encoder's ``encode_messages(messages, thinking_mode, drop_thinking=True,
add_default_bos_token=True, reasoning_effort=...)`` for the roles system, user, assistant,
tool and developer, tools included (``tests/local_engine/test_chat_identity.py`` holds the
official encoder's output for a few hundred random conversations):

- BOS, then each message in order. System text is written bare; a user turn is
  ``<｜User｜>`` + text; consecutive user/tool messages merge into one user turn whose
  parts are joined by a blank line, a tool result written as ``<tool_result>...</tool_result>``;
  several tool results in one turn are ordered like the calls (by ``tool_call_id``) of the
  latest assistant turn that made calls.
- Tool definitions and ``response_format`` on a system or developer message append the DSML
  "## Tools" and "## Response Format" sections to it (``local_engine.runtime.dsml``);
  ``render_prompt(tools=..., response_format=...)`` puts request-level ones on the first
  system message (one with empty text is added in front when there is none). An assistant
  turn's ``tool_calls`` follow its text as a DSML block.
- After a user turn that is followed by an assistant turn or ends the conversation comes
  ``<｜Assistant｜>`` and then ``</think>`` (chat mode, and every earlier turn in thinking
  mode) or ``<think>`` (thinking mode, at the last user turn).
- An assistant turn is its text then ``<｜end▁of▁sentence｜>``. In thinking mode, an
  assistant turn after the last user turn keeps ``reasoning</think>`` in front of its text;
  earlier ones lose their reasoning, and developer messages before the last user turn are
  dropped, as the official encoder does by default -- unless the conversation has tools:
  then nothing is dropped and every user turn opens ``<think>``.
- ``reasoning_effort="max"`` in thinking mode writes the official effort preamble right after
  BOS; ``"high"`` and ``None`` change nothing (the official encoder accepts exactly these three).

Refused with an error instead of being silently ignored (the official encoder drops them or
fails): quick-instruction ``task`` fields, ``latest_reminder`` messages, tools or
``response_format`` on a user, tool or assistant message, non-text content parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from local_engine.errors import EngineError
from local_engine.runtime.dsml import (
    ToolCall,
    ToolCallFormatError,
    render_tool_calls,
    response_format_section,
    tool_call_of,
    tools_section,
)
from local_engine.runtime.tokenizer import ASSISTANT, BOS, EOS, THINK_END, THINK_START, USER

# The official preamble for reasoning_effort="max", byte for byte.
REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n"
)
REASONING_EFFORTS = (None, "high", "max")
TOOL_RESULT_OPEN = "<tool_result>"
TOOL_RESULT_CLOSE = "</tool_result>"
PART_SEPARATOR = "\n\n"

_ROLES = ("system", "user", "assistant", "tool", "developer")
_INSTRUCTION_ROLES = ("system", "developer")  # the roles that may carry tools
_UNSUPPORTED_KEYS = {
    "task": "quick-instruction tasks are not supported by the local engine",
}


class ChatEncodingError(EngineError):
    """The messages cannot be written in the DeepSeek V4 chat format."""


@dataclass(frozen=True)
class _Part:
    """One part of a merged user turn; a tool result remembers which call it answers."""

    text: str
    tool_call_id: str | None = None


@dataclass(frozen=True)
class _Turn:
    """One message after normalisation and tool-result merging."""

    role: str
    text: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    has_tools: bool = False


@dataclass
class _Merger:
    """Folds tool results and consecutive user messages into one user turn, as the official
    ``merge_tool_messages`` and ``sort_tool_results_by_call_order`` do."""

    turns: list[_Turn] = field(default_factory=list)
    open_parts: list[_Part] | None = None  # the open user turn's parts, while it is the last
    call_order: dict[str, int] = field(default_factory=dict)  # of the latest calling turn

    def add_part(self, part: _Part) -> None:
        if self.open_parts is None:
            self.open_parts = []
        self.open_parts.append(part)

    def close_user(self) -> None:
        if self.open_parts is None:
            return
        parts = self._sorted(self.open_parts)
        self.turns.append(_Turn("user", PART_SEPARATOR.join(part.text for part in parts)))
        self.open_parts = None

    def _sorted(self, parts: list[_Part]) -> list[_Part]:
        results = [part for part in parts if part.tool_call_id is not None]
        if len(results) < 2 or not self.call_order:
            return parts
        # A stable sort; results whose id the calls do not name sort as the first call.
        ordered = iter(sorted(results, key=lambda p: self.call_order.get(p.tool_call_id or "", 0)))
        return [next(ordered) if part.tool_call_id is not None else part for part in parts]

    def add_turn(self, turn: _Turn) -> None:
        self.close_user()
        if turn.tool_calls:
            self.call_order = {c.id: i for i, c in enumerate(turn.tool_calls) if c.id}
        self.turns.append(turn)


def _field(message: Any, key: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(key)
    return getattr(message, key, None)


def _text_of(content: Any, where: str) -> str:
    """A message's text. OpenAI-style lists of text parts are joined like the official
    encoder joins the parts of a tool result."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts: list[str] = []
        for part in content:
            kind = _field(part, "type")
            if kind != "text":
                raise ChatEncodingError(
                    f"{where}: content part of type {kind!r} is not supported by the local "
                    "engine; send text only"
                )
            texts.append(str(_field(part, "text") or ""))
        return PART_SEPARATOR.join(texts)
    raise ChatEncodingError(f"{where}: content must be text, got {type(content).__name__}")


def _instructions(role: str, text: str, message: Any, where: str) -> str:
    """A system or developer message's text with its tools and response format sections."""
    tools = _field(message, "tools")
    response_format = _field(message, "response_format")
    if role not in _INSTRUCTION_ROLES:
        for key, value in (("tools", tools), ("response_format", response_format)):
            if value:
                raise ChatEncodingError(
                    f"{where}: {key} on a {role} message are not read by the DeepSeek V4 "
                    "format; put them on the system message or pass them with the request"
                )
        return text
    try:
        if tools:
            text += PART_SEPARATOR + tools_section(tools, where)
        if response_format:
            text += PART_SEPARATOR + response_format_section(response_format)
    except ToolCallFormatError as exc:
        raise ChatEncodingError(str(exc)) from exc
    return text


def _assistant_turn(message: Any, text: str, where: str) -> _Turn:
    calls = _field(message, "tool_calls") or ()
    try:
        tool_calls = tuple(tool_call_of(call, f"{where} call {i}") for i, call in enumerate(calls))
        calls_text = render_tool_calls(tool_calls, where)
    except ToolCallFormatError as exc:
        raise ChatEncodingError(str(exc)) from exc
    reasoning = _field(message, "reasoning_content")
    return _Turn("assistant", text + calls_text, str(reasoning or ""), tool_calls)


def _merge(messages: Sequence[Any]) -> list[_Turn]:
    """Normalise messages into turns (tool results merged into user turns)."""
    merger = _Merger()
    for index, message in enumerate(messages):
        where = f"message {index}"
        role = _field(message, "role")
        if role not in _ROLES:
            raise ChatEncodingError(
                f"{where}: unknown role {role!r}; use one of {', '.join(_ROLES)}"
            )
        for key, reason in _UNSUPPORTED_KEYS.items():
            if _field(message, key) is not None:
                raise ChatEncodingError(f"{where}: {reason}")
        if role != "assistant" and _field(message, "tool_calls"):
            raise ChatEncodingError(f"{where}: only assistant messages can carry tool_calls")
        text = _text_of(_field(message, "content"), where)
        if role == "developer" and not text:
            raise ChatEncodingError(f"{where}: a developer message needs content")
        text = _instructions(role, text, message, where)

        if role == "tool":
            call_id = str(_field(message, "tool_call_id") or "")
            merger.add_part(_Part(TOOL_RESULT_OPEN + text + TOOL_RESULT_CLOSE, call_id))
        elif role == "user":
            merger.add_part(_Part(text))
        elif role == "assistant":
            merger.add_turn(_assistant_turn(message, text, where))
        else:
            merger.add_turn(_Turn(role, text, has_tools=bool(_field(message, "tools"))))
    merger.close_user()
    return merger.turns


def _last_user_index(turns: Sequence[_Turn]) -> int:
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].role in ("user", "developer"):
            return index
    return -1


def _drop_old_thinking(turns: list[_Turn]) -> list[_Turn]:
    """Thinking mode: before the last user turn, assistant turns lose their reasoning and
    developer turns disappear (the official default, ``drop_thinking=True``)."""
    last_user = _last_user_index(turns)
    kept: list[_Turn] = []
    for index, turn in enumerate(turns):
        if index >= last_user or turn.role in ("system", "user"):
            kept.append(turn)
        elif turn.role == "assistant":
            kept.append(_Turn("assistant", turn.text, tool_calls=turn.tool_calls))
    return kept


def with_request_tools(
    messages: Sequence[Any], tools: Sequence[Any] | None, response_format: Any = None
) -> list[Any]:
    """Request-level tools (and response format) placed where the format reads them: on the
    first message if it is a system message, else on a new empty system message in front."""
    out = list(messages)
    if not tools and not response_format:
        return out
    first = out[0] if out else None
    if first is not None and _field(first, "role") == "system":
        base = (
            dict(first)
            if isinstance(first, Mapping)
            else {
                "role": "system",
                "content": _field(first, "content"),
                "tools": _field(first, "tools"),
                "response_format": _field(first, "response_format"),
            }
        )
        out = out[1:]
    else:
        base = {"role": "system", "content": ""}
    if tools:
        base["tools"] = [*(base.get("tools") or ()), *tools]
    if response_format:
        base["response_format"] = response_format
    return [base, *out]


def render_prompt(
    messages: Sequence[Any],
    *,
    thinking: bool = False,
    reasoning_effort: str | None = None,
    tools: Sequence[Any] | None = None,
    response_format: Any = None,
) -> str:
    """The prompt text for ``messages`` (dicts or objects with ``role``/``content``;
    assistant ``reasoning_content`` and ``tool_calls``; tool ``tool_call_id``), ending where
    the model should continue. ``tools`` are OpenAI tool definitions for the request."""
    if reasoning_effort not in REASONING_EFFORTS:
        raise ChatEncodingError(
            f"reasoning_effort {reasoning_effort!r} is not valid; use 'high', 'max' or none"
        )
    if not messages:
        raise ChatEncodingError("no messages to encode; send at least one user message")
    turns = _merge(with_request_tools(messages, tools, response_format))
    # With tools anywhere the official encoder keeps every turn's reasoning.
    drop_thinking = not any(turn.has_tools for turn in turns)
    if thinking and drop_thinking:
        turns = _drop_old_thinking(turns)
    last_user = _last_user_index(turns)

    out = [BOS]
    for index, turn in enumerate(turns):
        if index == 0 and thinking and reasoning_effort == "max":
            out.append(REASONING_EFFORT_MAX)
        if turn.role == "system":
            out.append(turn.text)
        elif turn.role in ("user", "developer"):
            out.append(USER + turn.text)
        else:  # assistant
            if thinking and (index > last_user or not drop_thinking):
                out.append(turn.reasoning + THINK_END)
            out.append(turn.text + EOS)  # the text includes the tool-call block

        following = turns[index + 1].role if index + 1 < len(turns) else None
        if turn.role in ("user", "developer") and following in (None, "assistant"):
            opens_thinking = thinking and (index >= last_user or not drop_thinking)
            out.append(ASSISTANT + (THINK_START if opens_thinking else THINK_END))
    return "".join(out)


def split_reasoning(text: str, *, thinking: bool = True) -> tuple[str, str]:
    """Split generated text into (reasoning, answer).

    In thinking mode the prompt already ends with ``<think>``, so everything up to the first
    ``</think>`` is reasoning; without ``</think>`` the model never finished thinking and the
    whole text is reasoning. In chat mode everything is answer. A trailing end-of-sentence
    token is removed.
    """
    if text.endswith(EOS):
        text = text[: -len(EOS)]
    if not thinking:
        return "", text
    if text.startswith(THINK_START):
        text = text[len(THINK_START) :]
    end = text.find(THINK_END)
    if end < 0:
        return text, ""
    return text[:end], text[end + len(THINK_END) :]
