"""``ds4router db check`` and ``ds4router db repair``: the database's health, and its repair.

``check`` reads the whole file and compares the monthly summary with the ledger
rows (exit 0 healthy, 1 not). ``repair`` keeps a dated backup beside the file
and repairs it (``pricing.repair``); close the TUI and other ds4router processes
first, since a damaged file is replaced.
"""

from __future__ import annotations

import click

from ds4router.errors import Ds4RouterError


@click.group("db")
def command() -> None:
    """The ledger + history database: check, repair."""


@command.command("check")
def check_command() -> None:
    """Read the whole database; say what is wrong with it, if anything."""
    from ds4router import paths
    from pricing.errors import PricingError
    from pricing.repair import check

    path = paths.database_path()
    try:
        result = check(path)
    except PricingError as exc:
        raise Ds4RouterError(str(exc)) from None
    for problem in result.problems:
        click.echo(f"damaged: {problem}")
    for month in result.cube:
        click.echo(f"summary disagrees with the ledger rows: {month}")
    if result.started:
        click.echo(f"{result.started} request(s) still running (status started)")
    if result.healthy:
        click.echo(f"{path}: healthy")
        return
    click.echo(f"{path}: run `ds4router db repair` (it keeps a backup first)")
    raise SystemExit(1)


@command.command("repair")
def repair_command() -> None:
    """Back the database up, then recover what SQLite can and rebuild the summary."""
    from ds4router import paths
    from pricing.errors import PricingError
    from pricing.repair import repair

    path = paths.database_path()
    try:
        result = repair(path)
    except PricingError as exc:
        raise Ds4RouterError(str(exc)) from None
    click.echo(f"backup: {result.backup}")
    if result.recovered:
        click.echo(
            f"recovered {result.ledger_rows} ledger rows and {result.messages} messages "
            f"({result.method}); what could not be read is only in the backup"
        )
    click.echo("the summary table was rebuilt from the ledger rows")
    click.echo(f"{path}: repaired")
