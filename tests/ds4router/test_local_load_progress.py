"""The local backend reports the engine's load progress: health detail, status, waiting.

The load is held at the first tensor of shard 3 (the engine's progress callback waits on
an event), so a test looks at a load in progress without sleeping and hoping. Expected
percentages come from the files' headers, not from the loader.
"""

from __future__ import annotations

from pathlib import Path

from load_support import HOLD_AT_SHARD, WAIT_S, Hold, percent_at_hold, shard_count

from ds4router.backends import local
from ds4router.backends.local import LoadStatus, LocalBackend


async def test_health_and_status_show_the_percentage_and_the_shard(
    fresh_sharded: Path, held_load: Hold
) -> None:
    backend = LocalBackend(fresh_sharded)
    backend.start_loading()
    assert held_load.reached.wait(WAIT_S)

    shards = shard_count(fresh_sharded)
    expected = percent_at_hold(fresh_sharded)
    assert 0 < expected < 100
    health = backend.health()
    assert health.status == "loading" and not health.usable
    assert health.detail == (
        f"loading {fresh_sharded.resolve()}: {expected} % (shard {HOLD_AT_SHARD}/{shards})"
    )
    status = backend.load_status()
    assert status.state == "loading" and status.step == f"shard {HOLD_AT_SHARD}/{shards}"
    assert status.fraction is not None and local.percent(status.fraction) == expected
    assert status.progress is not None and status.progress.shard_index == HOLD_AT_SHARD
    # Another backend of the process (a session's) sees the same load.
    assert LocalBackend(fresh_sharded).load_status().fraction == status.fraction

    held_load.release.set()
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


async def test_waiting_follows_a_whole_load_to_ready(fresh_sharded: Path) -> None:
    backend = LocalBackend(fresh_sharded)
    idle = backend.load_status()
    assert idle.state == "idle" and idle.fraction is None
    backend.start_loading()
    final = follow(backend, backend.wait_for_load(idle.version, timeout=WAIT_S))
    assert final.state == "ready" and final.progress is not None
    assert final.progress.phase == "done"
    assert final.progress.shards_total == shard_count(fresh_sharded)


async def test_a_failed_load_ends_the_wait_with_the_reason(fresh_sharded: Path) -> None:
    backend = LocalBackend(fresh_sharded, available_memory_bytes=1024)
    backend.start_loading()
    final = follow(backend, backend.load_status())
    assert final.state == "failed" and "needs about" in final.error
    assert final.fraction is None  # it failed before reading any weight


def test_without_a_model_path_there_is_nothing_to_wait_for() -> None:
    backend = LocalBackend(None)
    assert backend.load_status().state == "idle"
    assert backend.wait_for_load(timeout=0).state == "idle"
