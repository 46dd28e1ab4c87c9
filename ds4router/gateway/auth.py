"""Who is calling the gateway, for which project, and whether it may.

Keys are declared in the user config by the name of the environment variable that holds
them (``serve.keys: [{name, key_env, project}]``), never by value. A client sends its key as
``Authorization: Bearer <key>`` (OpenAI SDKs) or ``x-api-key: <key>`` (Anthropic SDKs). Keys
are compared with :func:`hmac.compare_digest` against every declared key (so the time taken
does not say which key nearly matched) and are never logged or stored: the ledger keeps the
key's *name* as the client.

On loopback a key is optional (an agent on the same machine); on any other host the gateway
refuses to start without one (:func:`check_bind`).

The client name is, in order: the matched key's name, the ``x-ds4router-client`` header, the
product token of the ``User-Agent`` (``claude-cli/2.1.3 (external, cli)`` -> ``claude-cli``).
The project is: the key's project, the ``x-ds4router-project`` header, ``serve --project``.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ds4router.errors import Ds4RouterError

_USER_AGENT_PRODUCT = re.compile(r"^\s*([A-Za-z][\w.\-]{0,63})")


class AuthError(Ds4RouterError):
    """A request without a valid key where one is required (HTTP 401)."""


@dataclass(frozen=True)
class KeySpec:
    """One declared key: its name (the client), where its value lives, its project."""

    name: str
    key_env: str
    project: str | None = None


@dataclass(frozen=True)
class Caller:
    """The resolved client of one request."""

    client: str
    project: str | None
    key_name: str | None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class KeyRing:
    """The declared keys with their values read from the environment once, at start."""

    entries: tuple[tuple[KeySpec, bytes], ...]

    @classmethod
    def from_specs(
        cls, specs: Sequence[KeySpec], environ: Mapping[str, str] | None = None
    ) -> KeyRing:
        env = os.environ if environ is None else environ
        entries: list[tuple[KeySpec, bytes]] = []
        for spec in specs:
            value = env.get(spec.key_env, "")
            if not value:
                raise AuthError(
                    f"serve.keys: key {spec.name!r} reads ${spec.key_env}, which is not set; "
                    f"export {spec.key_env}=<a long random string> before `ds4router serve`"
                )
            entries.append((spec, value.encode()))
        return cls(tuple(entries))

    @property
    def required(self) -> bool:
        return bool(self.entries)

    def match(self, presented: str | None) -> KeySpec | None:
        """The key that ``presented`` equals, comparing against every key in constant time."""
        if not presented:
            return None
        given = presented.encode()
        found: KeySpec | None = None
        for spec, value in self.entries:
            if hmac.compare_digest(given, value) and found is None:
                found = spec
        return found


def check_bind(host: str, keys: KeyRing) -> None:
    """Refuse to listen beyond loopback without a key: anyone on the network could spend."""
    if not is_loopback(host) and not keys.required:
        raise AuthError(
            f"refusing to serve on {host} without a key: add serve.keys: [{{name: my-agent, "
            "key_env: DS4ROUTER_SERVE_KEY}] to the user config (ds4router config show says "
            "where it is) and export DS4ROUTER_SERVE_KEY, or serve on 127.0.0.1"
        )


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``x-api-key`` or ``Authorization: Bearer``; header names are lower-case."""
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def identify(headers: Mapping[str, str], keys: KeyRing, default_project: str | None) -> Caller:
    """Who sent a request with these (lower-cased) headers; raises :class:`AuthError`."""
    spec = keys.match(presented_key(headers))
    if keys.required and spec is None:
        raise AuthError("a valid API key is required (Authorization: Bearer or x-api-key)")
    client = spec.name if spec else _client_header(headers)
    project = (spec.project if spec else None) or headers.get("x-ds4router-project") or None
    return Caller(
        client=client,
        project=project or default_project,
        key_name=spec.name if spec else None,
    )


def _client_header(headers: Mapping[str, str]) -> str:
    named = headers.get("x-ds4router-client", "").strip()
    if named:
        return named[:64]
    match = _USER_AGENT_PRODUCT.match(headers.get("user-agent", ""))
    return match.group(1) if match else "unknown"
