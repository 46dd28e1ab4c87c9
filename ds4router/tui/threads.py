"""Handing results from worker threads back to the UI, safely while the app closes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.css.query import NoMatches


def ui_call(app: App[Any], callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``callback`` on the UI thread; dropped when the app is no longer running.

    A worker may finish after the user quit: its result has nowhere to go, and
    that must not turn into an error on the way out.
    """
    if not app.is_running:
        return

    def guarded() -> None:
        try:
            callback(*args, **kwargs)
        except NoMatches:
            if app.is_running and not app._exit:
                raise  # a real bug, not a widget gone with the closing app

    try:
        app.call_from_thread(guarded)
    except RuntimeError:  # the loop stopped between the check and the call
        pass
