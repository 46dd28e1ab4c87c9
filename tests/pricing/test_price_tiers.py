"""Prompt-size tiers and 1-hour cache writes: LiteLLM's ``*_above_Nk_tokens`` keys and
sheets' ``tiers``, priced per request and kept on the ledger row."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pricing.catalog import PriceCatalog
from pricing.cost import price_request
from pricing.errors import PricingError
from pricing.ledger import Ledger, LedgerRow
from pricing.litellm_map import map_path
from pricing.usage import TokenUsage

REPO = Path(__file__).resolve().parents[2]
SHEETS = REPO / "configs" / "prices"
T = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC)


def _map_entry(key: str) -> dict[str, float]:
    path = map_path()
    assert path is not None
    entry: dict[str, float] = json.loads(path.read_text())[key]
    return entry


def test_a_300k_token_prompt_is_priced_at_the_maps_tier_above_200k() -> None:
    entry = _map_entry("gemini/gemini-2.5-pro")
    catalog = PriceCatalog.load(None)
    usage = TokenUsage(input_tokens=300_000, output_tokens=2_000)
    cost = catalog.price("gemini/gemini-2.5-pro", usage, T)
    expected = (
        300_000 * entry["input_cost_per_token_above_200k_tokens"]
        + 2_000 * entry["output_cost_per_token_above_200k_tokens"]
    )
    assert cost.tier == "above_200k_tokens"
    assert cost.total_usd == pytest.approx(expected)
    # The tier is dearer than the base rate it replaces, for the whole request.
    base = 300_000 * entry["input_cost_per_token"] + 2_000 * entry["output_cost_per_token"]
    assert cost.total_usd > base
    short = catalog.price("gemini/gemini-2.5-pro", TokenUsage(100_000, 0, 0, 2_000, 0), T)
    assert short.tier is None
    assert short.total_usd == pytest.approx(
        100_000 * entry["input_cost_per_token"] + 2_000 * entry["output_cost_per_token"]
    )


def test_a_months_sum_is_not_tiered_as_if_it_were_one_prompt() -> None:
    catalog = PriceCatalog.load(None)
    month = TokenUsage(input_tokens=50_000_000, output_tokens=1_000_000)
    cost = catalog.price("gemini/gemini-2.5-pro", month, one_request=False)
    assert cost.tier is None


def test_a_sheet_tier_replaces_only_the_rates_it_names(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "as_of: 2026-11-01\nsource: test\nmodels:\n"
        "  acme/long: {input: 3, cached_input: 0.3, output: 15,\n"
        "    tiers: [{above: 200000, input: 6, output: 22.5}, {above: 500000, input: 9}]}\n"
    )
    catalog = PriceCatalog.load(tmp_path, use_litellm=False)
    usage = TokenUsage(input_tokens=300_000, cached_input_tokens=100_000, output_tokens=1_000)
    cost = catalog.price("acme/long", usage, T)
    assert cost.tier == "above_200k_tokens"
    assert cost.total_usd == pytest.approx((200_000 * 6 + 100_000 * 0.3 + 1_000 * 22.5) / 1e6)
    biggest = catalog.price("acme/long", TokenUsage(600_000, 0, 0, 1_000, 0), T)
    assert biggest.tier == "above_500k_tokens"
    assert biggest.total_usd == pytest.approx((600_000 * 9 + 1_000 * 15) / 1e6)


def test_one_hour_cache_writes_are_billed_at_their_own_rate() -> None:
    entry = _map_entry("claude-sonnet-4-5")
    catalog = PriceCatalog.load(None)
    usage = TokenUsage.from_anthropic(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 3_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1_000,
                "ephemeral_1h_input_tokens": 2_000,
            },
            "output_tokens": 100,
        }
    )
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (3_000, 2_000)
    cost = catalog.price("anthropic/claude-sonnet-4-5", usage, T)
    assert cost.cache_write_usd == pytest.approx(
        1_000 * entry["cache_creation_input_token_cost"]
        + 2_000 * entry["cache_creation_input_token_cost_above_1hr"]
    )


def test_the_ledger_row_keeps_the_tier_and_the_rates_that_applied(tmp_path: Path) -> None:
    catalog = PriceCatalog.load(None)
    cost = catalog.price("gemini/gemini-2.5-pro", TokenUsage(300_000, 0, 0, 10, 0), T)
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.record(LedgerRow.for_cloud(time=T, project="p", cost=cost))
        (row,) = ledger.month_rows("2026-11")
    assert row.price_tier == "above_200k_tokens"
    assert row.rate_input == pytest.approx(
        _map_entry("gemini/gemini-2.5-pro")["input_cost_per_token_above_200k_tokens"] * 1e6
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{input: 1, output: 1, tiers: {above: 5}}", "tiers: a list"),
        ("{input: 1, output: 1, tiers: [{above: 0, input: 2}]}", r"tiers\[0\].above"),
        ("{input: 1, output: 1, tiers: [{above: 9, inptu: 2}]}", "unknown key 'inptu'"),
    ],
)
def test_a_bad_tier_names_the_file_line_and_key(tmp_path: Path, entry: str, message: str) -> None:
    sheet = tmp_path / "bad.yaml"
    sheet.write_text(f"as_of: 2026-11-01\nsource: test\nmodels:\n  a/b: {entry}\n")
    with pytest.raises(PricingError, match=message) as info:
        PriceCatalog.load(tmp_path, use_litellm=False)
    assert str(info.value).startswith(f"{sheet}:4: ")


def test_rates_without_a_tier_price_a_long_prompt_at_the_base_rate() -> None:
    catalog = PriceCatalog.load(SHEETS)
    rates = catalog.rates("deepseek/deepseek-v4-flash")
    assert rates is not None and not rates.tiers
    cost = price_request(TokenUsage(900_000, 0, 0, 0, 0), rates)
    assert cost.tier is None and cost.total_usd == pytest.approx(0.9 * rates.input)
