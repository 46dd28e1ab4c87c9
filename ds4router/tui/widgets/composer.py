"""The input: a multi-line editor, ``@path`` completion, and the live route preview.

Typing restarts a short timer; when it fires the app asks the session where
the draft would go (``session.preview``, in a worker) and shows one line above
the editor. Completion of ``@path`` mentions draws on the project's files.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, Static, TextArea

from ds4router.tui.files import ProjectFiles, mention_before_cursor, replace_mention


class PromptArea(TextArea):
    """The editor; hands completion keys to its composer while suggestions show.

    The keys of the ``send`` and ``newline`` bindings (after the keymap) are taken here,
    before TextArea would insert a line break for Enter.
    """

    async def _on_key(self, event: events.Key) -> None:
        composer = self.parent
        if isinstance(composer, Composer) and composer.completion_key(event.key):
            event.prevent_default()
            event.stop()
            return
        if event.key in binding_keys(self.app, "newline"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        if event.key in binding_keys(self.app, "send"):
            event.prevent_default()
            event.stop()
            await self.app.run_action("send")
            return
        await super()._on_key(event)


def binding_keys(app: object, binding_id: str) -> set[str]:
    """The keys bound to ``binding_id`` now: the app's keymap, else the default."""
    from ds4router.tui.actions import ACTIONS

    keymap: dict[str, str] = getattr(app, "_keymap", {}) or {}
    default = next((a.keys for a in ACTIONS if a.id == binding_id), "")
    return {k.strip() for k in keymap.get(binding_id, default).split(",") if k.strip()}


class Composer(Vertical):
    """Preview line, suggestions and the editor."""

    class DraftChanged(Message):
        """The draft changed (the app debounces the route preview)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.files: ProjectFiles | None = None

    def compose(self) -> ComposeResult:
        yield OptionList(id="completions")
        yield Static("", id="preview")
        yield PromptArea(
            id="prompt",
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder="Ask… (#secret, /task NAME, @path)  ·  Enter sends, Shift+Enter new line",
        )

    def on_mount(self) -> None:
        self.completions.display = False

    @property
    def prompt(self) -> PromptArea:
        return self.query_one(PromptArea)

    @property
    def completions(self) -> OptionList:
        return self.query_one("#completions", OptionList)

    @property
    def text(self) -> str:
        return self.prompt.text

    def clear(self) -> None:
        self.prompt.clear()
        self.hide_completions()

    # --- preview -----------------------------------------------------------------

    def show_preview(self, line: Text | str, kind: str) -> None:
        preview = self.query_one("#preview", Static)
        preview.update(line)
        preview.set_classes(f"-{kind}")

    # --- completion ----------------------------------------------------------------

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self.post_message(self.DraftChanged(self.prompt.text))
        self.update_completions()

    def _text_before_cursor(self) -> str:
        row, col = self.prompt.cursor_location
        line = self.prompt.document.get_line(row)
        return line[:col]

    def update_completions(self) -> None:
        partial = mention_before_cursor(self._text_before_cursor())
        if partial is None or self.files is None:
            self.hide_completions()
            return
        found = self.files.complete(partial)
        if not found or found == [partial]:
            self.hide_completions()
            return
        options = self.completions
        options.clear_options()
        options.add_options(found)
        options.highlighted = 0
        options.display = True

    def hide_completions(self) -> None:
        self.completions.display = False

    @property
    def completing(self) -> bool:
        return bool(self.completions.display) and self.completions.option_count > 0

    def completion_key(self, key: str) -> bool:
        """Handle a key while suggestions show; True when it was theirs."""
        if not self.completing:
            return False
        options = self.completions
        if key == "down":
            options.action_cursor_down()
        elif key == "up":
            options.action_cursor_up()
        elif key in ("tab", "enter"):
            self.accept_completion()
        elif key == "escape":
            self.hide_completions()
        else:
            return False
        return True

    def accept_completion(self) -> None:
        options = self.completions
        index = options.highlighted if options.highlighted is not None else 0
        choice = str(options.get_option_at_index(index).prompt)
        before = self._text_before_cursor()
        replaced, _ = replace_mention(before, choice)
        row, col = self.prompt.cursor_location
        self.prompt.replace(replaced, (row, 0), (row, col))
        self.hide_completions()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.completions.highlighted = event.option_index
        self.accept_completion()
        self.prompt.focus()
