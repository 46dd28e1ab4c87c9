"""Pieces shared by CLI sub-commands: the ``--project`` option, reading text or stdin."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ds4router.config.loader import LoadedConfig, load_config

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
    """``-`` reads the whole of stdin."""
    if text == "-":
        return sys.stdin.read()
    return text
