"""`engine info` shows a live load-progress line on a terminal, and nothing when piped."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from local_engine.checkpoint.random_weights import write_random_checkpoint


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("cli-tiny"), preset="tiny", seed=2, shard_bytes=1 << 20
    )


def run_info(model: Path, home: Path, *, tty: bool) -> tuple[int, str, str]:
    """``ds4router engine info MODEL`` with stderr on a pseudo-terminal or a pipe."""
    env = {**os.environ, "DS4ROUTER_HOME": str(home)}
    cmd = [sys.executable, "-m", "ds4router", "engine", "info", str(model)]
    if not tty:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        return done.returncode, done.stdout, done.stderr
    leader, follower = os.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, env=env, text=True)
    os.close(follower)
    err = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = proc.stdout.read() if proc.stdout else ""
    os.close(leader)
    return proc.wait(timeout=300), out, err.decode()


def test_a_terminal_sees_the_load_progress_then_a_clean_line(sharded: Path, tmp_path: Path) -> None:
    code, out, err = run_info(sharded, tmp_path, tty=True)
    assert code == 0, err
    assert "loading 0 % (shard 1/" in err
    assert "loading 100 %" in err
    assert err.endswith("\r\x1b[K")  # the line is wiped once the model is loaded
    assert "parameters" in out.lower()


def test_piped_stderr_gets_no_progress(sharded: Path, tmp_path: Path) -> None:
    code, out, err = run_info(sharded, tmp_path, tty=False)
    assert code == 0, err
    assert "loading" not in err
    assert "parameters" in out.lower()
