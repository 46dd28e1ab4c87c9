"""Which backend serves a target, created once per target and kept, and what each knows of
its health (the routing state's ``local_available``/``cloud_available``).

``backend_for`` is the default factory: the cloud backend for a ``CloudModel``, the
in-process engine's ``LocalBackend`` for ``LocalEngine`` (imported on first use, so a
cloud request never loads mlx). A target that cannot be had raises
``BackendUnavailable`` with the reason, which routes the request elsewhere.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import assert_never

from ds4router.backends.base import Backend
from ds4router.backends.endpoints import resolve
from ds4router.backends.health import Health
from ds4router.config.loader import LoadedConfig
from ds4router.errors import Ds4RouterError
from ds4router.routing.state import local_engine_status
from ds4router.targets import CloudModel, LocalEngine, LocalServer, Sendable

BackendFactory = Callable[[Sendable, LoadedConfig], Backend]
LOCAL_BACKEND_MODULE = "ds4router.backends.local"


class BackendUnavailable(Ds4RouterError):
    """A backend cannot be created here (the local engine is not configured or not built)."""

    exit_code = 1


def backend_for(target: Sendable, loaded: LoadedConfig) -> Backend:
    """The backend serving ``target``; ``BackendUnavailable`` with the reason when none can."""
    match target:
        case CloudModel():
            from ds4router.backends.cloud import CloudBackend

            return CloudBackend(loaded.config.cloud)
        case LocalServer(name=name):
            from ds4router.backends.server import ServerBackend
            from ds4router.servers import server_named

            server = server_named(loaded.config, name)
            if server is None:
                raise BackendUnavailable(f"no local server named {name!r} in local.servers")
            return ServerBackend(server, loaded.config.cloud)
        case LocalEngine():
            return _local_engine_backend(loaded)
        case _:
            assert_never(target)


def _local_engine_backend(loaded: LoadedConfig) -> Backend:
    ok, detail = local_engine_status(loaded)
    if not ok:
        raise BackendUnavailable(f"local engine {detail}")
    try:
        module = importlib.import_module(LOCAL_BACKEND_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != LOCAL_BACKEND_MODULE:
            raise BackendUnavailable(f"the local engine cannot load: {exc}") from None
        raise BackendUnavailable(
            "the local engine backend is not part of this build (ds4router.backends.local)"
        ) from None
    try:
        backend: Backend = module.LocalBackend.from_config(loaded)
    except Ds4RouterError:
        raise
    except Exception as exc:  # an engine error is a reason to route elsewhere, not a crash
        raise BackendUnavailable(f"the local engine cannot start: {exc}") from None
    return backend


class BackendPool:
    """The backends of one session, by target; safe from any thread.

    ``factory`` creates them (None: :func:`backend_for`, looked up at each creation so
    tests may patch it).
    """

    def __init__(self, loaded: LoadedConfig, factory: BackendFactory | None = None) -> None:
        self.loaded = loaded
        self._factory = factory
        self._backends: dict[Sendable, Backend] = {}
        self._lock = threading.Lock()

    def get(self, target: Sendable) -> Backend:
        with self._lock:
            backend = self._backends.get(target)
        if backend is not None:
            return backend
        factory = self._factory or backend_for
        backend = factory(target, self.loaded)
        with self._lock:
            return self._backends.setdefault(target, backend)

    def local_health(self) -> tuple[bool, str]:
        """Whether the local engine can serve now, and why not."""
        try:
            backend = self.get(LocalEngine())
        except BackendUnavailable as exc:
            return False, detail_of(exc)
        health = backend.health()
        return health.usable, health.detail or health.status

    def cloud_health(self, target: CloudModel, live: bool) -> Health:
        """A cloud model's health: dialled when ``live``; else only what is known already
        (keys, a cached reachability probe, recent failures), so a preview never dials."""
        model = target.model
        try:
            backend = self.get(target)
        except BackendUnavailable as exc:
            return Health("not_configured", detail_of(exc))
        from ds4router.backends.cloud import CloudBackend

        if not isinstance(backend, CloudBackend):
            return backend.health()
        if live:
            return backend.health(model)
        resolved = resolve(model, backend.config)
        key_env = resolved.api_key_env
        if key_env is not None and not os.environ.get(key_env):
            return Health("not_configured", f"environment variable {key_env} is not set")
        if resolved.endpoint is not None:
            probe = backend.reachability.cached(resolved.endpoint)
            if probe is not None and not probe.reachable:
                return Health("offline", f"cannot reach {probe.endpoint}: {probe.detail}")
        return backend.failures.health(model)


def detail_of(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


__all__ = [
    "LOCAL_BACKEND_MODULE",
    "BackendFactory",
    "BackendPool",
    "BackendUnavailable",
    "backend_for",
    "detail_of",
]
