"""Every user action of the app: its binding id, default keys, and palette title.

One table feeds the key bindings (each with an ``id``, so ``keymap:`` in the
config can remap it) and the command palette (so every action is there too).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class ActionSpec:
    id: str  # the binding id users remap under ``keymap:``
    keys: str
    action: str
    title: str
    help: str
    show: bool = True
    priority: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    # Enter sends (as in every chat TUI); Ctrl+S still does. A paste never sends: it arrives
    # as one Paste event, not as keys.
    ActionSpec("send", "enter,ctrl+s", "send", "Send",
               "Send the draft to where the router decides"),
    ActionSpec("newline", "shift+enter,ctrl+j", "newline", "New line",
               "Insert a line break in the draft", show=False),
    ActionSpec("cancel", "escape", "cancel", "Cancel generation",
               "Stop the answer being generated (recorded as cancelled); else back to the input",
               show=False),
    ActionSpec("quit", "ctrl+c", "quit_twice", "Quit", "Press twice to quit",
               show=False, priority=True),
    ActionSpec("new_conversation", "ctrl+n", "new_conversation", "New conversation",
               "Start an empty conversation"),
    ActionSpec("rename_conversation", "ctrl+r", "rename_conversation", "Rename conversation",
               "Give the current conversation a title", show=False),
    ActionSpec("delete_conversation", "f8", "delete_conversation", "Delete conversation",
               "Delete the current conversation from history", show=False),
    ActionSpec("conversations", "ctrl+l", "focus_conversations", "Conversations",
               "Move to the list of conversations to resume one", show=False),
    ActionSpec("report", "f2", "report", "Report", "This month's costs, chart and export"),
    ActionSpec("estimator", "f3", "estimator", "Estimator",
               "Price a month of usage on many models and local hardware"),
    ActionSpec("explain", "f4", "explain", "Explain",
               "Every step of the routing decision for the draft or the last message"),
    ActionSpec("settings", "f5", "settings", "Settings",
               "The merged configuration with sources; key ids"),
    ActionSpec("edit_config", "f9", "edit_config", "Edit project config",
               "Open .ds4router.yaml in $EDITOR (changes apply without restart)", show=False),
    ActionSpec("copy_block", "ctrl+g", "copy_block", "Copy code block",
               "Copy the selected code block (the last one unless chosen with Alt+Up/Down)"),
    ActionSpec("previous_block", "alt+up", "select_block(-1)", "Select previous code block",
               "Choose an earlier code block to copy", show=False),
    ActionSpec("next_block", "alt+down", "select_block(1)", "Select next code block",
               "Choose a later code block to copy", show=False),
    ActionSpec("toggle_reasoning", "ctrl+t", "toggle_reasoning", "Toggle reasoning",
               "Show or hide the reasoning of the last answer", show=False),
    ActionSpec("toggle_sidebar", "ctrl+b", "toggle_sidebar", "Toggle sidebar",
               "Hide or show the sidebar", show=False),
    # Not F6/F7: the editor keeps those (select line / all).
    ActionSpec("pull_demo", "f1", "pull_demo", "Get the demo model",
               "Fetch the demo-size local model (SmolLM2-135M, ~93 MB) so something answers",
               show=False),
    ActionSpec("traffic", "f12", "traffic", "Traffic",
               "Agents' requests through the gateway (ds4router --serve), as they arrive",
               show=False),
    ActionSpec("reload_config", "f10", "reload_config", "Reload configuration",
               "Read the config files again now", show=False),
)  # fmt: skip


def app_bindings() -> list[Binding]:
    return [
        Binding(a.keys, a.action, a.title, show=a.show, priority=a.priority, id=a.id)
        for a in ACTIONS
    ]


def key_label(keys: str) -> str:
    """``ctrl+s`` -> ``Ctrl+S``, ``f2`` -> ``F2`` (the first of several keys)."""
    first = keys.split(",")[0].strip()
    modifiers = {"ctrl", "alt", "shift", "super", "meta"}
    return "+".join(
        p.capitalize() if p in modifiers else p.upper() if len(p) <= 3 else p.capitalize()
        for p in first.split("+")
    )
