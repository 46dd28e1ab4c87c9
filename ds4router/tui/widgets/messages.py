"""Chat messages: what the user sent, and an answer as it streams in.

An answer streams its Markdown through Textual's ``MarkdownStream`` (fragments
are batched into appends, never a re-render per token). Reasoning sits in a
collapsed section. Under the answer: the route badge (LOCAL/CLOUD, model,
rule, privacy, task) and a stats line (tokens, TTFT, tok/s, cost, saving).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from ds4router.routing.explain import target_kind
from ds4router.tui.format import badge_parts, history_stats_line, stats_line


class UserMessage(Static):
    """The user's text, as sent (tags included)."""

    def __init__(self, text: str, stamp: str) -> None:
        body = Text()
        body.append(f"you · {stamp}\n", style="bold")
        body.append(text)
        super().__init__(body, classes="user-message")
        self.text = text


class AssistantMessage(Vertical):
    """One answer: streamed Markdown, collapsed reasoning, notes, badge and stats."""

    def __init__(
        self,
        stamp: str,
        *,
        prompt: str = "",
        text: str = "",
        reasoning: str = "",
    ) -> None:
        super().__init__(classes="assistant-message")
        self.stamp = stamp
        self.prompt = prompt  # the user text this answers (Explain re-evaluates it)
        self._initial_text = text
        self._initial_reasoning = reasoning
        self.text = text
        self.reasoning = reasoning
        self.decision: Any = None
        self.request: Any = None
        self.priced: Any = None
        self.failure: Any = None
        self.notes: list[Text] = []
        self._answer_stream: MarkdownStream | None = None
        self._reasoning_stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"assistant · {self.stamp}", style="bold"), classes="who")
        with Collapsible(
            title="Reasoning", collapsed=True, classes="reasoning", id=None
        ) as collapsible:
            collapsible.display = bool(self._initial_reasoning)
            yield Markdown(self._initial_reasoning, classes="reasoning-text")
        yield Markdown(self._initial_text, classes="answer")
        yield Static("", classes="status")
        yield Static("", classes="notes")
        yield Static("", classes="badge")
        yield Static("", classes="stats")

    # --- parts ---------------------------------------------------------------

    @property
    def answer(self) -> Markdown:
        return self.query_one(".answer", Markdown)

    @property
    def reasoning_section(self) -> Collapsible:
        return self.query_one(".reasoning", Collapsible)

    def _static(self, name: str) -> Static:
        return self.query_one(f".{name}", Static)

    # --- streaming -------------------------------------------------------------

    async def write_text(self, fragment: str) -> None:
        if self._answer_stream is None:
            self._answer_stream = Markdown.get_stream(self.answer)
            self.set_status("")
        self.text += fragment
        await self._answer_stream.write(fragment)

    async def write_reasoning(self, fragment: str) -> None:
        if self._reasoning_stream is None:
            self.reasoning_section.display = True
            self._reasoning_stream = Markdown.get_stream(
                self.query_one(".reasoning-text", Markdown)
            )
        self.reasoning += fragment
        await self._reasoning_stream.write(fragment)

    async def finish(self) -> None:
        """Flush the streams (the last fragments land before this returns)."""
        for stream in (self._reasoning_stream, self._answer_stream):
            if stream is not None:
                await stream.stop()
        self._answer_stream = self._reasoning_stream = None
        self.set_status("")

    # --- routing, outcome, price -------------------------------------------------

    def set_status(self, text: str) -> None:
        status = self._static("status")
        status.update(text)
        status.display = bool(text)

    def set_route(self, decision: Any, request: Any = None) -> None:
        self.decision, self.request = decision, request
        parts = badge_parts(
            target_kind(decision),
            decision.model,
            decision.rule,
            str(decision.privacy),
            str(decision.task),
        )
        self._show_badge(parts.where, parts.text)

    class ExplainRequested(Message):
        """The badge was clicked: explain how this message was routed."""

        def __init__(self, message: AssistantMessage) -> None:
            super().__init__()
            self.message = message

    def on_click(self, event: events.Click) -> None:
        if event.widget is not None and event.widget.has_class("badge"):
            event.stop()
            self.post_message(self.ExplainRequested(self))

    def show_history(self, message: Any) -> None:
        """Badge, outcome and stats of an answer resumed from history (no timings kept)."""
        route = getattr(message, "route", None)
        if route:
            parts = badge_parts(
                route,
                getattr(message, "model", None),
                getattr(message, "rule", None),
                getattr(message, "privacy", None) or "",
                getattr(message, "task", None) or "",
            )
            self._show_badge(parts.where, parts.text)
        status = getattr(message, "status", None)
        if route == "refused":
            self.add_note("Refused: nothing was sent.", "refused")
            return
        if status == "cancelled":
            self.add_note("Cancelled.", "cancelled")
        elif status == "error":
            kind = getattr(message, "error_kind", None) or "error"
            self.add_note(f"Failed ({kind}): {getattr(message, 'error', None) or ''}", "error")
        self.set_stats_from_history(
            route, message.input_tokens, message.output_tokens, message.cost_usd
        )

    def _show_badge(self, where: str, text: str) -> None:
        badge = self._static("badge")
        label = Text()
        label.append(f" {where} ", style="bold reverse")
        rest = text.split(" · ", 1)[1] if " · " in text else ""
        if rest:
            label.append(f" {rest}")
        badge.update(label)
        badge.set_classes(f"badge -{where.lower()}")

    def show_refused(self, decision: Any) -> None:
        self.decision = decision
        lines = Text()
        lines.append("Refused: nothing was sent.\n", style="bold")
        for reason in decision.reasons:
            lines.append(f"• {reason}\n")
        if decision.fix:
            lines.append(f"To allow it: {decision.fix}")
        self.add_note(lines, "refused")
        self._show_badge("REFUSED", f"REFUSED · {decision.privacy} · {decision.task}")
        self.set_status("")

    def add_note(self, note: str | Text, kind: str = "info") -> None:
        self.notes.append(note if isinstance(note, Text) else Text(note))
        notes = self._static("notes")
        notes.update(Text("\n").join(self.notes))
        notes.add_class(f"-{kind}")
        notes.display = True

    def show_fallback(self, from_target: str, to_target: str, reason: str) -> None:
        self.add_note(
            f"{from_target} failed before any token: {reason} → trying {to_target}", "fallback"
        )

    def show_failure(self, failed: Any) -> None:
        self.failure = failed
        if failed.kind == "cancelled":
            self.add_note(
                "Cancelled." + (" (partial answer above)" if self.text else ""), "cancelled"
            )
        else:
            where = " after part of the answer" if failed.after_tokens else ""
            self.add_note(f"Failed{where} ({failed.kind}): {failed.message}", "error")
        self.set_status("")

    def set_priced(self, priced: Any) -> None:
        self.priced = priced
        decision = self.decision
        route = getattr(priced, "route", None)
        if (
            decision is not None
            and route in ("local", "cloud")
            and (route != target_kind(decision) or priced.model != decision.model)
        ):
            # A fallback answered: the badge names who did, and says so.
            parts = badge_parts(
                route, priced.model, priced.rule, str(decision.privacy), str(decision.task)
            )
            self._show_badge(parts.where, parts.text)
        stats = self._static("stats")
        stats.update(stats_line(priced))
        stats.tooltip = getattr(priced, "cost_detail", None) or None
        stats.display = True

    def set_stats_from_history(
        self,
        route: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cost_usd: float | None,
    ) -> None:
        stats = self._static("stats")
        stats.update(history_stats_line(input_tokens, output_tokens, cost_usd, route))
        stats.display = True
