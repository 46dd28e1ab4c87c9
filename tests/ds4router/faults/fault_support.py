"""Driving the real CLI as a child process for fault tests: start it, wait for what it
prints, hit it with a signal, collect what the user saw; and read what it left on disk."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cli_support import cloud_project as shared_cloud_project

from ds4router import paths

REPO = Path(__file__).resolve().parents[3]
KEY_ENV = "DS4_FAULT_TEST_KEY"
MODEL = "openai/gpt-4.1"
MONTH = dt.datetime.now(dt.UTC).strftime("%Y-%m")


class Child:
    """``python -m ds4router ARGV`` with its output read as it comes."""

    def __init__(self, *argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None):
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            KEY_ENV: "sk-fault-test-0000",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ds4router", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=REPO,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin or b"")
        self.proc.stdin.close()
        self._out = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while chunk := stream.read1(4096):  # type: ignore[attr-defined]
            with self._changed:
                self._out += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_output(self, text: bytes = b"", limit_s: float = 120.0) -> bytes:
        """Block until stdout holds ``text`` (or anything, when empty); the output so far.

        ``limit_s`` only bounds a hung child; no assertion depends on how long it took."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: (
                    (text in self._out if text else bool(self._out)) or not self._reader.is_alive()
                ),
                timeout=limit_s,
            )
            seen = bytes(self._out)
        assert done and (text in seen if text else seen), (seen, self.stderr_now())
        return seen

    def stderr_now(self) -> str:
        return "" if self.proc.poll() is None else self.finish()[2]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self, limit_s: float = 120.0) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=limit_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=limit_s)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode("utf-8", "replace")
        return self.proc.returncode, bytes(self._out).decode("utf-8", "replace"), err


def run_cli(
    *argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    return Child(*argv, stdin=stdin, env=env).finish()


def assert_clean(err: str) -> None:
    """What the user sees on stderr: never a traceback."""
    assert "Traceback" not in err and 'File "' not in err, err


def cloud_project(tmp_path: Path, base_url: str, **cloud: Any) -> Path:
    timeouts = {"connect_s": 2, "first_token_s": 5, "total_s": 60}
    return shared_cloud_project(tmp_path, base_url, KEY_ENV, MODEL, {"timeouts": timeouts, **cloud})


def raw_rows(table: str, columns: str, db: Path | None = None) -> list[tuple[Any, ...]]:
    """Rows as they are on disk, read without opening the ledger (which would recover)."""
    path = db or paths.database_path()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()
