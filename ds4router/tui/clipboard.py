"""Copying text where OSC 52 does not reach: the OS clipboard tools.

Textual's ``App.copy_to_clipboard`` writes an OSC 52 sequence, which most
terminals honour but macOS Terminal (and tmux without ``set-clipboard``) do
not. So a copy also goes through the first clipboard tool found on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping


def clipboard_commands(
    platform: str = sys.platform, env: Mapping[str, str] | None = None
) -> list[list[str]]:
    """Commands that read the text to copy on stdin, best first, that exist here."""
    env = os.environ if env is None else env
    candidates: list[list[str]] = []
    if platform == "darwin":
        candidates.append(["pbcopy"])
    if env.get("WAYLAND_DISPLAY"):
        candidates.append(["wl-copy"])
    if env.get("DISPLAY"):
        candidates.append(["xclip", "-selection", "clipboard"])
        candidates.append(["xsel", "--clipboard", "--input"])
    if platform.startswith("win") or "microsoft" in os.uname().release.lower():
        candidates.append(["clip.exe"])
    return [c for c in candidates if shutil.which(c[0])]


def copy_with_tool(text: str, commands: list[list[str]] | None = None) -> str | None:
    """Copy with the first tool that succeeds; its name, or None when none did."""
    for command in clipboard_commands() if commands is None else commands:
        try:
            subprocess.run(
                command, input=text.encode("utf-8"), check=True, timeout=5, capture_output=True
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return command[0]
    return None
