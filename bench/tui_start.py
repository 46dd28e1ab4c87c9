"""How fast the TUI starts: ``first_paint_s`` and ``ready_s``, median of 5 runs.

Each run starts the real app (``run_tui``) in a fresh interpreter on a
120x36 pseudo-terminal and reads what it writes:

* ``first_paint_s``: from spawning the process to the first frame on the
  terminal (the sidebar's "Engines" label is in the bytes written);
* ``ready_s``: to the top bar saying "ready" (config, session, history, the
  month's figures and the project's file list loaded in workers).

The project is a temporary one with a loopback cloud model (nothing is
contacted while starting) and a private ``DS4ROUTER_HOME``. Prints one JSON line.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

RUNS = 5
COLUMNS, ROWS = 120, 36
FIRST_PAINT_MARK = b"Engines"
READY_MARK = b"ready"
TIMEOUT_S = 30.0

PROJECT_YAML = """\
project: bench
default: cloud:openai/gpt-4.1
cloud:
  models: [{name: openai/gpt-4.1, api_base: "http://127.0.0.1:9/v1"}]
"""


def one_run(project: Path, home: Path) -> tuple[float, float]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", DS4ROUTER_HOME=str(home))
    for name in ("COLUMNS", "LINES"):  # the pty's size must win
        env.pop(name, None)
    code = f"from ds4router.commands.tui_cmd import run_tui; run_tui({str(project)!r})"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=project,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    first_paint = ready = None
    try:
        while ready is None:
            if time.perf_counter() - started > TIMEOUT_S:
                tail = seen[-2000:]
                raise RuntimeError(f"the app did not get ready in {TIMEOUT_S:g}s:\n{tail!r}")
            readable, _, _ = select.select([master], [], [], 0.05)
            if not readable:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                raise RuntimeError(f"the app exited early:\n{seen[-2000:]!r}") from None
            now = time.perf_counter()
            seen += chunk
            if first_paint is None and FIRST_PAINT_MARK in seen:
                first_paint = now - started
            # The top bar's "ready", not a backend's ("cloud ready", "local ready").
            bare = seen.replace(b"cloud ready", b"").replace(b"local ready", b"")
            if first_paint is not None and READY_MARK in bare:
                ready = now - started
    finally:
        os.write(master, b"\x11")  # Ctrl+Q quits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    assert first_paint is not None
    return first_paint, ready


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ds4router-bench-") as tmp:
        root = Path(tmp)
        project = root / "bench"
        project.mkdir()
        (project / ".ds4router.yaml").write_text(PROJECT_YAML, encoding="utf-8")
        one_run(project, root / "home")  # warm the OS file cache; not counted
        runs = [one_run(project, root / "home") for _ in range(RUNS)]
    first = [r[0] for r in runs]
    ready = [r[1] for r in runs]
    print(
        json.dumps(
            {
                "bench": "tui_start",
                "first_paint_s": round(statistics.median(first), 3),
                "ready_s": round(statistics.median(ready), 3),
                "runs": RUNS,
                "first_paint_runs_s": [round(v, 3) for v in first],
                "ready_runs_s": [round(v, 3) for v in ready],
                "target_first_paint_s": 1.0,
                "terminal": f"{COLUMNS}x{ROWS}",
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
