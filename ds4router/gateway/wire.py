"""What an agent's HTTP request becomes, whichever dialect it came in.

Both dialects are parsed into one :class:`WireRequest`: OpenAI-style chat ``messages`` (the
shape the backends take, see :class:`ds4router.backends.base.BackendRequest`), OpenAI-style
``tools``, and the sampling knobs. Anthropic's system blocks, ``tool_use`` and
``tool_result`` blocks become system, assistant ``tool_calls`` and ``tool`` messages, as
LiteLLM does when it translates, so the privacy scan, the router and the backends see one
form.

A client's mistake is a :class:`WireError`: the dialect modules turn it into an HTTP 400 in
the client's own error shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ds4router.errors import Ds4RouterError
from ds4router.sessions.plan import Reasoning

AUTO_MODEL = "ds4router/auto"


class WireError(Ds4RouterError):
    """The request body is not what the dialect allows; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Dialect(enum.Enum):
    """Which API the client speaks: decides the shape of every answer and error."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class WireRequest:
    """One chat request from an agent, in the backends' message shape."""

    dialect: Dialect
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    reasoning: Reasoning | None = None
    include_usage: bool = False

    @property
    def auto(self) -> bool:
        """True when the client lets the project's rules pick the model."""
        return self.model in ("", AUTO_MODEL) or self.model.startswith(AUTO_MODEL + ":")


def text_of(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string, or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def optional_int(body: dict[str, Any], *names: str) -> int | None:
    """The first of ``names`` present in ``body``, as a positive int (or None)."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise WireError(f"{name} must be a positive integer", name)
        return value
    return None


def optional_float(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise WireError(f"{name} must be a number between {low} and {high}", name)
    return float(value)


def stop_list(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise WireError(f"{name} must be a string or a list of strings", name)


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model", AUTO_MODEL)
    if not isinstance(model, str):
        raise WireError("model must be a string", "model")
    return model.strip() or AUTO_MODEL
