"""``ds4router --serve``: the gateway inside the TUI, on a thread of its own.

The app starts it once its first frame is up (a worker thread: uvicorn's start and the
config load must not block the UI), shows where it listens, lists agents' requests on the
Traffic screen, and stops it on the way out (in-flight requests finish or are cancelled;
their rows are kept).
"""

from __future__ import annotations

from pathlib import Path

from ds4router.config.loader import LoadedConfig
from ds4router.gateway.auth import KeyRing, KeySpec, check_bind
from ds4router.gateway.service import Gateway
from ds4router.gateway.thread import GatewayThread


def start_gateway(
    loaded: LoadedConfig, project_dir: Path | None, db_path: Path | None
) -> GatewayThread:
    """Serve the project on ``serve.host:serve.port``; ``Ds4RouterError`` with the reason."""
    serve = loaded.config.serve
    keys = KeyRing.from_specs([KeySpec(k.name, k.key_env, k.project) for k in serve.keys])
    check_bind(serve.host, keys)
    gateway = Gateway(project_dir or loaded.project_dir, keys=keys, db_path=db_path)
    return GatewayThread(gateway, serve.host, serve.port).start()
