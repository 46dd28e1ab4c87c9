"""The catalog's context windows: what LiteLLM's bundled map says, through the catalog's names.

Expected values are read from the map file here, with plain ``json``, not through
:mod:`pricing.litellm_map`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pricing.catalog import PriceCatalog
from pricing.litellm_map import context_limits_index, map_path

SHEETS = Path(__file__).resolve().parents[2] / "configs" / "prices"


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.load(SHEETS)


def map_entry(key: str) -> dict[str, Any]:
    path = map_path()
    assert path is not None, "litellm's bundled map must be installed"
    entry: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))[key]
    return entry


def test_a_window_is_the_maps_input_and_output_limits(catalog: PriceCatalog) -> None:
    entry = map_entry("gpt-4.1")
    expected = (entry["max_input_tokens"], entry["max_output_tokens"])
    # The map's key, its provider-prefixed name, any case, a route target's spelling.
    for name in ("gpt-4.1", "openai/gpt-4.1", "OpenAI/GPT-4.1", "cloud:openai/gpt-4.1"):
        assert catalog.context_limits(name) == expected, name


def test_aliases_and_provider_spellings_resolve_to_the_maps_model(catalog: PriceCatalog) -> None:
    entry = map_entry("claude-opus-4-7")
    expected = (entry["max_input_tokens"], entry["max_output_tokens"])
    # "claude-opus" is an alias of the dated price sheet, not a name the map holds...
    assert catalog.resolve("claude-opus") == "anthropic/claude-opus-4-7"
    assert PriceCatalog({}).context_limits("claude-opus") is None
    # ...so only a catalog that knows the alias finds its window.
    assert catalog.context_limits("claude-opus") == expected
    assert catalog.context_limits("claude/claude-opus-4-7") == expected


def test_unknown_models_have_no_window(catalog: PriceCatalog) -> None:
    assert catalog.context_limits("openai/team-gateway") is None
    assert catalog.context_limits("") is None


def test_the_index_keeps_models_without_a_price_and_skips_broken_limits(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(
        json.dumps(
            {
                "priced": {"litellm_provider": "acme", "max_input_tokens": 1000,
                           "max_output_tokens": 100, "input_cost_per_token": 1e-6},
                "free": {"litellm_provider": "acme", "max_input_tokens": 2000},
                "text-window": {"litellm_provider": "acme", "max_input_tokens": "2000"},
                "no-window": {"litellm_provider": "acme", "max_output_tokens": 10},
                "bool-output": {"litellm_provider": "acme", "max_input_tokens": 10,
                                "max_output_tokens": True},
            }
        )
    )  # fmt: skip
    index = context_limits_index(path)
    assert index == {
        "priced": (1000, 100),
        "acme/priced": (1000, 100),
        "free": (2000, None),
        "acme/free": (2000, None),
        "bool-output": (10, None),
        "acme/bool-output": (10, None),
    }
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert context_limits_index(broken) == {}
