"""Faults in the KV cache directory never give wrong logits or a crash.

Each fault -- a truncated entry, a flipped byte, an entry written for another model, a
full disk, two writers at once, a writer killed half-way -- is detected, the entry is
ignored or removed, one warning line is logged, and generation prefills and produces the
same tokens as without any cache.
"""

from __future__ import annotations

import errno
import json
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from local_engine.cache import kv_store
from local_engine.cache.kv_store import KVStore, prefix_key
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.runtime.engine import Engine
from local_engine.runtime.generate import Done, GenerationParams

REPO = Path(__file__).resolve().parents[2]
LOGGER = "local_engine.cache.kv_cache"
PROMPT = np.random.default_rng(21).integers(2, 128000, size=400).astype(int).tolist()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(write_random_checkpoint(tmp_path_factory.mktemp("faults"), "tiny", seed=2))


@pytest.fixture(scope="module")
def reference(engine: Engine) -> tuple[int, ...]:
    engine.use_kv_cache(None)
    return run(engine).token_ids


@pytest.fixture(autouse=True)
def cache_off_after(engine: Engine) -> Any:
    yield
    engine.use_kv_cache(None)


def run(engine: Engine, prompt: list[int] = PROMPT) -> Done:
    params = GenerationParams(temperature=0.0, max_tokens=5)
    done = list(engine.generate_ids(prompt, params))[-1]
    assert isinstance(done, Done)
    engine.flush_kv_cache(timeout=60)
    return done


def prompt_entry(kv: Path, engine: Engine) -> Path:
    key, _ = prefix_key(engine.fingerprint, PROMPT)
    path = kv / "entries" / key[:2] / f"{key}.kvc"
    assert path.is_file()
    return path


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"
    ]
    assert all("\n" not in line for line in lines)
    return lines


def primed(engine: Engine, kv: Path, reference: tuple[int, ...]) -> Path:
    """A cache holding the prompt's state; returns the entry's file."""
    engine.use_kv_cache(kv, snapshot_every=0)
    assert run(engine).token_ids == reference
    assert run(engine).stats.cached_prompt_tokens == len(PROMPT)  # it works before the fault
    return prompt_entry(kv, engine)


def assert_prefills_correctly(
    engine: Engine, kv: Path, reference: tuple[int, ...], caplog: pytest.LogCaptureFixture
) -> list[str]:
    with caplog.at_level("WARNING", logger=LOGGER):
        done = run(engine)
    assert done.stats.cached_prompt_tokens == 0
    assert done.token_ids == reference
    lines = warnings(caplog)
    # The bad entry is gone, and the prefill wrote a good one in its place.
    caplog.clear()
    assert run(engine).stats.cached_prompt_tokens == len(PROMPT)
    assert KVStore(kv).verify().removed == ()
    return lines


