"""The app's answers: selecting and copying code blocks, reasoning shown or not, the sidebar."""

from __future__ import annotations

from textual import work
from textual.widgets.markdown import MarkdownFence

from ds4router.tui.app_base import AppBase
from ds4router.tui.threads import ui_call
from ds4router.tui.widgets.messages import AssistantMessage


class AnswersPart(AppBase):
    """The answers part of ``Ds4RouterApp``."""

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
