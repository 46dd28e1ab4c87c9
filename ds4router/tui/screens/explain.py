"""The Explain screen: every step of a routing decision (``route --explain``), for the
current draft or for a message already sent."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static


class ExplainScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close", id="explain.close")]

    def __init__(self, decision: Any, request: Any, subject: str) -> None:
        super().__init__()
        self.decision = decision
        self.request = request
        self.subject = subject

    def compose(self) -> ComposeResult:
        from ds4router.routing.explain import explain_renderable

        yield Static(
            Text.assemble(("Explain", "bold"), f" · {self.subject}   (Esc closes)"),
            classes="screen-title",
        )
        with VerticalScroll(id="explain-body"):
            yield Static(explain_renderable(self.decision, self.request), id="explain-view")
        yield Footer()
