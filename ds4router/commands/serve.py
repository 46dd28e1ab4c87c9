"""``ds4router serve``: the router as a local OpenAI- and Anthropic-compatible gateway."""

from __future__ import annotations

from pathlib import Path

import click

from ds4router.commands.common import project_option, resolve_project


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8787).")
@project_option
def command(host: str | None, port: int | None, project: str | None) -> None:
    """Serve OpenAI (/v1/chat/completions, /v1/models) and Anthropic (/v1/messages) APIs.

    Point an agent's base URL here: every request is routed by the project's rules, kept on
    the machine when its privacy says so (refused with type privacy_refused when it cannot
    be served locally), and priced into the ledger with the client that sent it.
    """
    import uvicorn

    from ds4router.commands.common import load_project_config
    from ds4router.gateway.app import create_app
    from ds4router.gateway.auth import KeyRing, KeySpec, check_bind
    from ds4router.gateway.service import Gateway

    directory = resolve_project(project)
    loaded = load_project_config(directory)
    serve = loaded.config.serve
    host = host or serve.host
    port = port or serve.port
    keys = KeyRing.from_specs([KeySpec(k.name, k.key_env, k.project) for k in serve.keys])
    check_bind(host, keys)
    gateway = Gateway(Path(directory) if directory else loaded.project_dir, keys=keys)
    click.echo(
        f"ds4router serve: project {loaded.project_name} on http://{host}:{port} "
        f"(OpenAI base URL http://{host}:{port}/v1, Anthropic base URL http://{host}:{port})"
        + ("; a key is required" if keys.required else ""),
        err=True,
    )
    uvicorn.run(
        create_app(gateway),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
