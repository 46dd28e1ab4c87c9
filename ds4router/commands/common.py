"""Pieces shared by CLI sub-commands: ``--project``, reading text or stdin, writing ``-o``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ds4router.config.loader import LoadedConfig, load_config
from ds4router.errors import Ds4RouterError
from ds4router.textio import read_stdin

F = TypeVar("F", bound=Callable[..., Any])


def project_option(func: F) -> F:
    """``--project DIR`` on a sub-command (also accepted before the sub-command)."""
    return click.option(
        "--project",
        "project",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Project directory (default: walk up from the working directory).",
    )(func)


def resolve_project(project: str | None) -> str | None:
    if project is not None:
        return project
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if isinstance(ctx.obj, dict) and ctx.obj.get("project"):
            return str(ctx.obj["project"])
        ctx = ctx.parent
    return None


def load_project_config(project: str | None) -> LoadedConfig:
    return load_config(resolve_project(project))


def read_text_argument(text: str) -> str:
    """``-`` reads the whole of stdin (any encoding ``ds4router.textio`` knows)."""
    if text == "-":
        return read_stdin()
    return text


def write_output(text: str, output: Path | None, wrote: str) -> None:
    """``text`` to stdout, or to ``output`` followed by the line ``wrote ... to OUTPUT``."""
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        # An export may hold a conversation: created 0600, readable by the user alone.
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise Ds4RouterError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {wrote} to {output}")
