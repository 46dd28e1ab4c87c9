"""Every piece of text a request carries, each labelled with where it came from.

A chat request holds text in many places besides the newest user message: the
system prompt, earlier turns, tool definitions, the arguments of the model's tool
calls, tool results, attached files. The privacy invariant holds only if all of
them are scanned the same way, so a request is first taken apart into ``Piece``s
(``pieces_from_chat`` for OpenAI- and Anthropic-shaped bodies) and the pieces are
then scanned together (``ds4router.routing.privacy.classify_conversation``).

A piece whose content cannot be read as text (an image, audio, a binary file) is
kept with ``unreadable`` set: it raises the level to ``privacy.unreadable``
rather than passing unseen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class PieceKind(StrEnum):
    """Where a piece of text came from."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL_DEFINITION = "tool_definition"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    ATTACHMENT = "attachment"


@dataclass(frozen=True)
class Piece:
    """One piece of text: its kind, a label for messages (``messages[2].content[0]``,
    ``tools[1]``, a file path), and the text (empty when ``unreadable``)."""

    kind: PieceKind
    where: str
    text: str
    unreadable: bool = False


_ROLES: dict[str, PieceKind] = {
    "system": PieceKind.SYSTEM,
    "developer": PieceKind.SYSTEM,
    "user": PieceKind.USER,
    "assistant": PieceKind.ASSISTANT,
    "tool": PieceKind.TOOL_RESULT,
    "function": PieceKind.TOOL_RESULT,
    "ipython": PieceKind.TOOL_RESULT,
}
# Content parts that carry no text to scan: an image or audio cannot be read here.
_OPAQUE_PARTS = frozenset({"image_url", "image", "input_audio", "audio", "file", "input_image"})


def pieces_from_chat(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Any] | None = None,
    system: Any = None,
) -> list[Piece]:
    """The pieces of a chat request body: ``messages`` (OpenAI or Anthropic shape: string
    content, content parts, ``tool_calls``, ``function_call``, ``tool_use`` and
    ``tool_result`` blocks), ``tools`` (each definition as JSON, names and descriptions
    included) and a top-level ``system`` (Anthropic; a string or text blocks).

    Anything of a shape not known here is scanned as its JSON text, so nothing is skipped.
    """
    out: list[Piece] = []
    if system is not None:
        out.extend(_content(PieceKind.SYSTEM, "system", system))
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            out.append(Piece(PieceKind.USER, where, _json(message)))
            continue
        kind = _ROLES.get(str(message.get("role", "user")), PieceKind.USER)
        if "content" in message and message["content"] is not None:
            out.extend(_content(kind, f"{where}.content", message["content"]))
        for j, call in enumerate(message.get("tool_calls") or ()):
            out.append(Piece(PieceKind.TOOL_CALL, f"{where}.tool_calls[{j}]", _call_text(call)))
        if message.get("function_call") is not None:
            text = _call_text({"function": message["function_call"]})
            out.append(Piece(PieceKind.TOOL_CALL, f"{where}.function_call", text))
        for key in ("name", "reasoning_content", "reasoning", "refusal"):
            value = message.get(key)
            if isinstance(value, str) and value:
                out.append(Piece(kind, f"{where}.{key}", value))
    for i, tool in enumerate(tools or ()):
        out.append(Piece(PieceKind.TOOL_DEFINITION, f"tools[{i}]", _json(tool)))
    return out


def _content(kind: PieceKind, where: str, content: Any) -> Iterator[Piece]:
    if isinstance(content, str):
        yield Piece(kind, where, content)
        return
    if not isinstance(content, Sequence) or isinstance(content, bytes | bytearray):
        yield _part(kind, where, content)
        return
    for j, part in enumerate(content):
        yield from _content_part(kind, f"{where}[{j}]", part)


def _content_part(kind: PieceKind, where: str, part: Any) -> Iterator[Piece]:
    if isinstance(part, str):
        yield Piece(kind, where, part)
        return
    if not isinstance(part, Mapping):
        yield _part(kind, where, part)
        return
    match part.get("type"):
        case "text" | "input_text" | "output_text" if isinstance(part.get("text"), str):
            yield Piece(kind, where, part["text"])
        case "tool_use" | "function_call" | "server_tool_use":
            yield Piece(PieceKind.TOOL_CALL, where, _json(part))
        case "tool_result" | "function_call_output":
            inner = part.get("content", part.get("output", ""))
            yield from _content(PieceKind.TOOL_RESULT, f"{where}.content", inner)
        case "document" if _text_source(part) is not None:
            yield Piece(PieceKind.ATTACHMENT, where, _text_source(part) or "")
        case kind_name if kind_name in _OPAQUE_PARTS or kind_name == "document":
            yield Piece(kind, where, "", unreadable=True)
        case _:
            yield Piece(kind, where, _json(part))


def _text_source(part: Mapping[str, Any]) -> str | None:
    source = part.get("source")
    if isinstance(source, Mapping) and source.get("type") == "text":
        data = source.get("data")
        return data if isinstance(data, str) else None
    return None


def _part(kind: PieceKind, where: str, value: Any) -> Piece:
    if isinstance(value, bytes | bytearray):
        return Piece(kind, where, "", unreadable=True)
    return Piece(kind, where, _json(value))


def _call_text(call: Any) -> str:
    """A tool call as text: its name and its arguments (a JSON string, scanned as sent)."""
    if not isinstance(call, Mapping):
        return _json(call)
    function = call.get("function", call)
    if not isinstance(function, Mapping):
        return _json(call)
    name = function.get("name")
    arguments = function.get("arguments", function.get("input"))
    args = arguments if isinstance(arguments, str) else _json(arguments)
    return f"{name}\n{args}" if isinstance(name, str) else args


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


__all__ = ["Piece", "PieceKind", "pieces_from_chat"]
