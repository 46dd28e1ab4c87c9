"""``ds4router estimate``: a month of usage priced on 40+ cloud models and on local hardware.

With ``--from-ledger`` the output also says how many of the month's requests had
estimated token counts (they reported no usage): a first line in table and md, the
``assumptions.ledger`` object in json, a line on stderr with csv (whose rows stay data).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds4router.errors import Ds4RouterError

if TYPE_CHECKING:
    from pricing.agent_logs import LoggedMonth
    from pricing.catalog import PriceCatalog
    from pricing.estimator import LedgerUsage

FORMATS = ("table", "json", "csv", "md", "html")
DEFAULT_PROFILE = "m3-max-q2"


@click.command("estimate")
@click.option(
    "--output-tokens",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Output tokens a month.",
)
@click.option(
    "--input-tokens",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="Input (prompt) tokens a month.",
)
@click.option(
    "--cached-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    metavar="F",
    help="Share of the input read from the provider's prompt cache.",
)
@click.option(
    "--models",
    "models",
    multiple=True,
    metavar="M",
    help="Models to price (repeat or comma-separate); default: --top.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="How many well-known chat models to price when --models is not given.",
)
@click.option(
    "--prices",
    default=None,
    metavar="SHEET|FILE",
    help="Price as of a dated sheet in configs/prices (e.g. 2026-11), or add a sheet file.",
)
@click.option(
    "--local-profile",
    default=DEFAULT_PROFILE,
    show_default=True,
    metavar="NAME|FILE",
    help="Local hardware profile (configs/local_profiles) or a YAML file.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--from-ledger",
    is_flag=True,
    help="Use a real month of traffic from the ledger instead of --*-tokens.",
)
@click.option(
    "--from-claude-code",
    "claude_dir",
    is_flag=False,
    flag_value="~/.claude/projects",
    default=None,
    metavar="[DIR]",
    help="Re-price a month of Claude Code's logs (default DIR: ~/.claude/projects).",
)
@click.option(
    "--from-codex",
    "codex_dir",
    is_flag=False,
    flag_value="~/.codex/sessions",
    default=None,
    metavar="[DIR]",
    help="Re-price a month of Codex's session logs (default DIR: ~/.codex/sessions).",
)
@click.option(
    "--month",
    default=None,
    metavar="YYYY-MM",
    help="With --from-ledger: the month (UTC), default this month; with --from-claude-code "
    "or --from-codex: default the logs' latest month.",
)
@click.option(
    "--project",
    "project_name",
    default=None,
    metavar="P",
    help="With --from-ledger: only this project's traffic.",
)
@click.pass_context
def command(
    ctx: click.Context,
    output_tokens: int | None,
    input_tokens: int,
    cached_share: float,
    models: tuple[str, ...],
    top: int,
    prices: str | None,
    local_profile: str,
    fmt: str,
    from_ledger: bool,
    month: str | None,
    project_name: str | None,
    claude_dir: str | None,
    codex_dir: str | None,
) -> None:
    """Monthly cost per model for a usage profile, the local cost, and where local wins."""
    from ds4router import paths
    from ds4router.config import load_config
    from pricing.errors import PricingError
    from pricing.estimate_render import render_estimate
    from pricing.estimator import estimate, usage_from_profile
    from pricing.profiles import load_profile

    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    loaded = load_config(obj.get("project"))
    try:
        configs = paths.configs_dir()
    except FileNotFoundError as exc:
        raise Ds4RouterError(str(exc)) from None
    try:
        catalog = _catalog(configs / "prices", prices, loaded.config.pricing.overrides)
        from_month: LedgerUsage | None = None
        logged = _logged(claude_dir, codex_dir, month, from_ledger)
        if logged is not None:
            usage = logged.usage
        elif from_ledger:
            from_month = _ledger_usage(paths.database_path(), month, project_name)
            usage = from_month.usage
        else:
            if output_tokens is None:
                raise Ds4RouterError(
                    "give --output-tokens N (tokens generated a month), or --from-ledger"
                )
            usage = usage_from_profile(output_tokens, input_tokens, cached_share)
        names = [m.strip() for group in models for m in group.split(",") if m.strip()]
        if not names:
            names = catalog.featured(top)
            if logged is not None:  # the models the agent used, first
                names = [*logged.models(), *names]
        profile = load_profile(local_profile, configs / "local_profiles")
        result = estimate(
            catalog,
            names,
            usage,
            profile,
            ledger=from_month,
            requests=logged.timed if logged is not None else (),
            more_profiles=_all_profiles(configs / "local_profiles") if logged else (),
        )
        if logged is not None:
            result.assumptions["agent_log"] = logged.as_dict()
        text = render_estimate(result, fmt)
    except PricingError as exc:
        raise Ds4RouterError(str(exc)) from None
    for name, suggestions in result.unknown:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        click.echo(f"warning: no price for {name!r} (shown as unpriced){hint}", err=True)
    described = from_month or logged
    if described is not None:
        line = described.describe()
        if fmt == "table":
            text = f"{line}\n{text}"
        elif fmt == "md":
            text = f"- {line}\n{text}"
        elif fmt == "csv":
            click.echo(line, err=True)
        elif fmt == "html":
            from pricing.estimate_render import render_html

            text = render_html(result, [line])
    click.echo(text, nl=False)


def _catalog(sheets_dir: Path, prices: str | None, overrides: dict[str, Any]) -> PriceCatalog:
    from pricing.catalog import PriceCatalog
    from pricing.sheets import load_sheet, sheet_files

    plain = {name: rates.model_dump(exclude_none=True) for name, rates in overrides.items()}
    if prices is None:
        return PriceCatalog.load(sheets_dir, plain)
    candidate = Path(prices).expanduser()
    if candidate.is_file():
        return PriceCatalog.load(sheets_dir, plain, extra_sheets=[candidate])
    named = sheets_dir / f"{prices}.yaml"
    if named.is_file():
        as_of = load_sheet(named).as_of_date
        return PriceCatalog.load(sheets_dir, plain, as_of=as_of)
    known = ", ".join(p.stem for p in sheet_files(sheets_dir)) or "none"
    raise Ds4RouterError(f"--prices {prices}: no such file or sheet; sheets: {known}")


def _all_profiles(profiles_dir: Path) -> list[Any]:
    """Every bundled local profile: a real month is priced on each of them."""
    from pricing.profiles import load_profile, profile_names

    return [load_profile(name, profiles_dir) for name in profile_names(profiles_dir)]


def _logged(
    claude_dir: str | None, codex_dir: str | None, month: str | None, from_ledger: bool
) -> LoggedMonth | None:
    from pricing.agent_logs import CLAUDE_CODE, CODEX, logged_month, read_agent_log
    from pricing.ledger import check_month

    sources = [(o, d) for o, d in ((CLAUDE_CODE, claude_dir), (CODEX, codex_dir)) if d]
    if len(sources) + from_ledger > 1:
        raise Ds4RouterError(
            "give one of --from-ledger, --from-claude-code and --from-codex, not several"
        )
    if not sources:
        return None
    if month is not None:
        check_month(month)
    origin, directory = sources[0]
    return logged_month(read_agent_log(origin, directory), month)


def _ledger_usage(db_path: Path, month: str | None, project: str | None) -> LedgerUsage:
    from pricing.estimator import usage_from_ledger
    from pricing.ledger import Ledger, check_month

    month = month or dt.datetime.now(dt.UTC).strftime("%Y-%m")
    check_month(month)
    scope = f" for project {project}" if project else ""
    if not db_path.exists():
        raise Ds4RouterError(
            f"no ledger at {db_path} yet; run some requests or use --output-tokens"
        )
    with Ledger(db_path) as ledger:
        used = usage_from_ledger(ledger, month, project)
    if used.usage.output_tokens == 0:
        raise Ds4RouterError(
            f"the ledger has no output tokens in {month}{scope} ({used.requests} requests); "
            "pick another --month or use --output-tokens"
        )
    return used
