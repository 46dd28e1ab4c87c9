"""``ds4router engine cache ls | stats | verify | clear``: the local engine's KV cache on disk.

The directory is ``--kv-cache DIR`` when given, else the project's
``local.engine.kv_cache_dir``, else the user cache dir (``ds4router.paths.kv_cache_dir``).
``ls`` lists the saved prefixes (most recently used first), ``stats`` sums them up,
``verify`` reads every entry in full (checksums, sizes, keys), removes the damaged ones,
adopts entries missing from the index and drops temp files of writers that died, and
``clear`` removes every entry. Nothing here loads a model or imports mlx.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds4router.commands.common import load_project_config, project_option
from ds4router.errors import Ds4RouterError

if TYPE_CHECKING:
    from ds4router.backends.engine_port import KVStore

GIB = 1024**3
MIB = 1024**2


def _dir_option(func: Any) -> Any:
    return click.option(
        "--kv-cache",
        "kv_cache",
        type=click.Path(path_type=Path),
        default=None,
        help="The KV cache directory (default: local.engine.kv_cache_dir, else the user "
        "cache dir).",
    )(func)


def _json_option(func: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def cache_location(kv_cache: Path | None, project: str | None) -> tuple[Path, int | None]:
    """The directory and its byte budget (from the config; None when not configured)."""
    from ds4router.paths import kv_cache_dir

    budget: int | None = None
    configured: str | None = None
    try:
        engine = load_project_config(project).config.local.engine
    except Ds4RouterError:
        if kv_cache is None:
            raise
    else:
        configured = engine.kv_cache_dir
        budget = int(engine.kv_disk_gb * GIB) if engine.kv_disk_gb > 0 else None
    if kv_cache is not None:
        return kv_cache.expanduser(), budget
    if configured:
        return Path(configured).expanduser(), budget
    return kv_cache_dir(), budget


def open_store(directory: Path, budget: int | None, *, must_exist: bool = True) -> KVStore | None:
    """The store in ``directory``; None when it does not exist (and ``must_exist``)."""
    from ds4router.backends.engine_port import EngineError, KVStore

    if directory.exists() and not directory.is_dir():
        raise Ds4RouterError(f"{directory} is a file, not a KV cache directory")
    if must_exist and not directory.is_dir():
        return None
    try:
        return KVStore(directory, budget_bytes=budget)
    except EngineError as exc:
        raise Ds4RouterError(str(exc)) from None


def _size(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB"


def _ago(t: float, now: float) -> str:
    s = max(0.0, now - t)
    for unit, width in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= width:
            return f"{s / width:.0f} {unit} ago"
    return f"{s:.0f} s ago"


@click.command("ls")
@_dir_option
@_json_option
@project_option
def ls_command(kv_cache: Path | None, as_json: bool, project: str | None) -> None:
    """List the saved prompt prefixes, most recently used first."""
    directory, budget = cache_location(kv_cache, project)
    store = open_store(directory, budget)
    entries = [] if store is None else store.entries()
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no saved prefixes in {directory}")
        return
    now = time.time()
    click.echo(f"{'key':<12}  {'model':<8}  {'tokens':>9}  {'size':>10}  {'hits':>5}  last used")
    for e in entries:
        click.echo(
            f"{e.key[:12]:<12}  {e.fingerprint[:8]:<8}  {e.tokens:>9,}  {_size(e.nbytes):>10}  "
            f"{e.hits:>5}  {_ago(e.last_used, now)}"
        )


@click.command("stats")
@_dir_option
@_json_option
@project_option
def stats_command(kv_cache: Path | None, as_json: bool, project: str | None) -> None:
    """Entries, bytes against the budget, tokens, hits and models in the cache."""
    directory, budget = cache_location(kv_cache, project)
    store = open_store(directory, budget)
    if store is None:
        if as_json:
            click.echo(json.dumps({"root": str(directory), "entries": 0, "nbytes": 0}))
        else:
            click.echo(f"no KV cache at {directory} yet")
        return
    stats = store.stats()
    if as_json:
        click.echo(json.dumps(asdict(stats), indent=2))
        return
    limit = f" of {_size(stats.budget_bytes)}" if stats.budget_bytes else ""
    rows = [
        ("directory", stats.root),
        ("entries", f"{stats.entries}"),
        ("size", f"{_size(stats.nbytes)}{limit}"),
        ("tokens", f"{stats.tokens:,}"),
        ("hits", f"{stats.hits}"),
        ("models", f"{stats.models}"),
    ]
    if stats.temp_files:
        rows.append(("unfinished", f"{stats.temp_files} temp files (`cache verify` cleans up)"))
    for name, value in rows:
        click.echo(f"  {name:<11} {value}")


@click.command("verify")
@_dir_option
@_json_option
@project_option
def verify_command(kv_cache: Path | None, as_json: bool, project: str | None) -> None:
    """Read every entry in full; remove damaged ones and repair the index."""
    directory, budget = cache_location(kv_cache, project)
    store = open_store(directory, budget)
    if store is None:
        click.echo(f"no KV cache at {directory}; nothing to verify")
        return
    try:
        report = store.verify()
    except OSError as exc:
        raise Ds4RouterError(f"cannot verify {directory}: {exc}") from None
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    click.echo(
        f"checked {report.checked} entries in {directory}: {report.ok} ok, "
        f"{len(report.removed)} damaged and removed, {report.adopted} re-indexed, "
        f"{report.missing} missing files dropped from the index, "
        f"{report.temp_removed} unfinished writes cleaned up"
    )
    for line in report.removed:
        click.echo(f"  removed {line}")


@click.command("clear")
@_dir_option
@project_option
def clear_command(kv_cache: Path | None, project: str | None) -> None:
    """Remove every saved prefix from the cache directory."""
    directory, budget = cache_location(kv_cache, project)
    store = open_store(directory, budget)
    if store is None:
        click.echo(f"no KV cache at {directory}; nothing to clear")
        return
    try:
        gone = store.clear()
    except OSError as exc:
        raise Ds4RouterError(f"cannot clear {directory}: {exc}") from None
    click.echo(f"removed {gone} saved prefixes from {directory}")


@click.group("cache")
def cache_group() -> None:
    """The local engine's KV cache on disk: list, sum up, verify, clear."""


for _cmd in (ls_command, stats_command, verify_command, clear_command):
    cache_group.add_command(_cmd)

commands = [cache_group]

__all__ = ["cache_location", "commands", "open_store"]
