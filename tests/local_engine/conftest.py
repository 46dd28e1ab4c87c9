"""Shared fixtures for the engine tests: one tiny official-layout checkpoint per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_engine.checkpoint.random_weights import dequantize_checkpoint, write_random_checkpoint

# Raised above the tiny preset's 16 so that top-k selects every compressed row in the
# sequences these tests use (ReLU-zero ties make partial selections order-dependent).
WIDE_TOPK = 1024


@pytest.fixture(scope="session")
def official_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset in the official layout: FP8 projections, FP4 experts, bf16 rest."""
    return write_random_checkpoint(
        tmp_path_factory.mktemp("official_tiny"), preset="tiny", seed=7, index_topk=WIDE_TOPK
    )


@pytest.fixture(scope="session")
def official_tiny_twin(official_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights decoded to float32 (same names)."""
    return dequantize_checkpoint(official_tiny, tmp_path_factory.mktemp("official_tiny_f32"))
