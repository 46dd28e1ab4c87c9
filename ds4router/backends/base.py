"""The backend protocol: what a session needs from the local engine and from cloud models.

A backend turns a ``BackendRequest`` into a stream of events (see ``events``),
can be told to stop (``cancel``), and says whether it can serve right now
(``health``) so the router can route around it before sending anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ds4router.backends.health import Health
from ds4router.events import BackendEvent


@dataclass(frozen=True)
class BackendRequest:
    """One chat request, already routed: ``model`` is the backend's model id.

    For the cloud backend the id is LiteLLM's (``openai/gpt-4.1``). ``messages``
    are OpenAI-style chat messages (``{"role": ..., "content": ...}``).
    """

    messages: list[dict[str, Any]]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    # Correlates backend logs with the ledger row; never sent to a provider.
    request_id: str | None = None
    # OpenAI tool definitions ({"type": "function", "function": {...}}) the model may call;
    # calls come back as ToolCall* events.
    tools: tuple[dict[str, Any], ...] = ()
    # The conversation (or agent) this request continues: the local engine keeps its decode
    # state between turns under this id. Never sent to a provider.
    session_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The conversation holds a detected credential or personal data: nothing of it may be
    # written to disk (the local engine keeps its KV state in RAM only for this request).
    keep_off_disk: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("BackendRequest.model is empty")
        if not self.messages:
            raise ValueError("BackendRequest.messages is empty")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError("BackendRequest.max_tokens must be positive")


@runtime_checkable
class Backend(Protocol):
    """Implemented by ``CloudBackend`` and the engine's ``LocalBackend``.

    ``stream`` is an async generator: it never raises for provider or engine
    errors, it yields ``Failed`` and stops. ``cancel`` may be called from any
    task or thread; streams in flight end with ``Failed(kind="cancelled")``.
    """

    def stream(self, request: BackendRequest) -> AsyncIterator[BackendEvent]: ...

    def cancel(self) -> None: ...

    def health(self) -> Health: ...
