"""The sidebar: the project and its privacy defaults, the month's money, engines, conversations.

Money that includes estimated token counts (requests that reported no usage) carries the
reports' mark (``~``), a line counts those requests, and the money lines' tooltip says
what the mark means, in the text report's words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ListItem, ListView, Static

from ds4router.config.loader import LoadedConfig
from ds4router.tui.engine_loader import EngineStatus
from ds4router.tui.figures import MonthFigures
from ds4router.tui.format import bar, budget_level, money, short_model
from pricing.report_render import ESTIMATE_MARK, marked, share

_UNSET = object()


def _kv_activity() -> Any:
    """This process's KV cache counters, or None before the engine used a cache."""
    from ds4router.backends.engine_port import kv_activity

    return kv_activity()


class BudgetBar(Static):
    """Month-to-date spend against the budget; its class follows the warning thresholds."""

    def show(self, figures: MonthFigures, width: int = 24) -> None:
        level, fraction = budget_level(figures.spent_usd, figures.cap_usd, figures.warn_at)
        self.set_classes(f"-{level}")
        if figures.cap_usd is None:
            self.update(Text("no monthly budget set"))
            return
        text = Text()
        text.append(bar(fraction, width), style="")
        percent = "" if fraction is None else f" {fraction * 100:.0f}%"
        text.append(percent)
        self.update(text)


class ConversationItem(ListItem):
    def __init__(self, conversation_id: str, title: str, current: bool) -> None:
        super().__init__(Label(title or "(untitled)"), classes="-current" if current else "")
        self.conversation_id = conversation_id
        self.title = title


class Sidebar(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="project")
        yield Static("", id="privacy")
        yield Static("", id="month", classes="section")
        yield Static("", id="spend")
        yield BudgetBar("", id="budget-bar")
        yield Static("", id="savings")
        yield Static("Engines", classes="section")
        yield Static("", id="engine")
        yield Static("", id="cloud")
        yield Static("Conversations", classes="section")
        yield ListView(id="conversations")

    def show_config(self, loaded: LoadedConfig) -> None:
        privacy = loaded.config.privacy
        self.query_one("#project", Static).update(Text(loaded.project_name, style="bold"))
        self.query_one("#privacy", Static).update(
            f"privacy {privacy.default}\ncloud only ≤ {privacy.cloud_max_privacy}"
        )

    def show_figures(self, figures: MonthFigures) -> None:
        self.query_one("#month", Static).update(f"Month {figures.month}")
        spend = f"cloud {marked(money(figures.spent_usd), figures.spent_estimated)}"
        if figures.cap_usd is not None:
            spend += f" of {money(figures.cap_usd)}"
        spend_widget = self.query_one("#spend", Static)
        spend_widget.update(spend)
        self.query_one(BudgetBar).show(figures)
        ref = short_model(figures.reference_models[0]) if figures.reference_models else ""
        saved = f"saved {marked(money(figures.savings_usd), figures.savings_estimated)}"
        saved += f" vs {ref}" if ref else ""
        # Only what ran locally: a refused request sent nothing anywhere (counted below).
        lines = [saved, f"local {money(figures.local_usd)} · {figures.local_requests} req"]
        apart = [
            f"{n} {label}"
            for n, label in ((figures.refused, "refused"), (figures.failed, "failed"))
            if n
        ]
        if apart:
            lines.append(" · ".join(apart))
        if figures.unpriced:
            lines.append(f"{figures.unpriced} unpriced")
        if figures.estimated:
            lines.append(f"{figures.estimated} estimated ({ESTIMATE_MARK})")
        savings_widget = self.query_one("#savings", Static)
        savings_widget.update("\n".join(lines))
        tip = estimated_words(figures) or None
        spend_widget.tooltip = tip if figures.spent_estimated else None
        savings_widget.tooltip = tip

    _engine_status: EngineStatus | None = None
    _kv_seen: object = None
    # The counters when this sidebar first looked (None: no cache used yet); the line
    # counts from there, so it is about this app's requests.
    _kv_base: Any = _UNSET

    def on_mount(self) -> None:
        if self._kv_base is _UNSET:
            self._kv_base = _kv_activity()
        # The KV cache's figures change with every local request; a cheap poll keeps the
        # engine line current without the app having to tell the sidebar.
        self.set_interval(2.0, self._refresh_kv, name="kv-cache-poll")

    def _refresh_kv(self) -> None:
        if self._engine_status is not None and _kv_activity() != self._kv_seen:
            self.show_engine(self._engine_status)

    def _kv_line(self, kv: Any) -> str | None:
        """The line 'KV cache n hits · size', once the engine looked up a prompt here."""
        if self._kv_base is _UNSET:
            self._kv_base = kv
        base = self._kv_base
        if kv is None or (base is not None and kv.lookups == base.lookups):
            return None
        hits = kv.hits - (base.hits if base is not None else 0)
        return f"KV cache {hits} hits · {kv.stored_bytes / 1024**2:,.1f} MiB"

    def show_engine(self, status: EngineStatus) -> None:
        dot = {"ready": "green", "loading": "yellow", "failed": "red"}.get(status.state, "grey50")
        text = Text()
        text.append("● ", style=dot)
        text.append(f"local {status.text}")
        if status.state == "loading" and status.step:
            # Its own line: "local loading 42 % (shard 3/46)" is wider than the sidebar.
            text.append(f"\n  {status.step}", style="dim")
        self._engine_status = status
        self._kv_seen = kv = _kv_activity()
        if status.caveat:
            text.append(f"\n  {status.caveat}", style="bold yellow")
        line = self._kv_line(kv) if status.state == "ready" else None
        if line:
            text.append("\n" + line)
        widget = self.query_one("#engine", Static)
        widget.update(text)
        widget.tooltip = status.detail or None

    def show_cloud(self, status: str, detail: str) -> None:
        dot = {"ready": "green", "degraded": "yellow", "offline": "red"}.get(status, "grey50")
        text = Text()
        text.append("● ", style=dot)
        text.append(f"cloud {status.replace('_', ' ')}")
        widget = self.query_one("#cloud", Static)
        widget.update(text)
        widget.tooltip = detail or None

    def show_conversations(self, conversations: Sequence[Any], current: str | None) -> None:
        view = self.query_one("#conversations", ListView)
        view.clear()
        items = [ConversationItem(c.id, c.title, c.id == current) for c in conversations]
        if items:
            view.extend(items)
            for index, item in enumerate(items):
                if item.conversation_id == current:
                    view.index = index


def estimated_words(figures: MonthFigures) -> str:
    """What the mark means, as the text report says it ('' in a month without estimates)."""
    if not figures.estimated:
        return ""
    return (
        f"{figures.estimated:,} of {figures.requests:,} requests "
        f"({share(figures.estimated, figures.requests)}) reported no token usage; "
        f"their counts were estimated, and figures marked {ESTIMATE_MARK} include them"
    )
