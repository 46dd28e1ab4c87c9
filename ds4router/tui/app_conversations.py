"""The app's conversations: the sidebar list, resuming one from history, new, rename, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual import on, work
from textual.widgets import ListView

from ds4router.tui.app_base import AppBase
from ds4router.tui.threads import ui_call
from ds4router.tui.widgets.messages import AssistantMessage, UserMessage
from ds4router.tui.widgets.sidebar import ConversationItem


class ConversationsPart(AppBase):
    """The conversations part of ``Ds4RouterApp``."""

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
