"""The Traffic screen: agents' requests through the in-process gateway, as they finish.

One row a request: when, the client, where it went (route, model, rule), its privacy,
tokens in and out, cost, and its status; a refused request shows the reason. The rows come
from :attr:`ds4router.gateway.service.Gateway.traffic` (the last 500) and new ones are
added while the screen is open.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

COLUMNS = ("time", "client", "route", "model", "rule", "privacy", "in", "out", "cost", "status")


def row_of(entry: Any) -> tuple[Any, ...]:
    cost = "unpriced" if entry.cost_usd is None else f"${entry.cost_usd:.4f}"
    status = entry.status if entry.reason is None else f"{entry.status}: {entry.reason}"
    style = {"ok": "", "refused": "yellow", "cancelled": "dim"}.get(entry.status, "red")
    return (
        entry.time.strftime("%H:%M:%S"),
        entry.client,
        entry.route,
        entry.model or "—",
        entry.rule or "—",
        entry.privacy or "—",
        f"{entry.input_tokens:,}",
        f"{entry.output_tokens:,}",
        cost,
        Text(status[:120], style=style),
    )


class TrafficScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close", id="traffic.close")]

    def __init__(self, gateway: Any, url: str) -> None:
        super().__init__()
        self.gateway = gateway
        self.url = url

    def compose(self) -> ComposeResult:
        yield Static(
            Text.assemble(
                ("Traffic", "bold"),
                f" · agents through {self.url} (OpenAI base URL {self.url}/v1)   (Esc closes)",
            ),
            classes="screen-title",
        )
        yield DataTable(id="traffic-table", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        for entry in list(self.gateway.traffic):
            table.add_row(*row_of(entry))
        self.gateway.listeners.append(self._arrived)

    def on_unmount(self) -> None:
        if self._arrived in self.gateway.listeners:
            self.gateway.listeners.remove(self._arrived)

    def _arrived(self, entry: Any) -> None:
        """Called on the gateway's thread: hand the row to the app's."""
        self.app.call_from_thread(self.add_entry, entry)

    def add_entry(self, entry: Any) -> None:
        table = self.query_one(DataTable)
        table.add_row(*row_of(entry))
        table.scroll_end(animate=False)
