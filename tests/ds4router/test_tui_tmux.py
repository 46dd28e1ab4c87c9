"""Smoke test of the real ``ds4router`` in a real terminal: tmux at 120x36.

The app is started as users start it (``python -m ds4router --project DIR``),
keys are typed with ``send-keys`` and the screen read with ``capture-pane``.
The project routes to the loopback OpenAI-compatible test server, so the
answer streams through LiteLLM over HTTP, is priced and lands in the ledger;
then the project file is edited through ``$EDITOR`` and the change applies live.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import OpenAIServer, ok

from ds4router import paths

COLUMNS, ROWS = 120, 36


class Tmux:
    """One tmux server on its own socket (never the user's), one session."""

    def __init__(self) -> None:
        self.socket = f"ds4router-test-{uuid.uuid4().hex[:8]}"
        self.session = "app"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
        )

    def start(self, command: str, cwd: Path) -> None:
        self.run(
            "new-session", "-d", "-s", self.session, "-x", str(COLUMNS), "-y", str(ROWS),
            "-c", str(cwd), command,
        )  # fmt: skip
        # Keep the pane (and what it showed) after the app exits, for the last assertion.
        self.run("set-option", "-t", self.session, "remain-on-exit", "on")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def text(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def dead(self) -> bool:
        out = self.run("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False)
        return out.stdout.strip() == "1"

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(n in screen for n in needles):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"never saw {needles!r} on screen; last screen:\n{screen}")

    def kill(self) -> None:
        self.run("kill-server", check=False)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    try:
        yield session
    finally:
        session.kill()


def test_real_app_streams_an_answer_from_the_loopback_server(
    tmp_path: Path, openai_server: OpenAIServer, tmux: Tmux
) -> None:
    openai_server.script(ok("Hello", " from", " the", " loopback", " server", chunk_delay_s=0.05))
    project = tmp_path / "acme"
    project.mkdir()
    (project / ".ds4router.yaml").write_text(
        f"""\
project: acme
default: cloud:openai/gpt-4.1
cloud:
  models: [{{name: openai/gpt-4.1, api_base: "{openai_server.base_url}"}}]
budget: {{monthly_usd: 40}}
""",
        encoding="utf-8",
    )
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/^project: acme$/project: edited-by-editor/" "$1"\n')
    editor.chmod(0o755)
    env = {
        "EDITOR": str(editor),
        "DS4ROUTER_HOME": os.environ["DS4ROUTER_HOME"],
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TERM": "xterm-256color",
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    command = shlex.join(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()),
         sys.executable, "-m", "ds4router", "--project", str(project)]
    )  # fmt: skip
    tmux.start(command, project)

    tmux.wait_for("acme", "ready")
    tmux.text("Say hello to the team")
    tmux.wait_for("CLOUD", "openai/gpt-4.1")  # the live route preview
    tmux.keys("C-s")
    screen = tmux.wait_for("Hello from the loopback server", "in 11 · out 5 tok", "saved")
    assert "CLOUD" in screen and "rule default" in screen
    assert openai_server.count == 1
    body = openai_server.requests[-1].body or {}
    assert body.get("stream") is True
    assert "Say hello to the team" in str(body.get("messages"))

    from pricing.ledger import Ledger

    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    with Ledger(paths.database_path()) as ledger:
        rows = ledger.month_rows(month, "acme")
    assert [(r.route, r.model, r.status) for r in rows] == [("cloud", "openai/gpt-4.1", "ok")]
    assert rows[0].cost_usd is not None and rows[0].cost_usd > 0
    assert f"${rows[0].cost_usd:.4f}" in screen

    # F9 hands the terminal to $EDITOR (App.suspend); the saved change applies at once.
    tmux.keys("F9")
    screen = tmux.wait_for("edited-by-editor", "configuration reloaded")
    assert "ready" in screen

    tmux.keys("C-c")
    tmux.keys("C-c")
    deadline = time.monotonic() + 10
    while not tmux.dead() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tmux.dead(), "Ctrl+C twice did not quit the app"
