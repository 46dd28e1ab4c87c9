"""The ds4router app: chat with routing and costs, sidebar, conversations, screens.

Start-up paints first and loads later: the config is read before the first
frame (the sidebar needs the project), everything else — the session (and
with it litellm), history, the month's figures, the project's file list, the
local engine, cloud health — in workers once the first frame is on screen.
Every send, preview, report and export runs in a worker; the UI never waits
on the engine, the network or the disk.

This module holds the layout, start-up, keys, sending and the route preview; the
rest comes from the parts the app is assembled from (:mod:`ds4router.tui.app_base`):
conversations, live state (figures, engine, cloud, configuration), screens, answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, assert_never

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static, TextArea

from ds4router import paths
from ds4router.config.loader import LoadedConfig
from ds4router.errors import Ds4RouterError
from ds4router.events import (
    Done,
    Failed,
    FallbackTaken,
    Notice,
    Priced,
    ReasoningDelta,
    Refused,
    Routed,
    SessionEvent,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    ToolCallDone,
    ToolCallInvalid,
    ToolCallStart,
)
from ds4router.targets import LocalEngine, Refuse
from ds4router.tui.actions import ACTIONS, app_bindings, key_label
from ds4router.tui.app_answers import AnswersPart
from ds4router.tui.app_conversations import ConversationsPart
from ds4router.tui.app_live import LivePart
from ds4router.tui.app_screens import ScreensPart
from ds4router.tui.clock import Clock, system_clock
from ds4router.tui.config_watch import ConfigProblem, ConfigWatcher
from ds4router.tui.engine_loader import EngineStatus, initial_status
from ds4router.tui.threads import ui_call
from ds4router.tui.widgets.composer import Composer
from ds4router.tui.widgets.messages import AssistantMessage, UserMessage
from ds4router.tui.widgets.sidebar import Sidebar

log = logging.getLogger(__name__)

SessionFactory = Callable[[LoadedConfig], Any]
HistoryFactory = Callable[[Path], Any]

PREVIEW_DELAY_S = 0.25
QUIT_WINDOW_S = 2.0
CLOUD_HEALTH_EVERY_S = 30.0


def default_session_factory(loaded: LoadedConfig) -> Any:
    from ds4router.sessions.session import Session

    return Session(loaded)


def default_history_factory(db_path: Path) -> Any:
    from ds4router.sessions.history import History

    return History(db_path)


class Ds4RouterApp(ConversationsPart, LivePart, ScreensPart, AnswersPart):
    """``ds4router`` with no sub-command."""

    # Absolute, so subclasses defined elsewhere (tests, embedders) find it too.
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "ds4router"
    BINDINGS: ClassVar[list[BindingType]] = list(app_bindings())

    def __init__(
        self,
        project: str | Path | None = None,
        *,
        cwd: Path | None = None,
        clock: Clock = system_clock,
        db_path: Path | None = None,
        session_factory: SessionFactory = default_session_factory,
        history_factory: HistoryFactory = default_history_factory,
        env: Mapping[str, str] | None = None,
        load_local_engine: bool = True,
        check_cloud_health: bool = True,
        cursor_blink: bool = True,
        config_poll_s: float = 1.0,
        serve: bool = False,
    ) -> None:
        super().__init__()
        self.serve = serve
        self.gateway: Any = None  # ds4router.gateway.thread.GatewayThread once serving
        self.clock = clock
        self.watcher = ConfigWatcher(project, cwd=cwd)
        self.db_path = db_path or paths.database_path()
        self.session_factory = session_factory
        self.history_factory = history_factory
        self.env = env
        self.load_local_engine = load_local_engine
        self.check_cloud_health = check_cloud_health
        self.cursor_blink = cursor_blink
        self.config_poll_s = config_poll_s
        self.session: Any = None
        self.history: Any = None
        self.conversation_id: str | None = None
        self.conversations: list[Any] = []
        self.generating = False
        self.ready = False
        self.engine_status: EngineStatus = initial_status(self.watcher.current)
        self._engine_started: float | None = None
        self._engine_path: str | None = None
        self._preview_timer: Timer | None = None
        self._quit_pressed_at: float | None = None
        self._block_index: int | None = None
        self._current_message: AssistantMessage | None = None
        self._session_stale = False
        self._setup: Any = None

    # --- layout -------------------------------------------------------------------

    @property
    def loaded(self) -> LoadedConfig:
        return self.watcher.current

    def compose(self) -> ComposeResult:
        yield Static("", id="topbar")
        yield Static("", id="banner")
        with Horizontal(id="main"):
            with Vertical(id="chat-column"):
                yield VerticalScroll(id="chat-log")
                yield Composer(id="composer")
            yield Sidebar(id="sidebar")
        yield Footer()

    @property
    def chat_log(self) -> VerticalScroll:
        return self.query_one("#chat-log", VerticalScroll)

    @property
    def composer(self) -> Composer:
        return self.query_one(Composer)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one(Sidebar)

    def on_mount(self) -> None:
        self.composer.prompt.cursor_blink = self.cursor_blink
        self._apply_keymap(self.loaded)
        self.sidebar.show_config(self.loaded)
        self.sidebar.show_engine(self.engine_status)
        self.sidebar.show_cloud("checking", "")
        self._show_problem(self.watcher.problem)
        self._topbar("starting…")
        self.composer.prompt.focus()
        self.set_interval(self.config_poll_s, self._poll_config, name="config-poll")
        self.set_interval(1.0, self._tick_engine, name="engine-tick")
        # Everything slow starts once the first frame is out.
        self.call_after_refresh(self._boot)
        if self.serve:
            self.run_worker(self._start_gateway, thread=True, name="gateway")

    def _start_gateway(self) -> None:
        """On a worker thread: start ``ds4router --serve``'s gateway, say where it listens."""
        from ds4router.tui.serving import start_gateway

        try:
            self.gateway = start_gateway(self.loaded, self.watcher.project_dir, self.db_path)
        except Ds4RouterError as exc:
            self.call_from_thread(self.notify, f"gateway: {exc}", severity="error")
            return
        url = self.gateway.url
        self.call_from_thread(
            self.notify, f"agents: OpenAI base URL {url}/v1, Anthropic {url} (F12: traffic)"
        )

    def action_traffic(self) -> None:
        from ds4router.tui.screens.traffic import TrafficScreen

        if self.gateway is None:
            self.notify("the gateway is not running: start the app with ds4router --serve")
            return
        self.push_screen(TrafficScreen(self.gateway.gateway, self.gateway.url))

    def on_unmount(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for resource in (self.session, self.history):
            close = getattr(resource, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing on the way out: nothing left to tell
                    log.exception("close failed")

    def _topbar(self, status: str) -> None:
        text = Text()
        text.append(" ds4router ", style="bold reverse")
        text.append(f"  {self.loaded.project_name}")
        if status:
            text.append(f"   {status}", style="italic")
        self.query_one("#topbar", Static).update(text)

    def _show_problem(self, problem: ConfigProblem | None) -> None:
        banner = self.query_one("#banner", Static)
        if problem is None:
            banner.display = False
            return
        banner.update(
            Text(f"⚠ {problem.first_line}  (using the last good configuration)", style="bold")
        )
        banner.display = True

    # --- start-up -------------------------------------------------------------------

    def _boot(self) -> None:
        self._boot_worker()
        if self.check_cloud_health:
            self._cloud_health()
            self.set_interval(CLOUD_HEALTH_EVERY_S, self._cloud_health, name="cloud-health")
        self._maybe_load_engine()

    @work(thread=True, exclusive=True, group="boot")
    def _boot_worker(self) -> None:
        from ds4router.tui.files import ProjectFiles
        from ds4router.tui.setup import setup_status

        loaded = self.loaded
        setup = setup_status(loaded, self.env)
        problems: list[str] = []
        session = history = None
        try:
            session = self.session_factory(loaded)
        except Exception as exc:  # shown, never raised: reports still work without a session
            problems.append(f"cannot start a session: {exc}")
            log.exception("session start failed")
        try:
            history = self.history_factory(self.db_path)
        except Exception as exc:
            problems.append(f"history unavailable: {exc}")
            log.exception("history failed")
        files = ProjectFiles.scan(self.watcher.project_dir)
        ui_call(self, self._booted, setup, session, history, files, problems)

    def _booted(
        self, setup: Any, session: Any, history: Any, files: Any, problems: list[str]
    ) -> None:
        self._setup = setup
        self.session = session
        self.history = history
        self.composer.files = files
        for problem in problems:
            self.notify(problem, severity="error", timeout=10)
        self._update_welcome()
        self.refresh_conversations()
        self.refresh_figures()
        self.ready = True
        self._topbar("ready")

    def _update_welcome(self) -> None:
        from ds4router.tui.widgets.welcome import WelcomeView

        existing = self.query("#welcome")
        show = self._setup is not None and self._setup.nothing_configured
        if show and not existing and not self.query(AssistantMessage):
            # Read from the top: the log stays anchored to the bottom only for chat.
            self.chat_log.anchor(False)
            self.chat_log.mount(WelcomeView(self._setup, self.key_labels()))
        elif not show and existing:
            existing.remove()

    # --- keys ----------------------------------------------------------------------

    def _apply_keymap(self, loaded: LoadedConfig) -> None:
        keymap = dict(loaded.config.keymap)
        unknown = sorted(set(keymap) - set(known_binding_ids()))
        if unknown:
            self.notify(
                f"keymap: unknown binding id {unknown[0]!r}; see Settings › Keys for the ids",
                severity="warning",
                timeout=8,
            )
        self.set_keymap({k: v for k, v in keymap.items() if k not in unknown})

    def key_labels(self) -> dict[str, str]:
        """Binding id -> the key as shown, after the keymap."""
        labels = {a.id: key_label(self._keymap.get(a.id, a.keys)) for a in ACTIONS}
        labels["command_palette"] = key_label(self.COMMAND_PALETTE_BINDING)
        return labels

    def key_rows(self) -> list[tuple[str, str, str]]:
        rows = [(a.id, key_label(self._keymap.get(a.id, a.keys)), a.title) for a in ACTIONS]
        for screen_id, bindings in screen_bindings().items():
            for b in bindings:
                if b.id:
                    keys = self._keymap.get(b.id, b.key)
                    rows.append((b.id, key_label(keys), f"{screen_id}: {b.description}"))
        return rows

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Chat actions belong to the chat: hidden and off while another screen is up."""
        if action in _CHAT_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    # --- command palette ---------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        builtin = list(super().get_system_commands(screen))
        yield from builtin
        # Textual's own entries (Quit, Keys, ...) already cover some actions: listed once.
        taken = {command.title.casefold() for command in builtin}
        for spec in ACTIONS:
            if spec.title.casefold() in taken:
                continue
            yield SystemCommand(spec.title, spec.help, partial(self.run_action, spec.action))
        for conversation in self.conversations:
            yield SystemCommand(
                f"Open conversation: {conversation.title or '(untitled)'}",
                f"Resume from history ({conversation.messages} messages)",
                partial(self.resume, conversation.id),
            )
        from ds4router.tui.screens.report import ReportScreen

        if isinstance(screen, ReportScreen):
            for fmt in ("csv", "json", "md", "html"):
                yield SystemCommand(
                    f"Export report as {fmt}",
                    "Write this month's report next to the project",
                    partial(screen.export_as, fmt),
                )

    # --- sending -------------------------------------------------------------------------

    def action_send(self) -> None:
        text = self.composer.text.strip()
        if not text:
            return
        if self.session is None:
            self.notify("still starting: the session is not ready yet", severity="warning")
            return
        if self.generating:
            self.notify("an answer is still streaming; Esc cancels it", severity="warning")
            return
        self.composer.clear()
        self.composer.show_preview("", "empty")
        self.generating = True
        self._topbar("generating…  Esc cancels")
        self.send(text)

    def action_newline(self) -> None:
        self.composer.prompt.insert("\n")

    @work(exclusive=True, group="send")
    async def send(self, text: str) -> None:
        stamp = self.clock().astimezone().strftime("%H:%M")
        welcome = self.query("#welcome")
        if welcome:
            await welcome.remove()
        self.chat_log.anchor()
        user = UserMessage(text, stamp)
        message = AssistantMessage(stamp, prompt=text)
        self._current_message = message
        await self.chat_log.mount_all([user, message])
        message.set_status("routing…")
        try:
            # None starts a new conversation: the session names it (a title without
            # secrets) and, with ``history: off``, keeps it in memory only.
            stream = self.session.send(text, conversation_id=self.conversation_id)
            async for event in stream:
                await self._apply(message, event)
        except Ds4RouterError as exc:
            message.add_note(str(exc), "error")
        except Exception as exc:  # never a traceback in the UI: say what failed
            log.exception("send failed")
            message.add_note(f"Failed: {type(exc).__name__}: {exc}", "error")
        finally:
            await message.finish()
            self.generating = False
            self._current_message = None
            session_conversation = getattr(self.session, "conversation_id", None)
            if session_conversation:
                self.conversation_id = str(session_conversation)
            self._topbar("ready")
            if self._session_stale:
                self._replace_session()
            self.refresh_figures()
            self.refresh_conversations()

    async def _apply(self, message: AssistantMessage, event: SessionEvent) -> None:
        """One session event onto the message."""
        match event:
            case Routed(decision=decision, request=request):
                message.set_route(decision, request)
                where = (
                    "local engine" if isinstance(decision.target, LocalEngine) else decision.model
                )
                message.set_status(f"waiting for the first token from {where}…")
            case Refused(decision=decision):
                message.show_refused(decision)
            case FallbackTaken():
                message.show_fallback(str(event.from_target), str(event.to_target), event.reason)
            case Notice():  # e.g. earlier turns left out to fit the context window
                message.add_note(Text(event.message, style="dim"), "info")
            case TextDelta(text=text):
                await message.write_text(text)
            case ReasoningDelta(text=text):
                await message.write_reasoning(text)
            case Failed():
                message.show_failure(event)
            case Priced():
                message.set_priced(event)
            case Done(finish_reason=reason):
                if reason == "length":
                    message.add_note("Stopped at the length limit.", "info")
            case ToolCallStart(name=name):
                message.add_note(f"The model called the tool {name!r}.", "info")
            case ToolCallDelta() | ToolCallDone():
                pass  # the arguments: an agent's business (``ds4router serve``), not the chat's
            case ToolCallInvalid(message=problem):
                message.add_note(
                    f"The model wrote a tool call that cannot be read: {problem}", "info"
                )
            case TokenUsage():
                pass  # priced and shown with ``Priced``
            case _:
                assert_never(event)

    def action_cancel(self) -> None:
        if self.generating and self.session is not None:
            self.session.cancel()
            if self._current_message is not None:
                self._current_message.set_status("cancelling…")
            return
        if self.composer.completing:
            self.composer.hide_completions()
            return
        self.composer.prompt.focus()

    def action_quit_twice(self) -> None:
        focused = self.focused
        if isinstance(focused, TextArea) and focused.selected_text:
            self.copy_to_clipboard(focused.selected_text)
            return
        now = time.monotonic()
        if self._quit_pressed_at is not None and now - self._quit_pressed_at <= QUIT_WINDOW_S:
            if self.generating and self.session is not None:
                self.session.cancel()
            self.exit()
            return
        self._quit_pressed_at = now
        self.notify("Press Ctrl+C again to quit", timeout=QUIT_WINDOW_S)

    # --- route preview ---------------------------------------------------------------------

    @on(Composer.DraftChanged)
    def _draft_changed(self, event: Composer.DraftChanged) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(PREVIEW_DELAY_S, self._preview_now)

    def _preview_now(self) -> None:
        self.preview(self.composer.text)

    @work(thread=True, exclusive=True, group="preview")
    def preview(self, text: str) -> None:
        session = self.session
        if not text.strip() or session is None:
            ui_call(self, self.composer.show_preview, "", "empty")
            return
        try:
            _, decision = session.preview(text)
        except Ds4RouterError as exc:
            ui_call(self, self.composer.show_preview, Text(f"⚠ {exc}"), "refuse")
            return
        except Exception as exc:
            log.exception("preview failed")
            ui_call(self, self.composer.show_preview, Text(f"⚠ preview failed: {exc}"), "refuse")
            return
        ui_call(self, self.composer.show_preview, *preview_line(decision))


# Settings has an "edit" button and Ctrl+E: editing the config is not chat-only.
_CHAT_ACTIONS = frozenset(
    a.action.split("(")[0] for a in ACTIONS if a.id not in ("quit", "edit_config")
)


def preview_line(decision: Any) -> tuple[Text, str]:
    """The one-line route preview above the editor, and its colour class."""
    from ds4router.routing.explain import badge, target_kind

    text = Text()
    if isinstance(decision.target, Refuse):
        text.append(" REFUSED ", style="bold reverse")
        reason = decision.reasons[-1] if decision.reasons else ""
        text.append(f" {reason} — nothing will be sent")
        if decision.fix:
            text.append(f"; to allow it: {decision.fix}")
        return text, "refuse"
    kind = target_kind(decision)
    text.append(f" {kind.upper()} ", style="bold reverse")
    text.append(" " + badge(decision).split(" ", 1)[1])
    if decision.reasons:
        text.append(f"  ← {decision.reasons[-1]}", style="dim")
    return text, kind


def screen_bindings() -> dict[str, list[Binding]]:
    from ds4router.tui.screens.dialogs import Confirm
    from ds4router.tui.screens.estimator import EstimatorScreen
    from ds4router.tui.screens.explain import ExplainScreen
    from ds4router.tui.screens.report import ReportScreen
    from ds4router.tui.screens.settings import SettingsScreen

    out: dict[str, list[Binding]] = {}
    for name, cls in (
        ("report", ReportScreen),
        ("estimator", EstimatorScreen),
        ("explain", ExplainScreen),
        ("settings", SettingsScreen),
        ("dialog", Confirm),
    ):
        out[name] = [b for b in _bindings(cls.BINDINGS)]
    return out


def _bindings(items: Iterable[BindingType]) -> Iterator[Binding]:
    for item in items:
        if isinstance(item, Binding):
            yield item


def known_binding_ids() -> list[str]:
    ids = [a.id for a in ACTIONS]
    for bindings in screen_bindings().values():
        ids += [b.id for b in bindings if b.id]
    return ids
