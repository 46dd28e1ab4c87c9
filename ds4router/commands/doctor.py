"""``ds4router doctor``: what can answer now, what is missing, and the command to fix each.

Each check is a line: the local engine (configured, on disk), each cloud model (its key in
the environment, by name), provider keys no model uses, each local server (answering on
``/models``, and how private a request it may get). ``diagnose`` is pure over the config,
the environment and a reachability function; the command only prints. Exit 0 when
something can answer, 1 when nothing can (2 for a bad config, as everywhere).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import click

from ds4router.commands.common import load_project_config, project_option
from ds4router.config.loader import LoadedConfig


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str
    fix: str = ""
    answers: str = ""  # the target this check makes available, when ok


def diagnose(
    loaded: LoadedConfig, env: Mapping[str, str], reachable: Callable[[str], str | None]
) -> list[Check]:
    """Every check, in order. ``reachable(api_base)`` is None when a server answers, else why."""
    from ds4router.backends.endpoints import PROVIDER_DEFAULTS, resolve
    from ds4router.routing.state import local_engine_status
    from ds4router.servers import server_limit
    from ds4router.tui.setup import cloud_models_in

    config = loaded.config
    checks: list[Check] = []
    ok, detail = local_engine_status(loaded)
    fix = "" if ok else "ds4router models pull demo  (or set local.engine.model_path)"
    checks.append(Check("local engine", ok, detail, fix, "local" if ok else ""))
    used: set[str] = set()
    for model in cloud_models_in(loaded):
        target = resolve(model, config.cloud)
        var = target.api_key_env
        if var:
            used.add(var)
        has_key = var is None or bool(env.get(var))
        detail = "no key needed" if var is None else f"key {var} " + ("set" if has_key else "unset")
        fix = "" if has_key else f"export {var}=...  (the key stays in your environment)"
        checks.append(Check(f"cloud {model}", has_key, detail, fix, f"cloud:{model}"))
    for _, var in sorted(set(PROVIDER_DEFAULTS.values()), key=lambda pair: pair[1]):
        if env.get(var) and var not in used:
            fix = f"ds4router init --force  (or add cloud.models: [{{..., api_key_env: {var}}}])"
            checks.append(Check(f"key {var}", False, "set, but no cloud model uses it", fix))
    for server in config.local.servers:
        why = reachable(server.api_base)
        limit = server_limit(config, server.name)
        scope = "loopback: may get anything" if limit is None else f"may get up to {limit}"
        detail = f"{server.api_base} answers ({scope})" if why is None else f"{why} ({scope})"
        fix = (
            "" if why is None else f"start the server, or fix its api_base in {loaded.project_file}"
        )
        checks.append(
            Check(f"server local:{server.name}", why is None, detail, fix, f"local:{server.name}")
        )
    return checks


def reach(api_base: str, timeout_s: float = 2.0) -> str | None:
    """None when ``GET {api_base}/models`` answers (any HTTP status), else why not."""
    import urllib.error
    import urllib.request

    if api_base.startswith("unix://"):
        return None if os.path.exists(api_base[len("unix://") :]) else "no socket there"
    try:
        urllib.request.urlopen(api_base.rstrip("/") + "/models", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None  # it answered, if only to refuse
    except (OSError, ValueError) as exc:
        return f"not answering ({getattr(exc, 'reason', exc)})"
    return None


@click.command("doctor")
@project_option
def command(project: str | None) -> None:
    """What can answer now and what is missing, with the command to fix each."""
    loaded = load_project_config(project)
    checks = diagnose(loaded, os.environ, reach)
    for check in checks:
        mark = click.style("ok ", fg="green") if check.ok else click.style("-- ", fg="yellow")
        click.echo(f"{mark} {check.what}: {check.detail}")
        if check.fix:
            click.echo(f"     fix: {check.fix}")
    ready = [c.answers for c in checks if c.ok and c.answers]
    if ready:
        click.echo(f"can answer now: {', '.join(ready)}")
        return
    click.echo("nothing can answer yet: the first fix above is the quickest")
    sys.exit(1)
