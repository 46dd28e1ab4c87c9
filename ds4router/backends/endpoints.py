"""Where a cloud model lives: its API base, the env var holding its key, the host to probe.

Resolved from the config's ``cloud.models`` list, else from the provider prefix
of the LiteLLM model id (``openai/gpt-4.1`` -> api.openai.com, OPENAI_API_KEY).
Pure functions, no network and no litellm import: the router calls them on
every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ds4router.config.schema import CloudConfig

# provider prefix -> (default API host, env var LiteLLM reads the key from)
PROVIDER_DEFAULTS: dict[str, tuple[str, str]] = {
    "openai": ("api.openai.com", "OPENAI_API_KEY"),
    "anthropic": ("api.anthropic.com", "ANTHROPIC_API_KEY"),
    "deepseek": ("api.deepseek.com", "DEEPSEEK_API_KEY"),
    "gemini": ("generativelanguage.googleapis.com", "GEMINI_API_KEY"),
    "mistral": ("api.mistral.ai", "MISTRAL_API_KEY"),
    "groq": ("api.groq.com", "GROQ_API_KEY"),
    "openrouter": ("openrouter.ai", "OPENROUTER_API_KEY"),
    "xai": ("api.x.ai", "XAI_API_KEY"),
    "together_ai": ("api.together.xyz", "TOGETHERAI_API_KEY"),
    "fireworks_ai": ("api.fireworks.ai", "FIREWORKS_AI_API_KEY"),
    "cohere": ("api.cohere.ai", "COHERE_API_KEY"),
}


@dataclass(frozen=True)
class Endpoint:
    """A TCP address the connectivity check dials (no bytes are sent)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ModelTarget:
    """How to reach one model.

    ``api_key_env`` is the NAME of the variable to read at call time. When it
    is None and ``keyless`` is true, no key is sent (a model with its own
    ``api_base`` and no ``api_key_env``: a provider's default key must never
    travel to some other host). When both are unset, LiteLLM looks the key up
    itself (a provider this module does not know).
    """

    model: str
    api_base: str | None
    api_key_env: str | None
    keyless: bool
    endpoint: Endpoint | None
    configured: bool


def provider_of(model: str) -> str:
    """``openai/gpt-4.1`` -> ``openai``; a bare id is an OpenAI model, as LiteLLM reads it."""
    return model.split("/", 1)[0].lower() if "/" in model else "openai"


def endpoint_for_url(url: str) -> Endpoint | None:
    """The TCP endpoint a client opens for ``url``: the proxy's when one applies."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    host = parts.hostname
    if not host:
        return None
    scheme = parts.scheme or "https"
    proxy = _proxy_for(scheme, host)
    if proxy is not None:
        return proxy
    try:
        port = parts.port
    except ValueError:
        return None
    return Endpoint(host, port or (443 if scheme == "https" else 80))


def _proxy_for(scheme: str, host: str) -> Endpoint | None:
    # Behind a proxy the direct route may be closed while the API is reachable.
    import urllib.request  # imported here: it pulls in http.client and ssl

    proxies = urllib.request.getproxies()
    proxy_url = proxies.get(scheme) or proxies.get("all")
    if not proxy_url or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return Endpoint(parts.hostname, port or (443 if parts.scheme == "https" else 80))


def resolve(model: str, cloud: CloudConfig) -> ModelTarget:
    """The target for ``model``: its ``cloud.models`` entry, else the provider's defaults."""
    defaults = PROVIDER_DEFAULTS.get(provider_of(model))
    for entry in cloud.models:
        if entry.name == model:
            if entry.api_base:
                return ModelTarget(
                    model=model,
                    api_base=entry.api_base,
                    api_key_env=entry.api_key_env,
                    keyless=entry.api_key_env is None,
                    endpoint=endpoint_for_url(entry.api_base),
                    configured=True,
                )
            return ModelTarget(
                model=model,
                api_base=None,
                api_key_env=entry.api_key_env or (defaults[1] if defaults else None),
                keyless=False,
                endpoint=endpoint_for_url(defaults[0]) if defaults else None,
                configured=True,
            )
    return ModelTarget(
        model=model,
        api_base=None,
        api_key_env=defaults[1] if defaults else None,
        keyless=False,
        endpoint=endpoint_for_url(defaults[0]) if defaults else None,
        configured=False,
    )
