"""Backends: where a routed request is answered (cloud models via LiteLLM, the local engine).

Importing this package is cheap: LiteLLM is imported only when a cloud stream
starts. ``CloudBackend`` lives in ``ds4router.backends.cloud``. The events they
yield are :mod:`ds4router.events`.
"""

from __future__ import annotations

from ds4router.backends.base import Backend, BackendRequest
from ds4router.backends.health import Health, HealthStatus

__all__ = ["Backend", "BackendRequest", "Health", "HealthStatus"]
