"""The project's files, for ``@path`` completion in the input.

Listed once in a worker thread (``git ls-files`` when the project is a git
work tree, so ignored files stay out; else a bounded walk that skips hidden
and vendored folders), then matched in memory on every keystroke.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_FILES = 20_000
SKIP_DIRS = frozenset(
    {"node_modules", "__pycache__", "venv", ".venv", "dist", "build", "target", ".git"}
)
# The mention being typed: ``@`` at a word start, then path characters up to the cursor.
MENTION_AT_CURSOR = re.compile(r"(?<!\S)@((?:[\w.\-~]+/)*[\w.\-]*)$")


@dataclass(frozen=True)
class ProjectFiles:
    """Paths relative to ``root``, with forward slashes."""

    root: Path
    paths: tuple[str, ...]

    @classmethod
    def scan(cls, root: Path, limit: int = MAX_FILES) -> ProjectFiles:
        listed = _git_files(root, limit)
        if listed is None:
            listed = _walk(root, limit)
        return cls(root, tuple(sorted(listed)))

    def complete(self, prefix: str, limit: int = 8) -> list[str]:
        """Paths for what follows ``@``: prefix matches first, then name, then substring."""
        if not prefix:
            return list(self.paths[:limit])
        needle = prefix.lower()
        starts: list[str] = []
        names: list[str] = []
        inside: list[str] = []
        for path in self.paths:
            low = path.lower()
            if low.startswith(needle):
                starts.append(path)
            elif low.rsplit("/", 1)[-1].startswith(needle):
                names.append(path)
            elif needle in low:
                inside.append(path)
        ranked = sorted(starts, key=len) + sorted(names, key=len) + sorted(inside, key=len)
        return ranked[:limit]


def mention_before_cursor(text_before_cursor: str) -> str | None:
    """The partial ``@path`` ending at the cursor, or None when not typing one."""
    match = MENTION_AT_CURSOR.search(text_before_cursor)
    return match.group(1) if match else None


def _git_files(root: Path, limit: int) -> list[str] | None:
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n for n in out.stdout.decode("utf-8", "replace").split("\0") if n]
    return names[:limit]


def _walk(root: Path, limit: int) -> list[str]:
    found: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        rel = Path(directory).relative_to(root)
        for name in sorted(files):
            found.append((rel / name).as_posix())
            if len(found) >= limit:
                return found
    return found


def replace_mention(text_before_cursor: str, completion: str) -> tuple[str, Sequence[str]]:
    """The text before the cursor with the partial mention replaced by ``completion``."""
    match = MENTION_AT_CURSOR.search(text_before_cursor)
    if match is None:
        return text_before_cursor, ()
    return text_before_cursor[: match.start(1)] + completion + " ", (completion,)
