"""Helpers for tests that watch the local engine load: a fresh copy, a hold mid-load, percents.

A load is held inside the engine's progress callback at the first tensor of shard
``HOLD_AT_SHARD`` (the engine thread waits on an event), so a test looks at a load in
progress without sleeping and hoping. Expected percentages are computed from the
safetensors headers, not by the loader. The fixtures that use these live in
``tests/ds4router/conftest.py``.

(Kept apart from ``conftest.py`` so test modules import them by a unique name.)
"""

from __future__ import annotations

import json
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds4router.backends import local

HOLD_AT_SHARD = 3
WAIT_S = 60.0


def fresh_copy(checkpoint: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of ``checkpoint`` at a path no engine of this process has loaded (a new path
    is a new load: the engine caches one engine per directory); forgotten afterwards."""
    copy = Path(shutil.copytree(checkpoint, tmp_path / "model"))
    yield copy
    local.forget_load(copy)
    from local_engine.runtime.engine import Engine

    Engine.unload(copy)


class Hold:
    """``reached`` once the engine thread is held at shard ``HOLD_AT_SHARD``; it stays
    there until ``release`` is set (set at teardown whatever the test did)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()


def hold_at_shard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hold]:
    """Holds the first load that reaches shard ``HOLD_AT_SHARD``, once."""
    held = Hold()
    report = local._EngineLoad._progress

    def holding(self: local._EngineLoad, progress: object) -> None:
        report(self, progress)  # type: ignore[arg-type]
        shard = getattr(progress, "shard_index", 0)
        if shard == HOLD_AT_SHARD and not held.reached.is_set():
            held.reached.set()
            held.release.wait(WAIT_S)

    monkeypatch.setattr(local._EngineLoad, "_progress", holding)
    yield held
    held.release.set()


def data_bytes(shard: Path) -> list[int]:
    """Bytes of each tensor of one file, in the file's order, from its header."""
    with shard.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    return [end - start for start, end in (meta["data_offsets"] for meta in header.values())]


def percent_at_hold(model_dir: Path) -> int:
    """Whole percent read once the first tensor of shard ``HOLD_AT_SHARD`` is in."""
    shards = [data_bytes(s) for s in sorted(model_dir.glob("*.safetensors"))]
    total = sum(map(sum, shards))
    done = sum(map(sum, shards[: HOLD_AT_SHARD - 1])) + shards[HOLD_AT_SHARD - 1][0]
    return done * 100 // total


def shard_count(model_dir: Path) -> int:
    return len(list(model_dir.glob("*.safetensors")))
