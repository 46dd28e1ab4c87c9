"""The app's notion of "now", injectable so snapshots and tests see a fixed time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    """Now, in UTC (the ledger's months are UTC months)."""
    return dt.datetime.now(dt.UTC)


def fixed_clock(at: dt.datetime) -> Clock:
    """A clock stopped at ``at`` (naive times are taken as UTC)."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)

    def clock() -> dt.datetime:
        return moment

    return clock


def steady_cursors(screen: Any) -> None:
    """The screen's inputs blink only when the app's cursor does: a blink is a wall-clock
    race in a snapshot (which phase it catches depends on how loaded the CPU is)."""
    from textual.widgets import Input

    blink = bool(getattr(screen.app, "cursor_blink", True))
    for field in screen.query(Input):
        field.cursor_blink = blink
