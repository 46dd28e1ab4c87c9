"""``ds4router ask``: one request, routed, streamed to stdout, priced and written to the ledger.

Standard output carries only the answer (so ``ask ... > answer.md`` keeps just
that); the route, fallbacks, notices (earlier turns left out to fit the model's
context window), reasoning and the footer line go to standard error. ``--json``
prints one JSON object on stdout at the end instead.

Exit status: 0 answered; 1 the request failed or was refused (the reason is
printed); 2 a user error (bad option, missing file, bad config); 130 cancelled
with Ctrl-C (the ledger records it as cancelled).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, assert_never

import click

from ds4router.commands.common import load_project_config, project_option, read_text_argument
from ds4router.errors import Ds4RouterError
from ds4router.targets import Target, explicit_target

if TYPE_CHECKING:
    from ds4router.config.loader import LoadedConfig
    from ds4router.events import Failed, Priced, SessionEvent
    from ds4router.routing.router import Decision
    from ds4router.sessions.session import Session

EXIT_FAILED = 1
EXIT_CANCELLED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it


@click.command("ask")
@click.argument("text")
@click.option("--file", "files", multiple=True, help="Attach a file (repeatable).")
@project_option
@click.option("--model", default=None, help="Use this model (e.g. openai/gpt-4.1, or local).")
@click.option(
    "--conversation",
    "conversation_id",
    default=None,
    metavar="ID",
    help="Continue a conversation from `ds4router history list`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
def command(
    text: str,
    files: tuple[str, ...],
    project: str | None,
    model: str | None,
    conversation_id: str | None,
    as_json: bool,
) -> None:
    """Ask TEXT (or stdin, with -): routed by the project's rules, streamed, priced."""
    import asyncio

    from ds4router.sessions.session import Session

    loaded = load_project_config(project)
    body = read_text_argument(text)
    if not body.strip() and not files:
        raise Ds4RouterError("nothing to ask: give TEXT, or - with text on stdin")
    session = Session(loaded)
    try:
        if conversation_id is not None:
            conversation_id = _resolve_conversation(session, conversation_id)
        target = None if model is None else _known_target(loaded, model)
        outcome = asyncio.run(_ask(session, body, files, target, conversation_id, as_json))
    finally:
        session.close()
    if outcome:
        sys.exit(outcome)


def _known_target(loaded: LoadedConfig, model: str) -> Target:
    """The target ``--model`` names; a name nothing can serve is a usage error (exit 2)."""
    from ds4router.model_names import catalog_names, configured_names, unknown_model

    target = explicit_target(model)
    problem = unknown_model(target, configured_names(loaded), catalog_names())
    if problem is not None:
        raise Ds4RouterError(problem)
    return target


def _resolve_conversation(session: Session, prefix: str) -> str:
    if not session.history_enabled:
        raise Ds4RouterError(
            "history is off for this project (history: off), so there is no conversation "
            "to continue"
        )
    from ds4router.sessions.history import History

    with History(session.db_path) as history:
        return history.resolve(prefix)


