"""A ``local.servers`` entry as a backend: an OpenAI-compatible server (ds4 server,
llama.cpp, Ollama, LM Studio, mlx_lm.server, vLLM) reached through the cloud backend's
client, so streaming, usage, retries, cancellation and health checks are the cloud path's.

The request's model becomes ``openai/<server.model>`` at ``server.api_base``: LiteLLM's
OpenAI-compatible route. Whether a request may go to the server at all is decided before,
by the router and the session (``ds4router.servers.may_send``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from ds4router.backends.base import BackendRequest
from ds4router.backends.cloud import CloudBackend
from ds4router.backends.health import Health
from ds4router.config.schema import CloudConfig, CloudModel, ServerConfig
from ds4router.events import BackendEvent


class ServerBackend:
    """``Backend`` for one configured server, targeted as ``local:<name>``."""

    def __init__(self, server: ServerConfig, cloud: CloudConfig | None = None) -> None:
        self.server = server
        self.model_id = f"openai/{server.model}"
        entry = CloudModel(
            name=self.model_id, api_base=server.api_base, api_key_env=server.api_key_env
        )
        base = cloud or CloudConfig()
        self.cloud = CloudBackend(base.model_copy(update={"models": [entry]}))

    def stream(self, request: BackendRequest) -> AsyncIterator[BackendEvent]:
        return self.cloud.stream(replace(request, model=self.model_id))

    def cancel(self) -> None:
        self.cloud.cancel()

    def health(self) -> Health:
        return self.cloud.health(self.model_id)
