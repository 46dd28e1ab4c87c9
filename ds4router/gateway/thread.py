"""The gateway served by uvicorn on a thread of its own: for the TUI (``ds4router --serve``)
and for tests, which run it beside another event loop (Textual's, pytest's).

``ds4router serve`` runs uvicorn in the foreground instead; both serve the same app.
"""

from __future__ import annotations

import threading
import time

from ds4router.errors import Ds4RouterError
from ds4router.gateway.service import Gateway


class GatewayThread:
    """uvicorn serving ``gateway`` on ``host:port`` (0: any free port) in a daemon thread."""

    def __init__(self, gateway: Gateway, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from ds4router.gateway.app import create_app

        self.gateway = gateway
        config = uvicorn.Config(
            create_app(gateway),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="ds4router-serve", daemon=True)

    def start(self, limit_s: float = 60.0) -> GatewayThread:
        """Start and wait until it listens (or its thread ended: a port in use, a bad config)."""
        self._thread.start()
        deadline = time.monotonic() + limit_s
        while not self.server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise Ds4RouterError(f"the gateway did not start within {limit_s:.0f} s")
            time.sleep(0.01)
        if not self.server.started:
            raise Ds4RouterError(
                f"the gateway could not listen on {self.server.config.host}:"
                f"{self.server.config.port} (in use? see ds4router serve --help)"
            )
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def stop(self) -> None:
        """Finish or cancel in-flight requests (their rows are kept), then stop."""
        self.server.should_exit = True
        self._thread.join(timeout=60)
