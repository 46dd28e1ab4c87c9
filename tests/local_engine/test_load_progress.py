"""Load progress: ``load_model`` / ``Engine.load`` report truthfully, shard by shard.

The checkpoint is the tiny random preset cut into 1 MiB shards (seven files: the
embedding alone fills the first). Expected totals are read from the files' own
headers here, independently of the loader's reader.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_engine.checkpoint.loader import LoadProgress, load_model
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.errors import CheckpointError
from local_engine.runtime.engine import Engine

SHARD_BYTES = 1 << 20
# Reading and materializing alternate shard by shard; then assembling, then done.
RANK = {"reading": 0, "materializing": 0, "assembling": 1, "done": 2}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("sharded-tiny"), preset="tiny", seed=3, shard_bytes=SHARD_BYTES
    )


@pytest.fixture
def fresh(sharded: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy at a path this process has not loaded (Engine caches one engine per path)."""
    copy = Path(shutil.copytree(sharded, tmp_path / "model"))
    yield copy
    Engine.unload(copy)


def file_tensors(path: Path) -> dict[str, int]:
    """Tensor name -> data bytes, from the file's header (8-byte length, then JSON)."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    sizes = {name: end - start for name, (start, end) in
             ((n, meta["data_offsets"]) for n, meta in header.items())}  # fmt: skip
    # The data region is exactly the tensors, back to back: the file size agrees.
    assert sum(sizes.values()) == path.stat().st_size - 8 - length
    return sizes


def shards_of(model_dir: Path) -> list[Path]:
    return sorted(model_dir.glob("*.safetensors"))


def test_progress_is_monotone_per_tensor_and_ends_at_100_percent(sharded: Path) -> None:
    events: list[LoadProgress] = []
    load_model(sharded, progress=events.append)

    shards = shards_of(sharded)
    per_file = [file_tensors(s) for s in shards]
    bytes_total = sum(sum(sizes.values()) for sizes in per_file)
    tensors_total = sum(len(sizes) for sizes in per_file)
    assert len(shards) == 7

    # Every report carries the totals of the files.
    for e in events:
        assert (e.bytes_total, e.tensors_total, e.shards_total) == (
            bytes_total,
            tensors_total,
            len(shards),
        )
    # Monotone in every count; phases only move forward past reading/materializing.
    for before, after in zip(events, events[1:], strict=False):
        assert after.bytes_done >= before.bytes_done
        assert after.tensors_done >= before.tensors_done
        assert after.shard_index >= before.shard_index
        assert after.fraction >= before.fraction
        assert RANK[after.phase] >= RANK[before.phase]
    first, last = events[0], events[-1]
    assert (first.phase, first.fraction, first.shard_index) == ("reading", 0.0, 1)
    assert first.shard == shards[0].name
    assert (last.phase, last.fraction, last.step) == ("done", 1.0, "done")
    assert (last.bytes_done, last.tensors_done) == (bytes_total, tensors_total)
    assert [e.phase for e in events].count("done") == 1
    assert events[-2].phase == "assembling"

    # One report per tensor read, naming the shard it came from, shards in file order.
    reading = [e for e in events[1:] if e.phase == "reading"]
    assert len(reading) == tensors_total
    assert [e.shard for e in reading] == [
        s.name for s, sizes in zip(shards, per_file, strict=True) for _ in sizes
    ]
    # Before each shard's arrays are materialized, exactly the bytes of the shards so far.
    materializing = [e for e in events if e.phase == "materializing"]
    assert [e.shard_index for e in materializing] == list(range(1, len(shards) + 1))
    so_far = 0
    for e, sizes in zip(materializing, per_file, strict=True):
        so_far += sum(sizes.values())
        assert e.bytes_done == so_far
        assert e.step == f"shard {e.shard_index}/{len(shards)}, materializing"


def test_engine_load_reports_progress_once_and_a_cached_engine_reports_nothing(
    fresh: Path,
) -> None:
    events: list[LoadProgress] = []
    engine = Engine.load(fresh, progress=events.append)
    assert events and events[-1].phase == "done" and events[-1].fraction == 1.0
    assert events[-1].shards_total == len(shards_of(fresh))
    assert engine.info().is_random

    again: list[LoadProgress] = []
    assert Engine.load(fresh, progress=again.append) is engine
    assert again == []


def test_a_tokenizer_mismatch_fails_before_any_weight_is_read(fresh: Path) -> None:
    config = json.loads((fresh / "config.json").read_text())
    config["vocab_size"] = 1000  # the bundled V4 tokenizer has 129280 ids
    (fresh / "config.json").write_text(json.dumps(config))
    events: list[LoadProgress] = []
    with pytest.raises(CheckpointError, match="tokenizer"):
        Engine.load(fresh, check_memory=False, progress=events.append)
    assert events == []


def test_a_progress_callback_that_raises_ends_the_load_and_a_later_load_works(
    fresh: Path,
) -> None:
    class Stop(Exception):
        pass

    def stop_at_shard_3(progress: LoadProgress) -> None:
        if progress.shard_index == 3:
            raise Stop

    with pytest.raises(Stop):
        Engine.load(fresh, progress=stop_at_shard_3)
    assert fresh.resolve() not in Engine.loaded()
    assert Engine.load(fresh).info().layers > 0


def test_fraction_falls_back_to_tensors_when_there_are_no_bytes_to_count() -> None:
    # build_model fed from memory (tensor infos without file offsets) has 0 bytes in total.
    def progress(done: int, phase: str = "reading") -> LoadProgress:
        return LoadProgress(phase, 0, 0, done, 4, "<memory>", 1, 1)  # type: ignore[arg-type]

    assert [progress(n).fraction for n in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert progress(4, "assembling").step == "assembling the model"
