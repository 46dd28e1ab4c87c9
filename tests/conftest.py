"""Suite-wide fixtures: every test runs with its own ds4router home, offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests are derandomized so CI is reproducible; DS4_HYPOTHESIS_RANDOM=1 explores anew.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile("explore" if os.environ.get("DS4_HYPOTHESIS_RANDOM") else "reproducible")

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
