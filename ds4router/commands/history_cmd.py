"""``ds4router history``: list, show, export and delete stored conversations.

An ID may be shortened to any unique prefix (as ``list`` prints it). Reading
commands never create the database: with none yet there is simply no history.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ds4router.commands.common import load_project_config, project_option, write_output
from ds4router.errors import Ds4RouterError

if TYPE_CHECKING:
    from ds4router.sessions.history import History, Message

SHORT_ID = 12


def _open(create: bool = False) -> History | None:
    from ds4router import paths
    from ds4router.sessions.history import History

    db = paths.database_path()
    if not create and not db.exists():
        return None
    return History(db)


def _need(history: History | None, conversation_id: str) -> tuple[History, str]:
    if history is None:
        raise Ds4RouterError(
            f"no conversation {conversation_id!r}: nothing is stored yet "
            "(`ds4router ask` and the TUI store conversations when history is on)"
        )
    return history, history.resolve(conversation_id)


def _redacted(messages: list[Message]) -> list[Message]:
    """Messages as they may be shown: anything the detectors find is redacted, also in rows
    written before history stored redacted text."""
    from dataclasses import replace

    from ds4router.config.schema import PrivacyConfig
    from ds4router.routing.privacy import redact_at_rest

    privacy = PrivacyConfig()
    return [
        replace(
            m,
            text=redact_at_rest(m.text, privacy),
            reasoning=redact_at_rest(m.reasoning, privacy),
            content=redact_at_rest(m.content, privacy),
            error=redact_at_rest(m.error, privacy),
        )
        for m in messages
    ]


@click.group("history")
def command() -> None:
    """Stored conversations: list, show, export, delete."""


@command.command("list")
@project_option
@click.option("--all", "all_projects", is_flag=True, help="Conversations of every project.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_command(project: str | None, all_projects: bool, as_json: bool) -> None:
    """Conversations of this project, most recent first."""
    import json

    name = None if all_projects else load_project_config(project).project_name
    history = _open()
    conversations = [] if history is None else history.list_conversations(name)
    if history is not None:
        history.close()
    if as_json:
        rows = [
            {
                "id": c.id,
                "title": c.title,
                "project": c.project,
                "updated_at": c.updated_at.isoformat(),
                "messages": c.messages,
            }
            for c in conversations
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not conversations:
        where = "any project" if name is None else f"project {name}"
        click.echo(f"no conversations stored for {where}")
        return
    for c in conversations:
        when = c.updated_at.astimezone().strftime("%Y-%m-%d %H:%M")
        scope = f"  [{c.project}]" if name is None else ""
        title = c.title or "(untitled)"
        click.echo(f"{c.id[:SHORT_ID]}  {when}  {c.messages:>3} msgs  {title}{scope}")


@command.command("show")
@click.argument("conversation_id", metavar="ID")
def show_command(conversation_id: str) -> None:
    """Print a conversation: each message with its route, model, tokens and cost."""
    from ds4router.sessions.history import route_line

    history, cid = _need(_open(), conversation_id)
    with history:
        summary = history.get(cid)
        messages = _redacted(history.messages(cid))
    assert summary is not None
    click.secho(f"{summary.title or '(untitled)'}", bold=True)
    click.echo(f"{summary.id} · project {summary.project} · {len(messages)} messages")
    for m in messages:
        stamp = m.created_at.astimezone().strftime("%Y-%m-%d %H:%M") if m.created_at else ""
        click.echo("")
        if m.role == "user":
            click.secho(f"you · {stamp}", bold=True)
            if m.attachments:
                click.echo("attached: " + ", ".join(m.attachments))
            click.echo(m.text or "")
            continue
        click.secho(f"assistant · {stamp} · {route_line(m)}", bold=True)
        if m.route == "refused":
            click.echo("Refused: nothing was sent.")
            continue
        if m.reasoning:
            click.secho(m.reasoning, dim=True, italic=True)
        click.echo(m.text or "")
        if m.status == "error":
            click.echo(f"[failed ({m.error_kind}): {m.error}]")
        elif m.status == "cancelled":
            click.echo("[cancelled]")


@command.command("export")
@click.argument("conversation_id", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE instead of standard output.",
)
def export_command(conversation_id: str, fmt: str, output: Path | None) -> None:
    """Export a conversation as Markdown or JSON."""
    from ds4router.sessions.history import export_json, export_markdown

    history, cid = _need(_open(), conversation_id)
    with history:
        summary = history.get(cid)
        messages = _redacted(history.messages(cid))
    assert summary is not None
    text = export_json(summary, messages) if fmt == "json" else export_markdown(summary, messages)
    write_output(text, output, f"conversation {cid[:SHORT_ID]} ({fmt})")


@command.command("delete")
@click.argument("conversation_id", metavar="ID")
def delete_command(conversation_id: str) -> None:
    """Delete a conversation and its messages (its cost ledger rows stay)."""
    history, cid = _need(_open(), conversation_id)
    with history:
        count = history.delete(cid)
    click.echo(f"deleted conversation {cid[:SHORT_ID]} ({count} messages)")
