"""The local backend reports the engine's load progress: health detail, status, waiting.

The load is held at the first tensor of shard 3 (the engine's progress callback waits on
an event), so a test looks at a load in progress without sleeping and hoping. Expected
percentages come from the files' headers, not from the loader.
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
from ds4router.backends.local import LoadStatus, LocalBackend
from local_engine.random_checkpoint import write_random_checkpoint

HOLD_AT_SHARD = 3
WAIT_S = 60.0


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset in 1 MiB shards: seven files, the embedding alone in the first."""
    return write_random_checkpoint(
        tmp_path_factory.mktemp("lp-tiny"), preset="tiny", seed=5, shard_bytes=1 << 20
    )


@pytest.fixture
def fresh(sharded: Path, tmp_path: Path) -> Iterator[Path]:
    copy = Path(shutil.copytree(sharded, tmp_path / "model"))
    yield copy
    local.forget_load(copy)
    from local_engine.engine import Engine

    Engine.unload(copy)


class Hold:
    """Holds the engine thread inside its progress callback at shard ``HOLD_AT_SHARD``."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def hold(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hold]:
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


async def test_health_and_status_show_the_percentage_and_the_shard(fresh: Path, hold: Hold) -> None:
    backend = LocalBackend(fresh)
    backend.start_loading()
    assert hold.reached.wait(WAIT_S)

    shards = len(list(fresh.glob("*.safetensors")))
    expected = percent_at_hold(fresh)
    assert 0 < expected < 100
    health = backend.health()
    assert health.status == "loading" and not health.usable
    assert health.detail == (
        f"loading {fresh.resolve()}: {expected} % (shard {HOLD_AT_SHARD}/{shards})"
    )
    status = backend.load_status()
    assert status.state == "loading" and status.step == f"shard {HOLD_AT_SHARD}/{shards}"
    assert status.fraction is not None and local.percent(status.fraction) == expected
    assert status.progress is not None and status.progress.shard_index == HOLD_AT_SHARD
    # Another backend of the process (a session's) sees the same load.
    assert LocalBackend(fresh).load_status().fraction == status.fraction

    hold.release.set()
    final = follow(backend, status)
    assert final.state == "ready" and final.weight_bytes and final.fraction == 1.0
    assert backend.health().status == "ready"


def follow(backend: LocalBackend, start: LoadStatus) -> LoadStatus:
    """Every status ``wait_for_load`` hands out until the load ends; checks they move on."""
    seen = [start]
    while seen[-1].state == "loading":
        status = backend.wait_for_load(seen[-1].version, timeout=WAIT_S)
        assert status.version > seen[-1].version, "wait_for_load returned without a change"
        seen.append(status)
    fractions = [s.fraction for s in seen if s.fraction is not None]
    assert fractions == sorted(fractions)
    return seen[-1]


async def test_waiting_follows_a_whole_load_to_ready(fresh: Path) -> None:
    backend = LocalBackend(fresh)
    idle = backend.load_status()
    assert idle.state == "idle" and idle.fraction is None
    backend.start_loading()
    final = follow(backend, backend.wait_for_load(idle.version, timeout=WAIT_S))
    assert final.state == "ready" and final.progress is not None
    assert final.progress.phase == "done"
    assert final.progress.shards_total == len(list(fresh.glob("*.safetensors")))


async def test_a_failed_load_ends_the_wait_with_the_reason(fresh: Path) -> None:
    backend = LocalBackend(fresh, available_memory_bytes=1024)
    backend.start_loading()
    final = follow(backend, backend.load_status())
    assert final.state == "failed" and "needs about" in final.error
    assert final.fraction is None  # it failed before reading any weight


def test_without_a_model_path_there_is_nothing_to_wait_for() -> None:
    backend = LocalBackend(None)
    assert backend.load_status().state == "idle"
    assert backend.wait_for_load(timeout=0).state == "idle"
