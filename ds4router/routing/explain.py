"""A decision, explained: as a JSON-ready dict and as a Rich view (for `route --explain`)."""

from __future__ import annotations

from typing import Any, assert_never

from ds4router.routing.router import Classified, Decision
from ds4router.targets import CloudModel, LocalEngine, LocalServer, Refuse


def target_kind(decision: Decision) -> str:
    """The decision's kind as JSON and the explain view's header spell it."""
    return _look(decision)[0]


def _look(decision: Decision) -> tuple[str, str]:
    """(kind, colour) of the decision's target."""
    match decision.target:
        case LocalEngine() | LocalServer():
            return "local", "green"
        case CloudModel():
            return "cloud", "cyan"
        case Refuse():
            return "refuse", "red"
        case _:
            assert_never(decision.target)


def decision_dict(decision: Decision, request: Classified) -> dict[str, Any]:
    privacy = request.privacy
    task = request.task
    return {
        "target": target_kind(decision),
        "model": decision.model,
        "rule": decision.rule,
        "privacy": str(decision.privacy),
        "task": decision.task,
        "task_source": task.source,
        "task_score": task.score,
        "tokens_estimate": request.tokens,
        "reasons": list(decision.reasons),
        "fallbacks": [str(target) for target in decision.fallbacks],
        "fix": decision.fix,
        "redacted": decision.redact,
        "redactions": decision.redactions,
        "findings": [f.to_dict() for f in privacy.findings],
        "privacy_contributions": [
            {"source": c.source, "level": str(c.level)} for c in privacy.contributions
        ],
        "notes": list(privacy.notes),
        "rules": [{"rule": t.rule, "matched": t.matched, "why": t.why} for t in decision.trace],
    }


def badge(decision: Decision) -> str:
    """One line: where it goes and why (the TUI's preview, the CLI's summary)."""
    if isinstance(decision.target, Refuse):
        return f"REFUSED [{decision.privacy}] {decision.reasons[-1] if decision.reasons else ''}"
    where = "CLOUD" if isinstance(decision.target, CloudModel) else "LOCAL"
    return f"{where} {decision.model} · rule {decision.rule} · {decision.privacy} · {decision.task}"


def explain_renderable(decision: Decision, request: Classified) -> Any:
    """A Rich renderable with every step of the decision."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    kind, colour = _look(decision)
    head = Text()
    head.append(f" {kind.upper()} ", style=f"bold reverse {colour}")
    if decision.model:
        head.append(f"  {decision.model}", style="bold")
    head.append(f"   rule: {decision.rule}   privacy: {decision.privacy}   task: {decision.task}")

    privacy = Table(title="Privacy level", title_justify="left", expand=True, show_edge=False)
    privacy.add_column("contribution")
    privacy.add_column("level", justify="right")
    for c in request.privacy.contributions:
        privacy.add_row(Text(c.source), str(c.level))
    for note in request.privacy.notes:
        privacy.add_row(Text(note, style="yellow"), "")

    findings = Table(
        title="Findings (redacted)", title_justify="left", expand=True, show_edge=False
    )
    findings.add_column("where")
    findings.add_column("kind")
    findings.add_column("preview")
    for f in request.privacy.findings:
        findings.add_row(
            Text(f"{f.where or 'text'}:{f.finding.line}"), f.finding.kind, Text(f.finding.preview)
        )
    if not request.privacy.findings:
        findings.add_row("-", "none", "")

    task = request.task
    tasks = Table(
        title=f"Task: {task.task} ({task.source})",
        title_justify="left",
        expand=True,
        show_edge=False,
    )
    tasks.add_column("task")
    tasks.add_column("score", justify="right")
    tasks.add_column("matched features")
    for name, score in task.scores:
        if score > 0 or name == task.task:
            tasks.add_row(name, f"{score:g}", Text(", ".join(task.features_of(name))))

    rules = Table(title="Rules, in order", title_justify="left", expand=True, show_edge=False)
    rules.add_column("rule")
    rules.add_column("", width=3)
    rules.add_column("why")
    for t in decision.trace:
        rules.add_row(Text(t.rule), "✓" if t.matched else "·", Text(t.why))
    if not decision.trace:
        rules.add_row("-", "", "no rules were tried")

    steps = Text()
    for reason in decision.reasons:
        steps.append(f"• {reason}\n")
    if decision.fallbacks:
        steps.append(
            f"fallback if it fails before the first token: "
            f"{', '.join(str(t) for t in decision.fallbacks)}\n"
        )
    if decision.redact:
        steps.append(
            f"redacted for the cloud: {decision.redactions} finding(s) replaced by placeholders "
            "(privacy.on_detected: redact)\n",
            style="cyan",
        )
    if decision.fix:
        steps.append(f"to allow it: {decision.fix}\n", style="yellow")
    panel = Panel(steps, title="Decision", border_style=colour)
    return Group(head, privacy, findings, tasks, rules, panel)
