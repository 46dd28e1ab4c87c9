"""Local servers (``local.servers``): which are really on this machine, and how private a
request each may receive. Pure functions of the config: the router and the session both
ask :func:`may_send`, so the privacy invariant is one predicate for every target.

A server on loopback (127.0.0.0/8, ::1, ``localhost``, a unix socket) is local: like the
in-process engine, it may take anything. Any other host is a cloud target (capped by
``privacy.cloud_max_privacy``) unless it is declared ``trust: on_prem``, which is capped by
``privacy.on_prem_max_privacy``. The host is read from the URL as written: a name other than
``localhost`` is not resolved (DNS could point it anywhere), so it is never taken as loopback.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ds4router.config.schema import Config, ServerConfig
from ds4router.routing.levels import PrivacyLevel
from ds4router.targets import CloudModel, LocalEngine, LocalServer, Refuse, Target

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(api_base: str) -> bool:
    """Whether ``api_base`` names this machine (by address, ``localhost``, or a unix socket)."""
    parts = urlsplit(api_base)
    if parts.scheme == "unix":
        return True
    host = (parts.hostname or "").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_named(config: Config, name: str) -> ServerConfig | None:
    return next((s for s in config.local.servers if s.name == name), None)


def server_limit(config: Config, name: str) -> PrivacyLevel | None:
    """The highest level ``local:<name>`` may receive; None: no limit (it is on loopback).

    A name with no server configured gets the cloud limit: unknown is never trusted."""
    server = server_named(config, name)
    if server is not None and is_loopback(server.api_base):
        return None
    if server is not None and server.trust == "on_prem":
        return config.privacy.on_prem_max_privacy
    return config.privacy.cloud_max_privacy


def may_send(target: Target, level: PrivacyLevel, config: Config) -> bool:
    """The privacy invariant for one target: may a request of ``level`` go there?"""
    match target:
        case LocalEngine() | Refuse():
            return True
        case CloudModel():
            return level <= config.privacy.cloud_max_privacy
        case LocalServer(name=name):
            limit = server_limit(config, name)
            return limit is None or level <= limit


def server_watts(config: Config, target: Target) -> float | None:
    """The configured ``power`` of the server ``target`` names (None: not a server, or none
    given: this machine's ``local.power`` applies)."""
    match target:
        case LocalServer(name=name):
            server = server_named(config, name)
            return None if server is None else server.power
        case _:
            return None
