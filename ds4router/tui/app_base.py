"""What the app's parts know of each other: the state and the methods they share.

``Ds4RouterApp`` (:mod:`ds4router.tui.app`) is assembled from parts, each a module named
for what it does (``app_conversations``, ``app_live``, ``app_screens``, ``app_answers``);
they all derive from ``AppBase``, which declares for the type checker what the app
holds and what each part offers the others. Nothing here runs: the app sets the state
in its ``__init__`` and the parts define the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import App

if TYPE_CHECKING:
    from collections.abc import Mapping

    from textual.containers import VerticalScroll
    from textual.timer import Timer

    from ds4router.config.loader import LoadedConfig
    from ds4router.tui.clock import Clock
    from ds4router.tui.config_watch import ConfigProblem, ConfigWatcher
    from ds4router.tui.engine_loader import EngineStatus
    from ds4router.tui.widgets.composer import Composer
    from ds4router.tui.widgets.messages import AssistantMessage
    from ds4router.tui.widgets.sidebar import Sidebar


class AppBase(App[None]):
    """The app's shared state and cross-part methods, declared (see the module docstring)."""

    if TYPE_CHECKING:
        clock: Clock
        watcher: ConfigWatcher
        db_path: Path
        session_factory: Callable[[LoadedConfig], Any]
        history_factory: Callable[[Path], Any]
        env: Mapping[str, str] | None
        load_local_engine: bool
        check_cloud_health: bool
        cursor_blink: bool
        config_poll_s: float
        session: Any
        history: Any
        conversation_id: str | None
        conversations: list[Any]
        generating: bool
        ready: bool
        engine_status: EngineStatus
        _engine_started: float | None
        _engine_path: str | None
        _preview_timer: Timer | None
        _quit_pressed_at: float | None
        _block_index: int | None
        _current_message: AssistantMessage | None
        _session_stale: bool
        _setup: Any

        @property
        def loaded(self) -> LoadedConfig: ...
        @property
        def chat_log(self) -> VerticalScroll: ...
        @property
        def composer(self) -> Composer: ...
        @property
        def sidebar(self) -> Sidebar: ...
        def _topbar(self, status: str) -> None: ...
        def _show_problem(self, problem: ConfigProblem | None) -> None: ...
        def _apply_keymap(self, loaded: LoadedConfig) -> None: ...
        def _update_welcome(self) -> None: ...
        def key_rows(self) -> list[tuple[str, str, str]]: ...
        def preview(self, *args: Any, **kwargs: Any) -> Any: ...  # a worker
        def refresh_conversations(self, *args: Any, **kwargs: Any) -> Any: ...  # a worker
        def action_new_conversation(self) -> None: ...
        def refresh_figures(self, *args: Any, **kwargs: Any) -> Any: ...  # a worker
        def _maybe_load_engine(self) -> None: ...
        def _cloud_health(self, *args: Any, **kwargs: Any) -> Any: ...  # a worker
        def _poll_config(self) -> None: ...
        def _reload_config(self, *args: Any, **kwargs: Any) -> Any: ...  # a worker
        def _replace_session(self) -> None: ...
