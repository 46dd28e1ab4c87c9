"""``ds4router`` with no sub-command (and ``ds4router tui``): open the Textual app.

Textual is imported only here, when the app starts, never on other CLI paths.
"""

from __future__ import annotations

import click

from ds4router.commands.common import project_option, resolve_project


def run_tui(project: str | None, serve: bool = False) -> None:
    """Open the app in ``project`` (a directory; None: walk up from the working directory).

    A wrong ``--project`` raises ``Ds4RouterError`` before anything is drawn; an
    invalid config file does not stop the app (it shows a banner instead).
    """
    from ds4router.tui.app import Ds4RouterApp

    app = Ds4RouterApp(project, serve=serve)
    app.run()


@click.command("tui")
@project_option
def command(project: str | None) -> None:
    """Open the interactive chat (the same as ``ds4router`` alone)."""
    run_tui(resolve_project(project))