async def _ask(
    session: Session,
    text: str,
    files: tuple[str, ...],
    model: Target | None,
    conversation_id: str | None,
    as_json: bool,
) -> int:
    """Run one request; returns the exit status."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    presses = 0
    main = asyncio.current_task()

    def interrupt() -> None:
        # First Ctrl-C cancels the request (it is still written to the ledger);
        # a second one stops waiting for that.
        nonlocal presses
        presses += 1
        if presses == 1:
            session.cancel()
        elif main is not None:
            main.cancel()

    terminated = False

    def terminate() -> None:
        # SIGTERM (a service manager, `kill`): end like a Ctrl-C, so the request is
        # recorded as cancelled with what it used, then exit 143.
        nonlocal terminated
        terminated = True
        interrupt()

    for number, handler in ((signal.SIGINT, interrupt), (signal.SIGTERM, terminate)):
        try:
            loop.add_signal_handler(number, handler)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            pass
    out = Output(as_json)
    try:
        async for event in session.send(
            text, files=files, conversation_id=conversation_id, model=model
        ):
            out.apply(event)
    except asyncio.CancelledError:
        out.end_text()
        click.echo("Cancelled.", err=True)
        return EXIT_CANCELLED
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(number)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    status = out.finish()
    return EXIT_TERMINATED if terminated else status


class Output:
    """What ``ask`` prints as events arrive, and the summary at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.decision: Decision | None = None
        self.failure: Failed | None = None
        self.priced: Priced | None = None
        self.finish_reason: str | None = None
        self.fallbacks: list[dict[str, str]] = []
        self.notices: list[dict[str, str]] = []
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._in_reasoning = False

    def apply(self, event: SessionEvent) -> None:
        """One session event: shown now (notes on stderr, the answer on stdout) or kept."""
        from ds4router.events import (
            Done,
            Failed,
            FallbackTaken,
            Notice,
            Priced,
            ReasoningDelta,
            Refused,
            Routed,
            TextDelta,
            TokenUsage,
            ToolCallDelta,
            ToolCallDone,
            ToolCallInvalid,
            ToolCallStart,
        )
        from ds4router.routing.explain import badge

        match event:
            case Routed(decision=decision):
                self.decision = decision
                self.note(f"→ {badge(decision)}")
            case Refused(decision=decision):
                self.decision = decision
                self.refused(decision)
            case FallbackTaken(from_target=source, to_target=to, reason=reason):
                self.fallbacks.append({"from": str(source), "to": str(to), "reason": reason})
                self.note(f"{source} failed before any token: {reason} → trying {to}")
            case Notice(kind=kind, message=message):
                self.notices.append({"kind": kind, "message": message})
                self.note(message)
            case TextDelta(text=text):
                self.text(text)
            case ReasoningDelta(text=text):
                self.reasoning(text)
            case Failed():
                self.failure = event
            case Done(finish_reason=reason):
                self.finish_reason = reason
            case Priced():
                self.priced = event
            case TokenUsage():
                pass  # the ``Priced`` event carries what it cost
            case ToolCallStart() | ToolCallDelta() | ToolCallDone() | ToolCallInvalid():
                pass  # ask offers the model no tools; an agent's calls go through ``serve``
            case _:
                assert_never(event)

    def note(self, line: str) -> None:
        if not self.as_json:
            click.secho(line, err=True, dim=True)

    def text(self, piece: str) -> None:
        self._text.append(piece)
        if not self.as_json:
            self._close_reasoning()
            click.echo(piece, nl=False)

    def reasoning(self, piece: str) -> None:
        self._reasoning.append(piece)
        if not self.as_json:
            self._in_reasoning = True
            click.secho(piece, nl=False, err=True, dim=True, italic=True)

    def _close_reasoning(self) -> None:
        if self._in_reasoning:
            click.echo("", err=True)
            self._in_reasoning = False

    def end_text(self) -> None:
        if not self.as_json:
            self._close_reasoning()
            if self._text and not self._text[-1].endswith("\n"):
                click.echo("")

    def refused(self, decision: Decision) -> None:
        if self.as_json:
            return
        click.echo(f"Refused: nothing was sent. {badge_reason(decision)}", err=True)
        for reason in decision.reasons:
            click.echo(f"  {reason}", err=True)
        if decision.fix:
            click.echo(f"  to allow it: {decision.fix}", err=True)

    def finish(self) -> int:
        self.end_text()
        status = self._status()
        if self.as_json:
            click.echo(json.dumps(self._json(status), indent=2, ensure_ascii=False))
        elif self.priced is not None and status != "refused":
            click.secho(footer(self.priced), err=True, dim=True)
        if status == "ok":
            return 0
        if status == "cancelled":
            if not self.as_json:
                click.echo("Cancelled.", err=True)
            return EXIT_CANCELLED
        if status == "error" and not self.as_json and self.failure is not None:
            where = " after part of the answer" if self.failure.after_tokens else ""
            click.echo(
                f"error: failed{where} ({self.failure.kind}): {self.failure.message}", err=True
            )
        return EXIT_FAILED

    def _status(self) -> str:
        if self.priced is not None and self.priced.route == "refused":
            return "refused"
        if self.failure is not None:
            return "cancelled" if self.failure.kind == "cancelled" else "error"
        if self.priced is None:
            return "error"
        return "ok"

    def _json(self, status: str) -> dict[str, Any]:
        from ds4router.routing.explain import target_kind
        from ds4router.sessions.turn_costs import priced_fields

        data: dict[str, Any] = {
            "status": status,
            "text": "".join(self._text),
            "reasoning": "".join(self._reasoning) or None,
            "finish_reason": self.finish_reason,
        }
        if self.decision is not None:
            data.update(
                target=target_kind(self.decision),
                privacy=str(self.decision.privacy),
                task=self.decision.task,
                reasons=list(self.decision.reasons),
                fix=self.decision.fix,
            )
        data["fallbacks"] = self.fallbacks
        data["notices"] = self.notices
        data["error"] = (
            None
            if self.failure is None
            else {
                "kind": self.failure.kind,
                "message": self.failure.message,
                "retryable": self.failure.retryable,
                "after_tokens": self.failure.after_tokens,
            }
        )
        if self.priced is not None:
            data.update(priced_fields(self.priced))
            data["status"] = status  # the ledger says "ok" for a refusal; the user reads refused
        return data


def badge_reason(decision: Decision) -> str:
    return f"[{decision.privacy} · {decision.task}]"


def footer(priced: Priced) -> str:
    """``── cloud · openai/gpt-4.1 · rule default · 11 in / 4 out tok · 52.1 tok/s · $0.000054 ·
    saved $0.0012 vs anthropic/claude-opus-4-7``"""
    from ds4router.sessions.turn_costs import money

    parts = [priced.route]
    if priced.model:
        parts.append(priced.model)
    parts.append(f"rule {priced.rule or '-'}")
    # "~": no usage was reported, the counts (and the cost from them) are estimates.
    mark = "~" if priced.usage_estimated else ""
    parts.append(f"{mark}{priced.input_tokens} in / {mark}{priced.output_tokens} out tok")
    if priced.tok_s is not None:
        parts.append(f"{priced.tok_s:.1f} tok/s")
    parts.append("unpriced" if priced.cost_usd is None else money(priced.cost_usd))
    if priced.reference_model:
        if priced.saving_usd is None:
            parts.append(f"saving vs {priced.reference_model} unknown")
        elif priced.saving_usd >= 0:
            parts.append(f"saved {money(priced.saving_usd)} vs {priced.reference_model}")
        else:
            parts.append(f"{money(-priced.saving_usd)} more than {priced.reference_model}")
    return "── " + " · ".join(parts)
