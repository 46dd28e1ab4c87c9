"""Backend health: recent failures (a rolling window) and a cheap connectivity check.

``Health`` is what ``Backend.health()`` returns and what the router reads.
``FailureWindow`` is pure state: outcomes of recent requests per model, no I/O.
``Reachability`` dials a TCP connection to an API host (or the proxy in front of
it) and closes it without sending a byte, so nothing reaches a provider; results
are cached for a few seconds so the router can ask on every request and, when
the machine is offline, fall back at once instead of waiting for a timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ds4router.backends.endpoints import Endpoint

HealthStatus = Literal["ready", "degraded", "offline", "not_configured", "loading"]

# Failures that say something about the provider's state. Auth, bad requests,
# context-window and policy refusals are about the request or the user's setup.
HEALTH_KINDS: frozenset[str] = frozenset({"rate_limit", "timeout", "unavailable", "internal"})


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def usable(self) -> bool:
        """Worth sending a request to: ready, or degraded (it may still answer)."""
        return self.status in ("ready", "degraded")


@dataclass(frozen=True)
class Outcome:
    at: float
    key: str
    ok: bool
    kind: str | None = None
    message: str = ""


class FailureWindow:
    """Outcomes of recent requests, per key (a model id), over ``window_s`` seconds.

    A key is degraded when at least ``degraded_after`` provider-side failures
    happened inside the window with no success since; one success clears it.
    """

    def __init__(
        self,
        *,
        window_s: float = 300.0,
        degraded_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1000,
    ) -> None:
        if window_s <= 0 or degraded_after < 1:
            raise ValueError("window_s must be positive and degraded_after at least 1")
        self.window_s = window_s
        self.degraded_after = degraded_after
        self._clock = clock
        self._outcomes: deque[Outcome] = deque(maxlen=max_entries)
        self._lock = threading.Lock()

    def record_success(self, key: str) -> None:
        with self._lock:
            self._outcomes.append(Outcome(self._clock(), key, True))

    def record_failure(self, key: str, kind: str, message: str = "") -> None:
        if kind not in HEALTH_KINDS:
            return
        with self._lock:
            self._outcomes.append(Outcome(self._clock(), key, False, kind, message))

    def recent_failures(self, key: str | None = None) -> list[Outcome]:
        """Failures inside the window since the last success (of ``key``, or of any key)."""
        horizon = self._clock() - self.window_s
        with self._lock:
            outcomes = [o for o in self._outcomes if o.at >= horizon]
        failures: list[Outcome] = []
        for outcome in outcomes:
            if key is not None and outcome.key != key:
                continue
            if outcome.ok:
                failures.clear()
            else:
                failures.append(outcome)
        return failures

    def health(self, key: str | None = None) -> Health:
        failures = self.recent_failures(key)
        if len(failures) >= self.degraded_after:
            last = failures[-1]
            minutes = self.window_s / 60
            detail = (
                f"{len(failures)} failed requests in the last {minutes:g} min "
                f"(last: {last.kind}{': ' + last.message if last.message else ''})"
            )
            return Health("degraded", detail)
        return Health("ready", "")


@dataclass(frozen=True)
class Probe:
    endpoint: Endpoint
    reachable: bool
    detail: str
    at: float
    elapsed_s: float


Dial = Callable[[Endpoint, float], None]


def tcp_dial(endpoint: Endpoint, timeout_s: float) -> None:
    """Open and close a TCP connection; raise ``OSError`` when it cannot be opened.

    Runs in a helper thread so that a DNS lookup, which has no timeout of its
    own, cannot hold the caller longer than ``timeout_s``.
    """
    result: list[BaseException | None] = []

    def attempt() -> None:
        try:
            conn = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s)
        except BaseException as exc:  # handed to the caller below
            result.append(exc)
        else:
            conn.close()
            result.append(None)

    worker = threading.Thread(target=attempt, name=f"ds4router-probe-{endpoint}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    error = result[0]
    if error is not None:
        if isinstance(error, OSError):
            raise error
        raise OSError(str(error)) from error


class Reachability:
    """Cached TCP reachability of API endpoints.

    A reachable result is trusted for ``ok_ttl_s``, an unreachable one for
    ``fail_ttl_s`` (shorter, so a returning network is noticed soon).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 1.5,
        ok_ttl_s: float = 30.0,
        fail_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        dial: Dial = tcp_dial,
    ) -> None:
        self.timeout_s = timeout_s
        self.ok_ttl_s = ok_ttl_s
        self.fail_ttl_s = fail_ttl_s
        self._clock = clock
        self._dial = dial
        self._cache: dict[Endpoint, Probe] = {}
        self._lock = threading.Lock()

    def cached(self, endpoint: Endpoint) -> Probe | None:
        """The last probe of ``endpoint`` while it is still fresh; never dials."""
        with self._lock:
            probe = self._cache.get(endpoint)
        if probe is None:
            return None
        ttl = self.ok_ttl_s if probe.reachable else self.fail_ttl_s
        return probe if self._clock() - probe.at < ttl else None

    def check(self, endpoint: Endpoint, *, fresh: bool = False) -> Probe:
        """A fresh-enough probe of ``endpoint``, dialling when the cache has none."""
        if not fresh:
            probe = self.cached(endpoint)
            if probe is not None:
                return probe
        started = time.monotonic()
        try:
            self._dial(endpoint, self.timeout_s)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            probe = Probe(endpoint, False, reason, self._clock(), time.monotonic() - started)
        else:
            probe = Probe(endpoint, True, "", self._clock(), time.monotonic() - started)
        with self._lock:
            self._cache[endpoint] = probe
        return probe

    def forget(self, endpoint: Endpoint | None = None) -> None:
        with self._lock:
            if endpoint is None:
                self._cache.clear()
            else:
                self._cache.pop(endpoint, None)
