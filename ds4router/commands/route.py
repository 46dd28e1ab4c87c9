"""``ds4router route``: where a request would go, and why — nothing is sent."""

from __future__ import annotations

import json

import click

from ds4router.commands.common import load_project_config, project_option, read_text_argument


@click.command("route")
@click.argument("text")
@click.option("--file", "files", multiple=True, help="Attach a file (repeatable).")
@project_option
@click.option("--explain", is_flag=True, help="Show every step of the decision.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(
    text: str, files: tuple[str, ...], project: str | None, explain: bool, as_json: bool
) -> None:
    """Decide where TEXT (or stdin, with -) would be routed. Nothing is sent anywhere."""
    from ds4router.routing.classify import classify, load_attachments
    from ds4router.routing.explain import badge, decision_dict
    from ds4router.routing.request import Request
    from ds4router.routing.router import decide
    from ds4router.routing.state import current_state

    loaded = load_project_config(project)
    body = read_text_argument(text)
    attachments = load_attachments(body, files, loaded.project_dir)
    request = classify(Request(body, attachments), loaded.config)
    decision = decide(request, loaded.config, current_state(loaded))
    if as_json:
        click.echo(json.dumps(decision_dict(decision, request), indent=2))
    elif explain:
        from rich.console import Console

        from ds4router.routing.explain import explain_renderable

        Console().print(explain_renderable(decision, request))
    else:
        click.echo(badge(decision))
        for reason in decision.reasons:
            click.echo(f"  {reason}")
        if decision.fix:
            click.echo(f"  to allow it: {decision.fix}")