def test_a_truncated_entry_is_removed_and_the_prompt_prefilled(
    engine: Engine, reference: tuple[int, ...], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = primed(engine, tmp_path, reference)
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    (line,) = assert_prefills_correctly(engine, tmp_path, reference, caplog)
    assert "damaged" in line and "truncated" in line and "prefilling" in line


@pytest.mark.parametrize("where", ["header", "state", "logits"])
def test_a_flipped_byte_is_detected_by_the_checksums(
    where: str,
    engine: Engine,
    reference: tuple[int, ...],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = primed(engine, tmp_path, reference)
    data = bytearray(entry.read_bytes())
    header = json.loads(data[24 : 24 + struct.unpack("<I", data[12:16])[0]])
    start = len(data) - header["data_bytes"]
    sections = {s["name"]: s for s in header["sections"]}
    offset = {
        "header": 40,
        "state": start + sections["layers.1.compressor.rows"]["offset"] + 5,
        "logits": start + sections["_logits"]["offset"] + 1000,
    }[where]
    data[offset] ^= 0x10
    entry.write_bytes(bytes(data))
    (line,) = assert_prefills_correctly(engine, tmp_path, reference, caplog)
    assert "checksum mismatch" in line


def test_an_entry_of_another_model_is_never_restored(
    engine: Engine, reference: tuple[int, ...], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = primed(engine, tmp_path, reference)
    data = bytearray(entry.read_bytes())
    length = struct.unpack("<I", data[12:16])[0]
    header = bytes(data[24 : 24 + length]).replace(engine.fingerprint.encode(), b"0" * 64)
    data[24 : 24 + length] = header
    data[16:20] = struct.pack("<I", zlib.crc32(header))  # a consistent header, wrong model
    entry.write_bytes(bytes(data))
    (line,) = assert_prefills_correctly(engine, tmp_path, reference, caplog)
    assert "another model" in line


def test_a_different_model_sharing_the_directory_does_not_reuse_its_states(
    engine: Engine, reference: tuple[int, ...], tmp_path: Path
) -> None:
    primed(engine, tmp_path, reference)
    other = Engine.load(write_random_checkpoint(tmp_path / "other", "tiny", seed=3))
    try:
        assert other.fingerprint != engine.fingerprint
        other.use_kv_cache(tmp_path, snapshot_every=0)
        assert run(other).stats.cached_prompt_tokens == 0
        assert run(other).stats.cached_prompt_tokens == len(PROMPT)
        assert run(engine).stats.cached_prompt_tokens == len(PROMPT)  # both kept
        assert KVStore(tmp_path).stats().models == 2
    finally:
        other.use_kv_cache(None)
        Engine.unload(other.path)


def test_a_full_disk_costs_the_snapshot_not_the_answer(
    engine: Engine,
    reference: tuple[int, ...],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine.use_kv_cache(tmp_path, snapshot_every=0)

    def full(fh: Any, view: memoryview) -> None:
        fh.write(view[: len(view) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kv_store, "_write_all", full)
    with caplog.at_level("WARNING", logger=LOGGER):
        done = run(engine)
    assert done.token_ids == reference and done.stats.cached_prompt_tokens == 0
    lines = warnings(caplog)
    assert lines and all("the disk is full" in line for line in lines)
    assert not list(tmp_path.glob("tmp/*")) and not list(tmp_path.glob("entries/*/*"))
    monkeypatch.undo()  # space again: saving resumes
    assert run(engine).stats.cached_prompt_tokens == 0
    assert run(engine).stats.cached_prompt_tokens == len(PROMPT)


_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from local_engine.cache import kv_store
    from local_engine.cache.kv_store import KVStore, RawArray

    root, fingerprint, seed, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = KVStore(root)
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).integers(0, 1000, size=2048).astype(np.int32)

    def entry(n):
        rows = rng.standard_normal((n, 64)).astype(np.float32)
        logits = RawArray("float32", (1, 8), np.ones((1, 8), np.float32))
        return {"x": RawArray("float32", rows.shape, rows)}, {"tokens": n}, logits

    if mode == "kill":
        original = kv_store._write_all
        def slow(fh, view):
            original(fh, view[:64])
            fh.flush()
            open(root + "/started", "w").close()
            time.sleep(60)
        kv_store._write_all = slow
        store.put(fingerprint, base[:1000], *entry(1000))
    else:
        for n in range(128, 2048, 64):  # the two writers overlap on every other prefix
            if (n // 64) % 2 == seed % 2 or n % 256 == 0:
                store.put(fingerprint, base[:n], *entry(n))
    print("done")
    """
)


def _writer(root: Path, fingerprint: str, seed: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), fingerprint, str(seed), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_writers_at_once_leave_a_consistent_directory(tmp_path: Path) -> None:
    fp = "c" * 64
    writers = [_writer(tmp_path, fp, seed, "write") for seed in (1, 2)]
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    store = KVStore(tmp_path)
    files = list(tmp_path.glob("entries/*/*.kvc"))
    assert len(store.entries()) == len(files) == len(range(128, 2048, 64))
    report = store.verify()
    assert report.removed == () and report.adopted == 0 and report.missing == 0
    base = np.random.default_rng(0).integers(0, 1000, size=2048).astype(np.int32)
    state = store.lookup(fp, base[:1000])
    assert state is not None and state.info.tokens == 960
    assert not list(tmp_path.glob("tmp/*.part"))


def test_a_writer_killed_mid_write_leaves_no_entry(
    engine: Engine, reference: tuple[int, ...], tmp_path: Path
) -> None:
    writer = _writer(tmp_path, engine.fingerprint, 0, "kill")
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert writer.poll() is None and time.monotonic() < deadline, writer.stderr
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    parts = list(tmp_path.glob("tmp/*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0  # its half-written temp file
    assert not list(tmp_path.glob("entries/*/*.kvc"))
    engine.use_kv_cache(tmp_path, snapshot_every=0)  # opening the store cleans up after it
    assert not list(tmp_path.glob("tmp/*.part"))
    done = run(engine)
    assert done.stats.cached_prompt_tokens == 0 and done.token_ids == reference


def test_an_entry_that_does_not_fit_the_model_is_removed(
    engine: Engine, reference: tuple[int, ...], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A whole, valid entry under this model's key whose arrays are not this model's state
    # (as a bug in an older engine might have left): restoring it must fail cleanly.
    store = KVStore(tmp_path)
    junk = np.zeros((3, 3), np.float32)
    logits = kv_store.RawArray("float32", (1, 8), np.zeros((1, 8), np.float32))
    arrays = {"x": kv_store.RawArray("float32", junk.shape, junk)}
    assert store.put(engine.fingerprint, PROMPT, arrays, {"tokens": len(PROMPT)}, logits)
    engine.use_kv_cache(tmp_path, snapshot_every=0)
    with caplog.at_level("WARNING", logger=LOGGER):
        done = run(engine)
    assert done.stats.cached_prompt_tokens == 0 and done.token_ids == reference
    (line,) = warnings(caplog)
    assert "does not fit this model" in line
    assert run(engine).stats.cached_prompt_tokens == len(PROMPT)


def test_a_damaged_longest_entry_falls_back_to_the_next_longest(
    engine: Engine, reference: tuple[int, ...], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine.use_kv_cache(tmp_path, snapshot_every=128)  # snapshots at 128, 256, 384 and 400
    assert run(engine).token_ids == reference
    entry = prompt_entry(tmp_path, engine)
    data = bytearray(entry.read_bytes())
    data[-7] ^= 0xFF
    entry.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger=LOGGER):
        done = run(engine)
    assert done.stats.cached_prompt_tokens == 384
    assert len(warnings(caplog)) == 1
    # Restored at 384 and 16 prefilled: the same state as a straight prefill, up to rounding
    # of the different split, and the same greedy tokens here.
    assert done.token_ids == reference
