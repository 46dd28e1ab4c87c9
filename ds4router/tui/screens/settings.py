"""The Settings screen: the merged configuration with each value's source, the key
bindings (ids for ``keymap:``), and a way to open the project file in ``$EDITOR``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static, TabbedContent, TabPane

from ds4router import paths
from ds4router.config.loader import PROJECT_FILE, LoadedConfig, flatten_keys, source_of


def config_rows(loaded: LoadedConfig) -> list[tuple[str, str, str]]:
    """(dotted key, value, where it came from) for every leaf of the merged configuration."""
    data = loaded.config.model_dump(mode="json")
    rows = []
    for key in flatten_keys(data):
        value: Any = data
        for part in key.split("."):
            value = value[part]
        source = source_label(source_of(loaded.sources, key), loaded)
        rows.append((key, json.dumps(value, ensure_ascii=False), source))
    return rows


def source_label(source: str, loaded: LoadedConfig) -> str:
    """``project``, ``user`` or ``built-in``, with the file for the first two."""
    if loaded.project_file is not None and source == str(loaded.project_file):
        return f"project ({PROJECT_FILE})"
    if source == str(paths.user_config_file()):
        return f"user ({_short(source)})"
    if source == "<built-in>":
        return "built-in"
    return _short(source)


def _short(source: str) -> str:
    home = str(Path.home())
    return "~" + source[len(home) :] if source.startswith(home + "/") else source


class SettingsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close", id="settings.close"),
        Binding("ctrl+e", "app.edit_config", "Edit in $EDITOR", id="settings.edit"),
    ]

    def __init__(
        self,
        loaded: LoadedConfig,
        project_file: Path,
        keys: Iterable[tuple[str, str, str]],
        problem: str | None,
    ) -> None:
        super().__init__()
        self.loaded = loaded
        self.project_file = project_file
        self.keys = list(keys)
        self.problem = problem

    def compose(self) -> ComposeResult:
        with Vertical(id="settings-body"):
            yield Static(
                Text.assemble(
                    ("Settings", "bold"),
                    f" · project {self.loaded.project_name} · {_short(str(self.project_file))}"
                    "   (Esc closes)",
                ),
                classes="screen-title",
            )
            if self.problem:
                yield Static(
                    Text(f"Using the last good configuration: {self.problem}", style="bold"),
                    classes="banner",
                )
            with Horizontal(classes="form-row"):
                yield Button("Edit .ds4router.yaml in $EDITOR", id="edit-config", variant="primary")
                yield Static("  Changes apply when you save: no restart needed.", classes="hint")
            with TabbedContent():
                with TabPane("Configuration", id="tab-config"):
                    yield DataTable(id="config-table", cursor_type="row", zebra_stripes=True)
                with TabPane("Keys", id="tab-keys"):
                    yield DataTable(id="keys-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#config-table", DataTable)
        table.add_columns("key", "value", "source")
        for key, value, source in config_rows(self.loaded):
            table.add_row(key, value[:56] + ("…" if len(value) > 56 else ""), source)
        keys = self.query_one("#keys-table", DataTable)
        keys.add_columns("binding id (keymap:)", "keys", "does")
        for row in self.keys:
            keys.add_row(*row)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "edit-config":
            event.stop()
            self.app.call_later(self.app.run_action, "edit_config")
