"""LiteLLM's bundled model price map, read offline as plain JSON.

Importing litellm is slow and, unless ``LITELLM_LOCAL_MODEL_COST_MAP=True``,
fetches the map over the network; we only need the JSON file it ships
(``model_prices_and_context_window_backup.json``), so we locate the installed
package with ``importlib.util.find_spec`` and read that file directly. Nothing
is fetched and litellm is never imported.

This module is the one place that reads the map: its prices
(:func:`load_entries`, for :class:`pricing.catalog.PriceCatalog`) and its
context windows (:func:`context_limits_index`, which the catalog's
``context_limits`` looks names up in).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricing.errors import PricingError
from pricing.rates import Tier

# The map's per-token keys -> our rate keys. Batch, flex, priority and similar service
# levels are other products (a request does not say which it used) and are not read.
_BASE_KEYS: tuple[tuple[str, str], ...] = (
    ("input", "input_cost_per_token"),
    ("output", "output_cost_per_token"),
    ("cached_input", "cache_read_input_token_cost"),
    ("cache_write", "cache_creation_input_token_cost"),
    ("cache_write_1h", "cache_creation_input_token_cost_above_1hr"),
    ("reasoning", "output_cost_per_reasoning_token"),
)
# ``input_cost_per_token_above_200k_tokens``: a prompt-size tier (also for the cache
# keys, and the 1-hour write: ``cache_creation_input_token_cost_above_1hr_above_200k_tokens``).
_TIER_KEY = re.compile(r"^(?P<base>[a-z_]+?(?:_above_1hr)?)_above_(?P<n>\d+)k_tokens$")

MAP_FILE = "model_prices_and_context_window_backup.json"

# LiteLLM prices per token; sheets and reports use USD per 1M tokens.
_PER_M = 1_000_000


@dataclass(frozen=True)
class MapEntry:
    """One priced model of the map, under its canonical ``provider/model`` name."""

    canonical: str
    key: str
    provider: str
    mode: str
    rates: dict[str, Any]


def map_path() -> Path | None:
    """The bundled map of the installed litellm, or None when litellm is absent."""
    # Make sure that if anything else in this process does import litellm, it
    # stays offline too.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MAP_FILE
        if candidate.is_file():
            return candidate
    return None


def map_version() -> str:
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def canonical_name(key: str, provider: str) -> str:
    """``claude-opus-4-7`` (anthropic) -> ``anthropic/claude-opus-4-7``.

    Keys that already carry a route prefix (``gemini/...``, ``bedrock/...``,
    ``openrouter/...``) are LiteLLM model ids as they stand and are kept.
    """
    if "/" in key or not provider:
        return key
    return f"{provider}/{key}"


def read_map(path: Path) -> dict[str, Any]:
    """The map's JSON object: model key -> what the map says of it."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PricingError(f"cannot read LiteLLM's price map {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise PricingError(f"LiteLLM's price map {path} is not a JSON object")
    return raw


def load_entries(path: Path) -> list[MapEntry]:
    raw = read_map(path)
    entries: list[MapEntry] = []
    for key, info in raw.items():
        if key == "sample_spec" or not isinstance(info, dict):
            continue
        rates = _rates(info)
        if rates is None:
            continue
        provider = str(info.get("litellm_provider") or "")
        entries.append(
            MapEntry(
                canonical=canonical_name(key, provider),
                key=key,
                provider=provider,
                mode=str(info.get("mode") or ""),
                rates=rates,
            )
        )
    return entries


# (max input tokens, max output tokens or None): what the map says a model accepts.
ContextLimit = tuple[int, int | None]

_LIMITS_LOCK = threading.Lock()
_LIMITS: dict[str, dict[str, ContextLimit]] = {}


def context_limits_index(path: Path) -> dict[str, ContextLimit]:
    """Lower-cased map key and ``provider/key`` -> the model's (window, output limit).

    Every entry with a ``max_input_tokens`` counts, priced or not. Read once per map
    file and kept (a session asks on every request). An unreadable map gives an empty
    index: a window is then unknown, and the price catalog reports the broken map.
    """
    with _LIMITS_LOCK:
        cached = _LIMITS.get(str(path))
        if cached is not None:
            return cached
        try:
            raw = read_map(path)
        except PricingError:
            raw = {}
        index: dict[str, ContextLimit] = {}
        for key, info in raw.items():
            if not isinstance(info, dict):
                continue
            window, output = info.get("max_input_tokens"), info.get("max_output_tokens")
            if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
                continue
            has_output = isinstance(output, int) and not isinstance(output, bool) and output > 0
            limit: ContextLimit = (window, output if has_output else None)
            index.setdefault(key.lower(), limit)
            provider = str(info.get("litellm_provider") or "")
            index.setdefault(canonical_name(key, provider).lower(), limit)
        _LIMITS[str(path)] = index
        return index


def _rates(info: dict[str, Any]) -> dict[str, Any] | None:
    """Per-1M rates of one entry (with its prompt-size ``tiers``); None for models not
    priced per token."""
    input_rate = _per_m(info.get("input_cost_per_token"))
    if input_rate is None:
        return None
    output_rate = _per_m(info.get("output_cost_per_token"))
    cached = _per_m(info.get("cache_read_input_token_cost"))
    if cached is None:
        cached = _per_m(info.get("input_cost_per_token_cache_hit"))
    cache_write = _per_m(info.get("cache_creation_input_token_cost"))
    if cache_write == 0.0 and input_rate > 0:
        # Some entries (DeepSeek's) write 0 where the provider has no cache-write
        # charge at all: the tokens are billed as ordinary input, not free.
        cache_write = None
    return {
        "input": input_rate,
        # Embedding and similar models have no output; their output rate is a real 0.
        "output": 0.0 if output_rate is None else output_rate,
        "cached_input": cached,
        "cache_write": cache_write,
        "cache_write_1h": _per_m(info.get("cache_creation_input_token_cost_above_1hr")),
        "reasoning": _per_m(info.get("output_cost_per_reasoning_token")),
        "tiers": _tiers(info),
    }


def _tiers(info: dict[str, Any]) -> tuple[Tier, ...]:
    """The entry's ``*_above_Nk_tokens`` rates, one :class:`Tier` per threshold."""
    by_key = {field: ours for ours, field in _BASE_KEYS}
    found: dict[int, dict[str, float]] = {}
    for key, value in info.items():
        match = _TIER_KEY.match(key)
        if match is None or match["base"] not in by_key:
            continue
        rate = _per_m(value)
        if rate is not None:
            found.setdefault(int(match["n"]) * 1000, {})[by_key[match["base"]]] = rate
    return tuple(
        Tier(above, tuple(sorted(values.items()))) for above, values in sorted(found.items())
    )


def _per_m(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value < 0:
        return None
    # Round away binary noise (3e-07 * 1e6 = 0.29999999999999993).
    return round(float(value) * _PER_M, 9)
