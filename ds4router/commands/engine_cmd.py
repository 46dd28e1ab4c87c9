"""``ds4router engine``: the local DeepSeek V4 Flash engine from the command line.

A click group whose sub-commands come from sibling modules, each imported only when
needed: ``engine_run`` (``info``, ``generate``, ``init-random``), and, when they are part
of the build, ``engine_quant`` (``convert``, ``compare``, ``plan``) and ``engine_cache``
(``cache ...``). A module is attached only if it exists (``importlib.util.find_spec``),
so a new one drops in without editing this file. Each module exposes ``commands``, a
sequence of click commands (or a single ``command``). Neither this module nor the
sub-command modules import mlx at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator

import click

# Sub-command modules, in the order their commands are looked up.
MODULES: tuple[str, ...] = (
    "ds4router.commands.engine_run",
    "ds4router.commands.engine_quant",
    "ds4router.commands.engine_cache",
)


def _present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _commands_of(module_name: str) -> list[click.Command]:
    module = importlib.import_module(module_name)
    found = getattr(module, "commands", None)
    if found is None:
        single = getattr(module, "command", None)
        found = [single] if single is not None else []
    commands = list(found)
    for item in commands:
        if not isinstance(item, click.Command):
            raise TypeError(f"{module_name}.commands holds {item!r}, not a click command")
    return commands


def _available() -> Iterator[str]:
    return (name for name in MODULES if _present(name))


class EngineGroup(click.Group):
    """``engine``: sub-commands gathered from the modules in ``MODULES`` that exist."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names: set[str] = set()
        for module_name in _available():
            names.update(str(c.name) for c in _commands_of(module_name))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module_name in _available():
            for found in _commands_of(module_name):
                if found.name == cmd_name:
                    return found
        return None


@click.group("engine", cls=EngineGroup)
def command() -> None:
    """The local DeepSeek V4 Flash engine: inspect a checkpoint, generate, make test models."""


__all__ = ["MODULES", "EngineGroup", "command"]
