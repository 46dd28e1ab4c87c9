"""``ds4router models``: the local models ds4router can fetch for you (the demo model).

``models pull demo`` fetches the demo-size model (see ``ds4router.demo_model``); ``models
list`` says what is installed and which local model the project would use.
"""

from __future__ import annotations

import click

from ds4router.commands.common import load_project_config, project_option
from ds4router.errors import Ds4RouterError

PULLABLE = ("demo",)


@click.group("models")
def command() -> None:
    """Local models: pull the demo model, list what is installed."""


@command.command("pull")
@click.argument("name")
def pull(name: str) -> None:
    """Fetch a model by NAME (only `demo`: SmolLM2-135M-Instruct, ~93 MB, Apache-2.0)."""
    from ds4router.demo_model import LABEL, pull_demo

    if name not in PULLABLE:
        raise Ds4RouterError(
            f"no model named {name!r} to pull; known: {', '.join(PULLABLE)} "
            "(for your own model set local.engine.model_path in .ds4router.yaml)"
        )
    path = pull_demo(say=lambda line: click.echo(line, err=True))
    click.echo(str(path))
    click.echo(
        f"ready: with no other local model configured, `ds4router` now answers locally with "
        f"the {LABEL} (small: fine for trying ds4router, not for real work)",
        err=True,
    )


@command.command("list")
@project_option
def list_models(project: str | None) -> None:
    """Installed models and the local model this project uses."""
    from ds4router.demo_model import LABEL, demo_file, installed_demo
    from ds4router.routing.state import local_engine_status

    found = installed_demo()
    state = str(found) if found else f"not installed (ds4router models pull demo -> {demo_file()})"
    click.echo(f"demo     {LABEL}, SmolLM2-135M-Instruct: {state}")
    loaded = load_project_config(project)
    engine = loaded.config.local.engine
    ok, detail = local_engine_status(loaded)
    click.echo(f"local    kind {engine.kind}: {detail}{'' if ok else ' (cannot answer)'}")
