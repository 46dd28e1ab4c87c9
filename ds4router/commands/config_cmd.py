"""``ds4router config show|validate``: the merged configuration and where each value came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ds4router.commands.common import load_project_config, project_option


@click.group("config")
def command() -> None:
    """Show or validate configuration."""


@command.command("show")
@project_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(project: str | None, as_json: bool) -> None:
    """Print the merged config, with the file each value came from."""
    from ds4router.config.loader import flatten_keys, source_of

    loaded = load_project_config(project)
    data = loaded.config.model_dump(mode="json")
    rows = [(key, _lookup(data, key), source_of(loaded.sources, key)) for key in flatten_keys(data)]
    if as_json:
        out = {
            "project": loaded.project_name,
            "project_dir": str(loaded.project_dir) if loaded.project_dir else None,
            "files": [str(layer.path) for layer in loaded.layers],
            "config": data,
            "sources": {key: source for key, _, source in rows},
        }
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ds4router config — project {loaded.project_name}", expand=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    table.add_column("from", style="dim", overflow="fold")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    Console().print(table)


@command.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def validate(path: Path) -> None:
    """Check one config file on its own; prints OK or the first errors (file:line: key)."""
    from ds4router.config.loader import validate_file

    config = validate_file(path)
    rules = len(config.routes)
    click.echo(f"{path}: OK ({rules} route{'s' if rules != 1 else ''})")


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value[part]
    return value
