"""The KV cache directory: entries, longest-prefix lookup, the index, eviction, maintenance.

These tests write real files in a temp directory with small numpy arrays standing in for a
decode state; the engine-level behaviour (restoring a real model's state) is in
``test_prefix_reuse.py``, faults in ``test_kv_faults.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from local_engine.cache.kv_store import (
    BLOCK,
    KVStore,
    RawArray,
    activity,
    chain,
    prefix_key,
)

FP = "a" * 64
OTHER_FP = "b" * 64


def ids_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 129280, size=n).astype(np.int32)


def state_for(ids: np.ndarray) -> tuple[dict[str, RawArray], dict[str, int], RawArray]:
    """A stand-in decode state whose values depend on the prefix (so mix-ups show)."""
    n = len(ids)
    rng = np.random.default_rng(int(ids.sum()) + n)
    rows = rng.standard_normal((n // 4, 8)).astype(np.float32)
    bf16 = rng.integers(0, 2**16, size=(3, 5)).astype(np.uint16)  # bfloat16 bit patterns
    empty = np.zeros((0, 8), dtype=np.float32)
    arrays = {
        "layers.0.rows": RawArray("float32", rows.shape, rows),
        "layers.0.window": RawArray("bfloat16", bf16.shape, bf16),
        "layers.0.pending": RawArray("float32", empty.shape, empty),
    }
    logits = rng.standard_normal((1, 32)).astype(np.float32)
    return arrays, {"tokens": n, "layers.0.count": n // 4}, RawArray("float32", (1, 32), logits)


def put(store: KVStore, ids: np.ndarray, fingerprint: str = FP) -> None:
    arrays, ints, logits = state_for(ids)
    assert store.put(fingerprint, ids, arrays, ints, logits) is not None


def test_an_entry_reads_back_bit_for_bit(tmp_path: Path) -> None:
    store = KVStore(tmp_path)
    ids = ids_of(300)
    put(store, ids)
    state = store.lookup(FP, ids)
    assert state is not None
    arrays, ints, logits = state_for(ids)
    assert state.info.tokens == 300
    assert np.array_equal(state.token_ids, ids)
    assert dict(state.ints) == ints
    for name, raw in arrays.items():
        assert state.arrays[name].shape == raw.shape
        assert state.arrays[name].tobytes() == np.asarray(raw.data).tobytes()
    assert state.dtypes["layers.0.window"] == "bfloat16"
    assert np.array_equal(state.logits, np.asarray(logits.data))
    # Written once: a second put of the same prefix is a no-op.
    assert store.put(FP, ids, *state_for(ids)) is None
    assert len(store.entries()) == 1


def test_lookup_returns_the_longest_cached_prefix(tmp_path: Path) -> None:
    store = KVStore(tmp_path)
    ids = ids_of(1000)
    for n in (128, 256, 300, 700):  # block boundaries and exact points
        put(store, ids[:n])
    put(store, ids[:900], fingerprint=OTHER_FP)  # another model's longer prefix

    def found(query: np.ndarray, **kw: int) -> int | None:
        state = store.lookup(FP, query, **kw)
        return None if state is None else state.info.tokens

    assert found(ids) == 700
    assert found(ids[:700]) == 700  # the whole query
    assert found(ids[:699]) == 300
    assert found(ids, at_most=699) == 300
    assert found(ids[:299]) == 256
    changed = ids.copy()
    changed[290] += 1  # inside the tail of the 300-token exact point
    assert found(changed) == 256
    changed = ids.copy()
    changed[200] += 1  # inside the second block
    assert found(changed) == 128
    changed = ids.copy()
    changed[0] += 1
    assert found(changed) is None
    assert found(ids[:100]) is None
    assert found(ids, at_most=127) is None
    # Candidates come longest first, from hashes alone.
    assert [c.tokens for c in store.candidates(FP, ids)] == [700, 300, 256, 128]


def test_keys_are_a_hash_chain_over_128_token_blocks() -> None:
    ids = ids_of(3 * BLOCK + 5)
    anchors = chain(FP, ids)
    assert len(anchors) == 4
    assert chain(FP, ids[: 2 * BLOCK]) == anchors[:3]
    assert chain(OTHER_FP, ids)[0] != anchors[0]
    key, anchor = prefix_key(FP, ids)
    assert anchor == anchors[3] and key != anchor  # an exact point past the boundary
    assert prefix_key(FP, ids[: 3 * BLOCK]) == (anchors[3], anchors[3])


def test_hits_and_recency_are_recorded_and_shared_through_the_index(tmp_path: Path) -> None:
    ids = ids_of(256)
    put(KVStore(tmp_path), ids)
    other = KVStore(tmp_path)  # another process would see the same files
    before = activity()
    assert other.lookup(FP, ids) is not None
    assert other.lookup(FP, ids) is not None
    (entry,) = KVStore(tmp_path).entries()
    assert entry.hits == 2
    after = activity()
    assert after.hits - before.hits == 2
    assert after.cached_tokens - before.cached_tokens == 512


def test_eviction_keeps_the_directory_within_budget_dropping_least_valuable_first(
    tmp_path: Path,
) -> None:
    probe = KVStore(tmp_path / "probe")
    put(probe, ids_of(128, seed=9))
    size = probe.entries()[0].nbytes
    store = KVStore(tmp_path / "kv", budget_bytes=int(size * 3.5))
    prompts = [ids_of(128, seed=s) for s in range(3)]
    for p in prompts:
        put(store, p)
    # The first one is used often; the second not at all; the third is the newest.
    for _ in range(3):
        assert store.lookup(FP, prompts[0]) is not None
    put(store, ids_of(128, seed=3))
    kept = {e.key for e in store.entries()}
    assert prefix_key(FP, prompts[0])[0] in kept
    assert prefix_key(FP, prompts[1])[0] not in kept
    assert len(kept) == 3
    assert store.stats().nbytes <= store.budget_bytes
    assert len(list((tmp_path / "kv" / "entries").glob("*/*.kvc"))) == 3
    # A state larger than the whole budget is not written at all.
    assert store.put(FP, ids_of(2000), *state_for(ids_of(2000))) is None


def test_verify_rebuilds_the_index_from_entry_files(tmp_path: Path) -> None:
    store = KVStore(tmp_path)
    prompts = [ids_of(200, seed=s) for s in range(3)]
    for p in prompts:
        put(store, p)
    (tmp_path / "index.json").unlink()
    assert KVStore(tmp_path).lookup(FP, prompts[0]) is None  # not indexed: not found
    report = KVStore(tmp_path).verify()
    assert (report.checked, report.ok, report.adopted, report.removed) == (3, 3, 3, ())
    assert all(KVStore(tmp_path).lookup(FP, p) is not None for p in prompts)


def test_an_unreadable_index_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = KVStore(tmp_path)
    ids = ids_of(130)
    put(store, ids)
    (tmp_path / "index.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="local_engine.cache.kv_cache"):
        state = KVStore(tmp_path).lookup(FP, ids)
    assert state is not None and state.info.tokens == 130
    assert any("index" in r.message and "rebuilding" in r.message for r in caplog.records)
    assert json.loads((tmp_path / "index.json").read_text())["format"] == 1
    # Also when a writer, holding the index lock, is the one to find it damaged.
    writer = KVStore(tmp_path)
    (tmp_path / "index.json").write_text("[]")
    update = threading.Thread(target=writer._update, args=(lambda entries: None,), daemon=True)
    update.start()
    update.join(timeout=20)
    assert not update.is_alive()  # it did not wait on its own lock
    assert [e.tokens for e in KVStore(tmp_path).entries()] == [130]


def test_stats_and_clear(tmp_path: Path) -> None:
    store = KVStore(tmp_path, budget_bytes=10**9)
    put(store, ids_of(128))
    put(store, ids_of(256, seed=1))
    put(store, ids_of(128, seed=2), fingerprint=OTHER_FP)
    stats = store.stats()
    assert (stats.entries, stats.tokens, stats.models, stats.budget_bytes) == (3, 512, 2, 10**9)
    assert stats.nbytes == sum(p.stat().st_size for p in tmp_path.glob("entries/*/*.kvc"))
    assert store.clear(OTHER_FP) == 1
    assert store.stats().models == 1
    assert store.clear() == 2
    assert store.entries() == [] and not list(tmp_path.glob("entries/*/*.kvc"))


def test_temp_files_of_dead_writers_are_removed_on_open(tmp_path: Path) -> None:
    KVStore(tmp_path)
    dead = tmp_path / "tmp" / "999999999-1-abc.part"  # no such pid
    dead.write_bytes(b"half an entry")
    mine = tmp_path / "tmp" / f"{os.getpid()}-1-def.part"  # a write of ours in flight
    mine.write_bytes(b"in progress")
    old = tmp_path / "tmp" / f"{os.getppid()}-1-ghi.part"  # alive pid, but abandoned long ago
    old.write_bytes(b"stale")
    os.utime(old, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    KVStore(tmp_path)
    assert not dead.exists() and not old.exists()
    assert mine.exists()
