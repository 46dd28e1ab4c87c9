"""The OpenAI chat-completions dialect: request parsing, answers, stream chunks and errors.

Shapes follow the public API reference: a stream is ``chat.completion.chunk`` objects (the
first delta carries the role, tool calls stream as ``tool_calls`` deltas with an ``index``,
the name and id in the first one and the arguments in pieces), then, when the client asked
for ``stream_options.include_usage``, one chunk with empty ``choices`` and the usage, then
``[DONE]``. Usage is OpenAI's convention, which is also the ledger's
(:class:`pricing.usage.TokenUsage`): ``prompt_tokens`` includes cached tokens.
"""

from __future__ import annotations

import time
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

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_EFFORTS = {
    "none": Reasoning.OFF,
    "minimal": Reasoning.LOW,
    "low": Reasoning.LOW,
    "medium": Reasoning.MEDIUM,
    "high": Reasoning.HIGH,
    "xhigh": Reasoning.HIGH,
}


def parse_request(body: Any) -> WireRequest:
    """``POST /v1/chat/completions`` body -> :class:`WireRequest` (raises :class:`WireError`)."""
    if not isinstance(body, dict):
        raise WireError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("messages must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise WireError(f"messages[{i}] needs a role of {sorted(_ROLES)}", f"messages[{i}]")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(_is_function_tool(t) for t in tools):
        raise WireError("tools must be a list of {type: function, function: {name, ...}}", "tools")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in _EFFORTS:
        raise WireError(f"reasoning_effort must be one of {sorted(_EFFORTS)}", "reasoning_effort")
    options = body.get("stream_options") or {}
    return WireRequest(
        dialect=Dialect.OPENAI,
        model=require_model(body),
        messages=[_normalised(m) for m in messages],
        stream=bool(body.get("stream", False)),
        tools=list(tools),
        tool_choice=body.get("tool_choice"),
        max_tokens=optional_int(body, "max_completion_tokens", "max_tokens"),
        temperature=optional_float(body, "temperature", 0.0, 2.0),
        top_p=optional_float(body, "top_p", 0.0, 1.0),
        stop=stop_list(body.get("stop"), "stop"),
        reasoning=_EFFORTS[effort] if effort is not None else None,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


def _is_function_tool(tool: Any) -> bool:
    return (
        isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and isinstance(tool.get("function"), dict)
        and isinstance(tool["function"].get("name"), str)
    )


def _normalised(message: dict[str, Any]) -> dict[str, Any]:
    """``developer`` is the newer name of ``system``; ``function`` the older one of ``tool``."""
    role = message["role"]
    if role == "developer":
        return {**message, "role": "system"}
    if role == "function":
        call_id = message.get("tool_call_id") or message.get("name", "")
        return {**message, "role": "tool", "tool_call_id": call_id}
    return dict(message)


def usage_json(usage: TokenUsage) -> dict[str, Any]:
    """The ledger's usage in OpenAI's shape."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def error_json(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    """An OpenAI error body (``kind`` is the ``type``: ``privacy_refused``, ...)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code or kind}}


@dataclass
class ToolCallState:
    index: int
    id: str
    name: str
    arguments: str = ""


@dataclass
class Completion:
    """Encodes one answer as stream chunks (``chunk_*``) or, at the end, one body (``body``)."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallState] = field(default_factory=list)
    _role_sent: bool = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def chunk_text(self, text: str) -> dict[str, Any]:
        self.text.append(text)
        return self._chunk({"content": text})

    def chunk_reasoning(self, text: str) -> dict[str, Any]:
        self.reasoning.append(text)
        return self._chunk({"reasoning_content": text})

    def chunk_tool_start(self, call_id: str, name: str) -> dict[str, Any]:
        call = ToolCallState(index=len(self.tool_calls), id=call_id, name=name)
        self.tool_calls.append(call)
        return self._chunk(
            {
                "tool_calls": [
                    {
                        "index": call.index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )

    def chunk_tool_arguments(self, delta: str) -> dict[str, Any]:
        call = self.tool_calls[-1]
        call.arguments += delta
        return self._chunk(
            {"tool_calls": [{"index": call.index, "function": {"arguments": delta}}]}
        )

    def chunk_finish(self, finish_reason: str) -> dict[str, Any]:
        return self._chunk({}, finish=self.finish_reason(finish_reason))

    def chunk_usage(self, usage: TokenUsage) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(usage),
        }

    def finish_reason(self, reason: str) -> str:
        if self.tool_calls:
            return "tool_calls"
        return {"max_tokens": "length", "length": "length"}.get(reason, "stop")

    def body(self, finish_reason: str, usage: TokenUsage) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": self.finish_reason(finish_reason)}
            ],
            "usage": usage_json(usage),
        }


def models_json(models: list[tuple[str, str]]) -> dict[str, Any]:
    """``GET /v1/models``: ``(id, owned_by)`` pairs."""
    now = int(time.time())
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": now, "owned_by": o} for m, o in models],
    }
