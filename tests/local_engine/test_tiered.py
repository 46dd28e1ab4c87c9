"""Tiered long context: with a RAM budget most compressed CSA rows live in memory-mapped
files, and the logits stay bit-identical to the all-RAM cache.

The tiny preset keeps ``index_topk`` at 16, so after 64 tokens the CSA layers attend to
selected rows only (the gather-from-disk path), and a 700-token sequence has 175
compressed rows per CSA layer, nearly all of which the budget below pushes to disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from local_engine import load_model
from local_engine.cache.kv_cache import RowBuffer
from local_engine.cache.tiered import SPILL_BLOCK, TieredRows
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.model.config import CSA
from local_engine.runtime.engine import Engine
from local_engine.runtime.generate import Done, GenerationParams

BUDGET = 40_000  # bytes: below what the window, HCA and index rows alone need


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("tiered"), preset="tiny", seed=4)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Any:
    return load_model(model_dir)


def ids_of(n: int, seed: int = 0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array(rng.integers(0, 129280, size=(1, n)).astype(np.int32))


def feed(model: Any, cache: Any, ids: mx.array) -> list[np.ndarray]:
    """Prefill in uneven chunks, then decode token by token: every path through the cache."""
    out = [np.array(model.prefill(ids[:, :300], cache, chunk_size=128))]
    out.append(np.array(model.prefill(ids[:, 300:650], cache, chunk_size=100)))
    out.append(np.array(model(ids[:, 650:660], cache=cache)))  # all positions' logits
    for i in range(660, ids.shape[1]):
        out.append(np.array(model(ids[:, i : i + 1], cache=cache)))
    return out


def test_tiered_cache_gives_identical_logits_with_most_rows_on_disk(
    model: Any, tmp_path: Path
) -> None:
    ids = ids_of(700)
    assert model.config.index_topk < 700 // model.config.csa_ratio
    ram = model.make_cache()
    expected = feed(model, ram, ids)
    tiered = model.make_cache()
    tiered.enable_tiering(BUDGET, tmp_path)
    got = feed(model, tiered, ids)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))

    csa = [layer for layer in tiered if layer.kind == CSA]
    assert csa
    for layer in csa:
        assert layer.compressor is not None and layer.indexer is not None
        rows = layer.compressor.buffer
        assert isinstance(rows, TieredRows)
        assert rows.spilled >= 0.8 * rows.count  # most rows are on disk
        assert isinstance(layer.indexer.buffer, RowBuffer)  # index keys stay in RAM
    assert all(
        isinstance(layer.compressor.buffer, RowBuffer)
        for layer in tiered
        if layer.kind != CSA and layer.compressor is not None
    )  # HCA rows in RAM
    files = sorted(p.name for p in tmp_path.glob("tier-*/*.rows"))
    assert len(files) == len(csa)
    assert tiered.disk_nbytes == sum(p.stat().st_size for p in tmp_path.glob("tier-*/*.rows"))
    assert tiered.nbytes == ram.nbytes  # the same state, split over two tiers
    # What stays in RAM: at most one spill block of CSA rows per layer beyond what must.
    fixed = ram.nbytes - sum(layer.compressor.buffer.nbytes for layer in ram if layer.kind == CSA)
    row = model.config.head_dim * 4
    assert tiered.resident_nbytes <= fixed + len(csa) * (SPILL_BLOCK + 4) * row


def test_a_roomy_budget_keeps_everything_in_ram(model: Any, tmp_path: Path) -> None:
    cache = model.make_cache()
    cache.enable_tiering(10**9, tmp_path)
    model.prefill(ids_of(300), cache)
    assert cache.disk_nbytes == 0 and not list(tmp_path.iterdir())


def test_snapshots_cross_between_tiered_and_all_ram_caches(model: Any, tmp_path: Path) -> None:
    ids = ids_of(560, seed=1)
    tiered = model.make_cache()
    tiered.enable_tiering(BUDGET, tmp_path)
    model.prefill(ids[:, :512], tiered, chunk_size=256)
    assert tiered.disk_nbytes > 0
    ram = model.make_cache()
    ram.restore(tiered.snapshot())
    back = model.make_cache()
    back.enable_tiering(BUDGET, tmp_path)
    back.restore(ram.snapshot())  # restoring spills straight to disk
    assert back.disk_nbytes > 0
    follow = ids[:, 512:]
    a, b, c = (np.array(model.prefill(follow, x)) for x in (tiered, ram, back))
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_row_files_go_with_the_cache(model: Any, tmp_path: Path) -> None:
    cache = model.make_cache()
    cache.enable_tiering(BUDGET, tmp_path)
    model.prefill(ids_of(400, seed=2), cache, chunk_size=200)
    assert list(tmp_path.glob("tier-*/*.rows"))
    del cache
    assert not list(tmp_path.iterdir())


def test_engine_with_a_ram_budget_generates_the_same_tokens(
    model_dir: Path, tmp_path: Path
) -> None:
    engine = Engine.load(model_dir)
    prompt = np.random.default_rng(5).integers(2, 128000, size=600).tolist()
    params = GenerationParams(temperature=0.0, max_tokens=8)

    def tokens() -> tuple[int, ...]:
        done = list(engine.generate_ids(prompt, params))[-1]
        assert isinstance(done, Done)
        return done.token_ids

    engine.use_kv_cache(None)
    expected = tokens()
    try:
        engine.use_kv_cache(tmp_path, ram_bytes=BUDGET)
        cache = engine.make_cache()
        assert cache.tier is not None and cache.tier.ram_bytes == BUDGET
        assert tokens() == expected  # a fresh prefill, tiered
        assert tokens() == expected  # restored from disk into a tiered cache
        assert not list((tmp_path / "tier").glob("tier-*/*"))  # files gone with the caches
    finally:
        engine.use_kv_cache(None)
