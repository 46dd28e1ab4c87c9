"""DeepSeek V4 chat encoding: messages -> prompt text, and generated text -> (reasoning, answer).

Matched against the official encoder shipped with the model release,
``encoding/encoding_dsv4.py`` of deepseek-ai/DeepSeek-V4-Flash (the copy we read is the one
FlagOS republished from the release's ModelScope tree, flagos-ai/DeepSeek-V4-FlagOS
``encoding_dsv4.py`` at commit 55022498, cross-checked against supermy/ds4rs
``encoding/encoding_dsv4.py`` at 2ecc534c). This is our own code; it reproduces that
encoder's ``encode_messages(messages, thinking_mode, drop_thinking=True,
add_default_bos_token=True, reasoning_effort=...)`` for the roles system, user, assistant,
tool and developer:

- BOS, then each message in order. System text is written bare; a user turn is
  ``<｜User｜>`` + text; consecutive user/tool messages merge into one user turn whose
  parts are joined by a blank line, a tool result written as ``<tool_result>...</tool_result>``.
- After a user turn that is followed by an assistant turn or ends the conversation comes
  ``<｜Assistant｜>`` and then ``</think>`` (chat mode, and every earlier turn in thinking
  mode) or ``<think>`` (thinking mode, at the last user turn).
- An assistant turn is its text then ``<｜end▁of▁sentence｜>``. In thinking mode, an
  assistant turn after the last user turn keeps ``reasoning</think>`` in front of its text;
  earlier ones lose their reasoning, and developer messages before the last user turn are
  dropped, as the official encoder does by default.
- ``reasoning_effort="max"`` in thinking mode writes the official effort preamble right after
  BOS; ``"high"`` and ``None`` change nothing (the official encoder accepts exactly these three).

Not supported yet, and refused with an error instead of being silently ignored: tool
definitions and assistant tool calls (both DSML), ``response_format``, quick-instruction
``task`` fields and ``latest_reminder`` messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local_engine.errors import EngineError
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
# Keys whose meaning we do not render yet; dropping them would change what the model sees.
_UNSUPPORTED_KEYS = {
    "response_format": "structured output (response_format) is not supported by the local engine",
    "task": "quick-instruction tasks are not supported by the local engine",
}


class ChatEncodingError(EngineError):
    """The messages cannot be written in the DeepSeek V4 chat format."""


class ToolsNotSupportedError(ChatEncodingError):
    """Tool definitions or tool calls (DSML) were given; the local engine cannot render them yet."""


@dataclass(frozen=True)
class _Turn:
    """One message after normalisation and tool-result merging."""

    role: str
    text: str
    reasoning: str = ""


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


def _merge(messages: Sequence[Any]) -> list[_Turn]:
    """Normalise messages and fold tool results and consecutive user messages into one
    user turn, as the official ``merge_tool_messages`` does."""
    turns: list[_Turn] = []
    user_parts: list[str] | None = None  # the open user turn's parts, while it is the last

    def close_user() -> None:
        nonlocal user_parts
        if user_parts is not None:
            turns.append(_Turn("user", PART_SEPARATOR.join(user_parts)))
            user_parts = None

    for index, message in enumerate(messages):
        where = f"message {index}"
        role = _field(message, "role")
        if role not in _ROLES:
            raise ChatEncodingError(
                f"{where}: unknown role {role!r}; use one of {', '.join(_ROLES)}"
            )
        if _field(message, "tools"):
            raise ToolsNotSupportedError(
                f"{where}: tool definitions are not supported by the local engine yet "
                "(DeepSeek V4 tool calling needs the DSML format); route this request to a "
                "cloud model or remove the tools"
            )
        if _field(message, "tool_calls"):
            raise ToolsNotSupportedError(
                f"{where}: assistant tool calls are not supported by the local engine yet "
                "(DSML); route this request to a cloud model"
            )
        for key, reason in _UNSUPPORTED_KEYS.items():
            if _field(message, key) is not None:
                raise ChatEncodingError(f"{where}: {reason}")
        text = _text_of(_field(message, "content"), where)

        if role == "tool":
            part = TOOL_RESULT_OPEN + text + TOOL_RESULT_CLOSE
            if user_parts is None:
                user_parts = []
            user_parts.append(part)
        elif role == "user":
            if user_parts is None:
                user_parts = []
            user_parts.append(text)
        else:
            close_user()
            if role == "developer" and not text:
                raise ChatEncodingError(f"{where}: a developer message needs content")
            reasoning = _field(message, "reasoning_content") if role == "assistant" else None
            turns.append(_Turn(role, text, str(reasoning or "")))
    close_user()
    return turns


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
            kept.append(_Turn("assistant", turn.text))
    return kept


def render_prompt(
    messages: Sequence[Any],
    *,
    thinking: bool = False,
    reasoning_effort: str | None = None,
) -> str:
    """The prompt text for ``messages`` (dicts or objects with ``role``/``content``;
    assistant ``reasoning_content``), ending where the model should continue."""
    if reasoning_effort not in REASONING_EFFORTS:
        raise ChatEncodingError(
            f"reasoning_effort {reasoning_effort!r} is not valid; use 'high', 'max' or none"
        )
    if not messages:
        raise ChatEncodingError("no messages to encode; send at least one user message")
    turns = _merge(messages)
    if thinking:
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
            if thinking and index > last_user:
                out.append(turn.reasoning + THINK_END)
            out.append(turn.text + EOS)

        following = turns[index + 1].role if index + 1 < len(turns) else None
        if turn.role in ("user", "developer") and following in (None, "assistant"):
            opens_thinking = thinking and index >= last_user
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
