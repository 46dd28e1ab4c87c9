"""Suite-wide fixtures: every test runs with its own ds4router home, offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# LiteLLM fetches its price map over the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def ds4router_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Config, data and cache dirs under a fresh temporary directory."""
    home = tmp_path_factory.mktemp("ds4home")
    monkeypatch.setenv("DS4ROUTER_HOME", str(home))
    monkeypatch.delenv("DS4ROUTER_DB", raising=False)
    yield home
