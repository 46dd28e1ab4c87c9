"""The ds4router app: chat with routing and costs, sidebar, conversations, screens.

Start-up paints first and loads later: the config is read before the first
frame (the sidebar needs the project), everything else — the session (and
with it litellm), history, the month's figures, the project's file list, the
local engine, cloud health — in workers once the first frame is on screen.
Every send, preview, report and export runs in a worker; the UI never waits
on the engine, the network or the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, assert_never

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, ListView, Static, TextArea
from textual.widgets.markdown import MarkdownFence

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
from ds4router.tui.clock import Clock, system_clock
from ds4router.tui.config_watch import ConfigProblem, ConfigWatcher
from ds4router.tui.engine_loader import EngineStatus, initial_status, load_engine
from ds4router.tui.threads import ui_call
from ds4router.tui.widgets.composer import Composer
from ds4router.tui.widgets.messages import AssistantMessage, UserMessage
from ds4router.tui.widgets.sidebar import ConversationItem, Sidebar

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


class Ds4RouterApp(App[None]):
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

    # --- conversations ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="conversations")
    def refresh_conversations(self) -> None:
        history = self.history
        if history is None:
            return
        try:
            conversations = list(history.list_conversations(self.loaded.project_name))
        except Exception as exc:
            ui_call(self, self.notify, f"history: {exc}", severity="error")
            return
        ui_call(self, self._show_conversations, conversations)

    def _show_conversations(self, conversations: list[Any]) -> None:
        self.conversations = conversations
        self.sidebar.show_conversations(conversations, self.conversation_id)

    @on(ListView.Selected, "#conversations")
    def _conversation_chosen(self, event: ListView.Selected) -> None:
        item = event.item
        if isinstance(item, ConversationItem) and item.conversation_id != self.conversation_id:
            self.resume(item.conversation_id)

    def resume(self, conversation_id: str) -> None:
        if self.generating:
            self.notify("an answer is still streaming; Esc cancels it", severity="warning")
            return
        self._resume(conversation_id)

    @work(exclusive=True, group="history")
    async def _resume(self, conversation_id: str) -> None:
        if self.history is None:
            return
        messages = await asyncio.to_thread(self.history.messages, conversation_id)
        await self.chat_log.remove_children()
        self._block_index = None
        widgets: list[Any] = []
        prompt = ""
        for m in messages:
            stamp = _stamp(getattr(m, "created_at", None))
            if m.role == "user":
                prompt = m.text
                widgets.append(UserMessage(m.text, stamp))
            else:
                widgets.append(
                    AssistantMessage(
                        stamp, prompt=prompt, text=m.text or "", reasoning=m.reasoning or ""
                    )
                )
        await self.chat_log.mount_all(widgets)
        by_widget = [w for w in widgets if isinstance(w, AssistantMessage)]
        answers = [m for m in messages if m.role != "user"]
        for widget, m in zip(by_widget, answers, strict=False):
            widget.show_history(m)
        self.conversation_id = conversation_id
        self.sidebar.show_conversations(self.conversations, conversation_id)
        self.chat_log.anchor()
        self.composer.prompt.focus()

    def action_new_conversation(self) -> None:
        if self.generating:
            self.notify("an answer is still streaming; Esc cancels it", severity="warning")
            return
        self.conversation_id = None
        self._block_index = None
        self.chat_log.remove_children()
        self.sidebar.show_conversations(self.conversations, None)
        self.composer.prompt.focus()
        self.call_after_refresh(self._update_welcome)

    def action_focus_conversations(self) -> None:
        self.query_one("#conversations", ListView).focus()

    def _current_title(self) -> str:
        for c in self.conversations:
            if c.id == self.conversation_id:
                return str(c.title or "")
        return ""

    def action_rename_conversation(self) -> None:
        from ds4router.tui.screens.dialogs import TextPrompt

        conversation_id = self.conversation_id
        if conversation_id is None or self.history is None:
            self.notify("no conversation to rename yet: send a message first")
            return

        def done(title: str | None) -> None:
            if title:
                self._history_call(self.history.rename, conversation_id, title)

        self.push_screen(TextPrompt("Rename the conversation", self._current_title()), done)

    def action_delete_conversation(self) -> None:
        from ds4router.tui.screens.dialogs import Confirm

        conversation_id = self.conversation_id
        if conversation_id is None or self.history is None:
            self.notify("no conversation to delete")
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._history_call(self.history.delete, conversation_id)
                if self.conversation_id == conversation_id:
                    self.action_new_conversation()

        title = self._current_title() or "this conversation"
        self.push_screen(Confirm(f"Delete “{title}” and its messages?", yes="Delete"), done)

    @work(thread=True, group="history-write")
    def _history_call(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:
            ui_call(self, self.notify, f"history: {exc}", severity="error")
        ui_call(self, self.refresh_conversations)

    # --- sidebar figures, engine, cloud ------------------------------------------------------

    @work(thread=True, exclusive=True, group="figures")
    def refresh_figures(self) -> None:
        from ds4router.tui.figures import month_figures

        try:
            figures = month_figures(self.loaded, self.clock(), self.db_path)
        except Exception as exc:
            ui_call(self, self.notify, f"ledger: {exc}", severity="error")
            return
        ui_call(self, self.sidebar.show_figures, figures)

    def _maybe_load_engine(self) -> None:
        status = initial_status(self.loaded)
        self._set_engine(status)
        path = self.loaded.config.local.engine.model_path
        if status.state == "loading" and self.load_local_engine and path != self._engine_path:
            self._engine_path = path
            self._engine_started = time.monotonic()
            self._load_engine()

    @work(thread=True, exclusive=True, group="engine")
    def _load_engine(self) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()

        def report(status: EngineStatus) -> None:
            ui_call(self, self._set_engine, status)

        def stop() -> bool:  # quitting, or a newer load (another model_path) took over
            return worker.is_cancelled or not self.is_running

        final = load_engine(self.loaded, report, stop)
        if not stop():
            ui_call(self, self._set_engine, final)

    def _set_engine(self, status: EngineStatus) -> None:
        self.engine_status = status
        if status.state != "loading":
            self._engine_started = None
        self.sidebar.show_engine(status)

    def _tick_engine(self) -> None:
        status = self.engine_status
        if status.state == "loading" and status.fraction is None and self._engine_started:
            elapsed = time.monotonic() - self._engine_started
            self._set_engine(EngineStatus("loading", status.detail, elapsed_s=elapsed))

    @work(thread=True, exclusive=True, group="cloud-health")
    def _cloud_health(self) -> None:
        from ds4router.backends.cloud import CloudBackend

        try:
            health = CloudBackend(self.loaded.config.cloud, env=self.env).health()
            status: str = health.status
            detail = health.detail
        except Exception as exc:
            status, detail = "unknown", str(exc)
        if status == "not_configured" and self._setup is not None and self._setup.cloud_ok:
            # Keys in the environment, no cloud.models: the provider defaults apply.
            status, detail = "ready", self._setup.cloud_detail
        ui_call(self, self.sidebar.show_cloud, status, detail)

    # --- live configuration ----------------------------------------------------------------------

    def _poll_config(self) -> None:
        if self.watcher.changed():
            self._reload_config()

    def action_reload_config(self) -> None:
        self._reload_config()

    def action_pull_demo(self) -> None:
        self.notify("fetching the demo-size model (about 93 MB)…", timeout=5)
        self._pull_demo()

    @work(thread=True, exclusive=True, group="pull-demo")
    def _pull_demo(self) -> None:
        from ds4router.demo_model import LABEL, pull_demo
        from ds4router.errors import Ds4RouterError

        try:
            pull_demo()
        except Ds4RouterError as exc:
            ui_call(self, self.notify, str(exc), severity="error", timeout=15)
            return
        ui_call(self, self.notify, f"the {LABEL} is ready: ask away", timeout=5)
        ui_call(self, self._reload_config)  # the loader now finds it: a new session answers

    @work(thread=True, exclusive=True, group="config")
    def _reload_config(self) -> None:
        from ds4router.tui.setup import setup_status

        result = self.watcher.reload()
        if isinstance(result, ConfigProblem):
            ui_call(self, self._show_problem, result)
            return
        setup = setup_status(result, self.env)
        ui_call(self, self._config_reloaded, result, setup)

    def _config_reloaded(self, loaded: LoadedConfig, setup: Any) -> None:
        self._show_problem(None)
        self._setup = setup
        self._apply_keymap(loaded)
        self.sidebar.show_config(loaded)
        self._topbar("generating…  Esc cancels" if self.generating else "ready")
        if self.generating:
            self._session_stale = True  # swap once the answer in flight is done
        else:
            self._replace_session()
        self._update_welcome()
        self.refresh_figures()
        self._maybe_load_engine()
        if self.check_cloud_health:
            self._cloud_health()
        self.notify("configuration reloaded", timeout=3)

    def _replace_session(self) -> None:
        self._session_stale = False
        old = self.session
        if old is not None and hasattr(old, "close"):
            old.close()
        try:
            self.session = self.session_factory(self.loaded)
        except Exception as exc:
            self.notify(f"cannot start a session: {exc}", severity="error")
            return
        if self.composer.text.strip():
            self.preview(self.composer.text)

    # --- screens --------------------------------------------------------------------------------

    def action_report(self) -> None:
        from ds4router.tui.screens.report import ReportScreen

        loaded = self.loaded
        self.push_screen(
            ReportScreen(
                db_path=self.db_path,
                project=loaded.project_name,
                project_dir=self.watcher.project_dir,
                cap=loaded.config.budget.monthly_usd,
                warn_at=loaded.config.budget.warn_at,
                now=self.clock(),
            )
        )

    def action_estimator(self) -> None:
        from ds4router.tui.screens.estimator import EstimatorScreen

        overrides = {
            name: rates.model_dump(exclude_none=True)
            for name, rates in self.loaded.config.pricing.overrides.items()
        }
        self.push_screen(EstimatorScreen(configs=paths.configs_dir(), overrides=overrides))

    def action_settings(self) -> None:
        from ds4router.tui.screens.settings import SettingsScreen

        problem = self.watcher.problem.first_line if self.watcher.problem else None
        self.push_screen(
            SettingsScreen(self.loaded, self.watcher.project_file, self.key_rows(), problem)
        )

    def action_explain(self) -> None:
        draft = self.composer.text.strip()
        if draft:
            self._explain(draft, None, "the draft")
            return
        answers = list(self.query(AssistantMessage))
        if not answers:
            self.notify("nothing to explain: type a message first")
            return
        self.explain_message(answers[-1])

    @on(AssistantMessage.ExplainRequested)
    def _badge_clicked(self, event: AssistantMessage.ExplainRequested) -> None:
        self.explain_message(event.message)

    def explain_message(self, last: AssistantMessage) -> None:
        """The Explain screen for a sent message: as routed, or re-evaluated if not known."""
        if last.decision is not None and last.request is not None:
            from ds4router.tui.screens.explain import ExplainScreen

            self.push_screen(
                ExplainScreen(last.decision, last.request, f"message of {last.stamp}, as routed")
            )
        elif last.prompt:
            self._explain(last.prompt, None, f"message of {last.stamp}, re-evaluated now")
        else:
            self.notify("no routing record for that message")

    @work(thread=True, exclusive=True, group="explain")
    def _explain(self, text: str, _unused: Any, subject: str) -> None:
        from ds4router.tui.screens.explain import ExplainScreen

        session = self.session
        if session is None:
            ui_call(self, self.notify, "still starting", severity="warning")
            return
        try:
            request, decision = session.preview(text)
        except Exception as exc:
            ui_call(self, self.notify, f"cannot explain: {exc}", severity="error")
            return
        ui_call(self, self.push_screen, ExplainScreen(decision, request, subject))

    def action_edit_config(self) -> None:
        path = self.watcher.project_file
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        command = shlex.split(editor)
        if not command or shutil.which(command[0]) is None:
            self.notify(
                f"editor {editor!r} not found; set $EDITOR (e.g. export EDITOR=nano)",
                severity="error",
            )
            return
        if not path.exists():
            path.write_text(
                PROJECT_TEMPLATE.format(name=self.loaded.project_name), encoding="utf-8"
            )
        from textual.app import SuspendNotSupported

        try:
            with self.suspend():
                subprocess.call([*command, str(path)])
        except SuspendNotSupported:
            self.notify(f"this terminal cannot hand over to an editor; edit {path}")
            return
        self._poll_config()

    # --- answers: code blocks and reasoning ---

    def _fences(self) -> list[MarkdownFence]:
        return list(self.chat_log.query(".answer MarkdownFence").results(MarkdownFence))

    def action_select_block(self, delta: int) -> None:
        fences = self._fences()
        if not fences:
            self.notify("no code block to select")
            return
        current = self._block_index if self._block_index is not None else len(fences)
        index = min(max(current + delta, 0), len(fences) - 1)
        self._select_block(fences, index)

    def _select_block(self, fences: list[MarkdownFence], index: int) -> None:
        for fence in fences:
            fence.remove_class("-selected")
        fences[index].add_class("-selected")
        fences[index].scroll_visible()
        self._block_index = index

    def action_copy_block(self) -> None:
        fences = self._fences()
        if not fences:
            self.notify("no code block to copy")
            return
        index = self._block_index if self._block_index is not None else len(fences) - 1
        index = min(index, len(fences) - 1)
        self._select_block(fences, index)
        code = fences[index].code
        self.copy_to_clipboard(code)  # OSC 52
        self._copy_fallback(code)

    @work(thread=True, group="clipboard")
    def _copy_fallback(self, code: str) -> None:
        from ds4router.tui.clipboard import copy_with_tool

        tool = copy_with_tool(code)
        lines = code.count("\n") + (0 if code.endswith("\n") else 1)
        via = f"OSC 52 + {tool}" if tool else "OSC 52"
        ui_call(self, self.notify, f"copied {lines} line(s) ({via})", timeout=3)

    def action_toggle_reasoning(self) -> None:
        with_reasoning = [m for m in self.query(AssistantMessage) if m.reasoning]
        if not with_reasoning:
            self.notify("no reasoning to show")
            return
        section = with_reasoning[-1].reasoning_section
        section.collapsed = not section.collapsed

    def action_toggle_sidebar(self) -> None:
        self.sidebar.display = not self.sidebar.display


# Settings has an "edit" button and Ctrl+E: editing the config is not chat-only.
_CHAT_ACTIONS = frozenset(
    a.action.split("(")[0] for a in ACTIONS if a.id not in ("quit", "edit_config")
)

PROJECT_TEMPLATE = """\
# ds4router project settings (see the README). Saved changes apply at once.
project: {name}
privacy:
  default: internal
  cloud_max_privacy: internal
routes: []
default: local
"""


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


def _stamp(value: Any) -> str:
    import datetime as dt

    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%H:%M")
    if isinstance(value, str) and len(value) >= 16:
        try:
            return (
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                .astimezone()
                .strftime("%H:%M")
            )
        except ValueError:
            return value[11:16]
    return ""


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
