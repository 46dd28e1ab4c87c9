"""The KV fingerprint changes with everything that changes a decode state's numerics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from local_engine.checkpoint.fingerprint import fingerprint_of
from local_engine.model.graph_options import GraphOptions


@dataclass
class FakeModel:
    """Only what :func:`fingerprint_of` reads."""

    compiled: bool | str = "decode"
    fused_hc: bool = False
    dtype: str = "mlx.core.float32"
    graph: GraphOptions = GraphOptions()


def test_compile_mode_and_fused_kernels_change_the_fingerprint(official_tiny: Path) -> None:
    base = fingerprint_of(FakeModel(), official_tiny)
    assert fingerprint_of(FakeModel(), official_tiny) == base  # stable
    assert fingerprint_of(FakeModel(compiled=True), official_tiny) != base
    assert fingerprint_of(FakeModel(compiled=False), official_tiny) != base
    assert fingerprint_of(FakeModel(fused_hc=True), official_tiny) != base
    assert fingerprint_of(FakeModel(dtype="mlx.core.bfloat16"), official_tiny) != base


def test_the_weights_change_the_fingerprint(official_tiny: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(official_tiny, tmp_path / "copy"))
    assert fingerprint_of(FakeModel(), copy) == fingerprint_of(FakeModel(), official_tiny)
    shard = sorted(copy.glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # the last byte is always sampled
    shard.write_bytes(bytes(data))
    assert fingerprint_of(FakeModel(), copy) != fingerprint_of(FakeModel(), official_tiny)
