"""The ``ds4router`` command line: a lazy click group over ``ds4router.commands``.

Sub-commands live in their own modules and are imported only when invoked, so
``ds4router --help`` stays fast and never imports litellm, mlx, textual or torch.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
from typing import Any

import click

from ds4router import __version__
from ds4router.errors import Ds4RouterError
from pricing.errors import PricingError

# name -> (module, one-line help). The module exposes ``command``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "route": ("ds4router.commands.route", "Decide where a request would go, and why."),
    "config": ("ds4router.commands.config_cmd", "Show or validate configuration."),
    "ask": ("ds4router.commands.ask", "Ask once: routed, streamed, priced, recorded."),
    "history": ("ds4router.commands.history_cmd", "Conversations: list, show, export, delete."),
    "engine": (
        "ds4router.commands.engine_cmd",
        "The local DeepSeek V4 Flash engine: info, generate, init-random, ...",
    ),
    "init": ("ds4router.commands.init_cmd", "Write a commented .ds4router.yaml for a project."),
    "doctor": ("ds4router.commands.doctor", "What can answer now, what is missing, how to fix it."),
    "models": ("ds4router.commands.models_cmd", "Local models: pull the demo model, list."),
    "tui": ("ds4router.commands.tui_cmd", "Open the interactive chat (same as plain ds4router)."),
    "report": ("ds4router.commands.report", "Monthly cost report (table, csv, json, md, html)."),
    "serve": (
        "ds4router.commands.serve",
        "Serve OpenAI and Anthropic APIs for coding agents, routed and priced.",
    ),
    "db": ("ds4router.commands.db_cmd", "The database: check it, or repair it (with a backup)."),
    "estimate": (
        "ds4router.commands.estimate",
        "Monthly cost on 40+ models and on local hardware.",
    ),
}


def register(name: str, module: str, help_text: str) -> None:
    """Add a lazily imported sub-command (used by modules that plug in)."""
    SUBCOMMANDS[name] = (module, help_text)


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, invoke_without_command=True)
@click.option(
    "--project",
    "project",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Project directory (default: walk up from the working directory).",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Also run the agents' gateway (ds4router serve) in the app; F12 shows its traffic.",
)
@click.version_option(__version__, prog_name="ds4router")
@click.pass_context
def cli(ctx: click.Context, project: str | None, serve: bool) -> None:
    """ds4router: local DeepSeek V4 Flash + cloud models, routed by privacy and task, priced."""
    ctx.ensure_object(dict)
    ctx.obj["project"] = project
    if ctx.invoked_subcommand is None:
        from ds4router.commands.tui_cmd import run_tui

        run_tui(project, serve=serve)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: user errors print one line to stderr, never a traceback."""
    try:
        return cli.main(args=argv, prog_name="ds4router", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other user error: no usage block above it.
        command = exc.ctx.command_path if exc.ctx is not None else "ds4router"
        click.echo(f"error: {exc.format_message()} (see {command} --help)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2 if exc.exit_code not in (0, 1) else exc.exit_code or 2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Ds4RouterError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except PricingError as exc:  # a command that did not wrap it: still one line
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except sqlite3.Error as exc:  # the database failed where no one expected it
        from ds4router import paths
        from pricing.db import database_error

        click.echo(f"error: {database_error(exc, paths.database_path())}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
