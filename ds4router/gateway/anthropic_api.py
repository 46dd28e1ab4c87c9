"""The Anthropic messages dialect: request parsing, answers, stream events and errors.

Requests become the backends' OpenAI-style messages (:mod:`ds4router.gateway.wire`):
``system`` (a string or text blocks) becomes a system message; ``tool_use`` blocks become an
assistant message's ``tool_calls`` (arguments as JSON text); each ``tool_result`` block
becomes a ``tool`` message, in order; ``thinking`` blocks are earlier reasoning and are
kept as ``reasoning_content`` (the local engine renders them where its template does).

A stream is the event sequence Anthropic sends: ``message_start``, then per content block
``content_block_start`` / ``content_block_delta``\\* / ``content_block_stop`` (text as
``text_delta``, reasoning as ``thinking_delta``, tool input as ``input_json_delta``), a
``ping``, then ``message_delta`` (stop reason, output tokens) and ``message_stop``.

Usage: Anthropic's ``input_tokens`` *excludes* cache reads and writes, which it reports as
``cache_read_input_tokens`` and ``cache_creation_input_tokens``; the ledger's
:class:`pricing.usage.TokenUsage` includes them in ``input_tokens``. :func:`usage_json`
converts, so a client sees its own dialect's numbers and the ledger one convention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ds4router.gateway.wire import (
    Dialect,
    WireError,
    WireRequest,
    optional_float,
    optional_int,
    require_model,
    stop_list,
)
from ds4router.sessions.plan import Reasoning
from pricing.usage import TokenUsage


def parse_request(body: Any, *, counting: bool = False) -> WireRequest:
    """``POST /v1/messages`` (or ``count_tokens`` when ``counting``) -> :class:`WireRequest`."""
    if not isinstance(body, dict):
        raise WireError("the request body must be a JSON object")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise WireError("messages: field required (a non-empty list)", "messages")
    max_tokens = optional_int(body, "max_tokens")
    if max_tokens is None and not counting:
        raise WireError("max_tokens: field required", "max_tokens")
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(raw):
        messages.extend(_converted(message, i))
    return WireRequest(
        dialect=Dialect.ANTHROPIC,
        model=require_model(body),
        messages=messages,
        stream=bool(body.get("stream", False)),
        tools=[_tool(t, i) for i, t in enumerate(body.get("tools") or [])],
        tool_choice=body.get("tool_choice"),
        max_tokens=max_tokens,
        temperature=optional_float(body, "temperature", 0.0, 1.0),
        top_p=optional_float(body, "top_p", 0.0, 1.0),
        stop=stop_list(body.get("stop_sequences"), "stop_sequences"),
        reasoning=_thinking(body.get("thinking")),
    )


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    raise WireError("system must be a string or a list of text blocks", "system")


def _thinking(value: Any) -> Reasoning | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("enabled", "disabled", "adaptive"):
        raise WireError(
            "thinking must be {type: enabled, budget_tokens: N} or disabled", "thinking"
        )
    if value["type"] == "disabled":
        return Reasoning.OFF
    budget = value.get("budget_tokens") or 0
    return Reasoning.HIGH if budget >= 16_000 else Reasoning.MEDIUM


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise WireError(f"tools[{i}] needs a name", f"tools[{i}]")
    return {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        },
    }


def _converted(message: Any, i: int) -> list[dict[str, Any]]:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise WireError(f"messages.{i}.role must be user or assistant", f"messages.{i}")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise WireError(f"messages.{i}.content must be a string or a list", f"messages.{i}")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    opaque: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": json.dumps(block.get("input", {}), ensure_ascii=False),
                    },
                }
            )
        elif kind == "tool_result":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id", "")),
                    "content": _result_text(block.get("content")),
                }
            )
        elif kind in ("image", "document"):
            opaque.append(_opaque_part(block))
        elif kind in ("redacted_thinking", "server_tool_use", "web_search_tool_result"):
            continue  # provider-side blocks: nothing a backend here can use
        else:
            raise WireError(f"messages.{i}.content: unknown block type {kind!r}", f"messages.{i}")
    out: list[dict[str, Any]] = list(results)
    if texts or calls or thinking or opaque or not results:
        body: Any = "\n".join(texts)
        if opaque:  # parts, so the privacy scan sees an unreadable part and the model the image
            body = [{"type": "text", "text": body}, *opaque] if body else opaque
        converted: dict[str, Any] = {"role": role, "content": body}
        if calls:
            converted["tool_calls"] = calls
        if thinking:
            converted["reasoning_content"] = "\n".join(thinking)
        out.append(converted)
    return out


def _opaque_part(block: dict[str, Any]) -> dict[str, Any]:
    """An image or document block as the OpenAI content part LiteLLM translates back."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url", ""))
    if block.get("type") == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"file_data": url}}


def _result_text(content: Any) -> Any:
    """A tool result's content: its text, or parts when it holds an image or document."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        blocks = [b for b in content if isinstance(b, dict)]
        text = "\n".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
        opaque = [_opaque_part(b) for b in blocks if b.get("type") in ("image", "document")]
        if not opaque:
            return text
        return [{"type": "text", "text": text}, *opaque] if text else opaque
    return json.dumps(content, ensure_ascii=False)


def usage_json(usage: TokenUsage) -> dict[str, int]:
    """The ledger's usage in Anthropic's shape (``input_tokens`` without the cache parts)."""
    return {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def error_json(message: str, kind: str) -> dict[str, Any]:
    """An Anthropic error body (``kind`` is ``error.type``: ``privacy_refused``, ...)."""
    return {"type": "error", "error": {"type": kind, "message": message}}


_STOP = {"max_tokens": "max_tokens", "length": "max_tokens", "stop_sequence": "stop_sequence"}


@dataclass
class Message:
    """Encodes one answer as stream events (``(event, data)`` pairs) or one body at the end."""

    id: str
    model: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    _open: str | None = None  # the type of the block being streamed

    def start(self, input_usage: TokenUsage) -> list[tuple[str, dict[str, Any]]]:
        usage = {**usage_json(input_usage), "output_tokens": 0}
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]

    def _switch(self, kind: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self.blocks.append(block)
        self._open = kind
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": len(self.blocks) - 1,
                    "content_block": _start_shape(block),
                },
            )
        )
        return events

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self._open is None:
            return []
        self._open = None
        index = len(self.blocks) - 1
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        index = len(self.blocks) - 1
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )

    def text(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        events = [] if self._open == "text" else self._switch("text", {"type": "text", "text": ""})
        self.blocks[-1]["text"] += text
        events.append(self._delta({"type": "text_delta", "text": text}))
        return events

    def thinking(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        events = (
            []
            if self._open == "thinking"
            else self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        )
        self.blocks[-1]["thinking"] += text
        events.append(self._delta({"type": "thinking_delta", "thinking": text}))
        return events

    def tool_start(self, call_id: str, name: str) -> list[tuple[str, dict[str, Any]]]:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}, "_json": ""}
        return self._switch("tool_use", block)

    def tool_arguments(self, delta: str) -> list[tuple[str, dict[str, Any]]]:
        self.blocks[-1]["_json"] += delta
        return [self._delta({"type": "input_json_delta", "partial_json": delta})]

    def stop_reason(self, reason: str) -> str:
        if any(b["type"] == "tool_use" for b in self.blocks):
            return "tool_use"
        return _STOP.get(reason, "end_turn")

    def finish(self, reason: str, usage: TokenUsage) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason(reason), "stop_sequence": None},
                    "usage": {"output_tokens": usage.output_tokens},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def body(self, reason: str, usage: TokenUsage) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [_final_shape(b) for b in self.blocks],
            "stop_reason": self.stop_reason(reason),
            "stop_sequence": None,
            "usage": usage_json(usage),
        }


def _start_shape(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    return {k: v for k, v in block.items() if not k.startswith("_")}


def _final_shape(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "tool_use":
        raw = block.get("_json") or "{}"
        try:
            arguments = json.loads(raw)
        except json.JSONDecodeError:
            arguments = {"_raw": raw}
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": arguments}
    return {k: v for k, v in block.items() if not k.startswith("_")}
