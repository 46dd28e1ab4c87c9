"""The estimator: monthly costs, the local profile, and crossovers against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pricing.catalog import PriceCatalog
from pricing.errors import PricingError
from pricing.estimate_render import render_estimate
from pricing.estimator import crossover_tokens, estimate, local_estimate, usage_from_profile
from pricing.local_cost import LocalCostModel
from pricing.profiles import LocalProfile, load_profile
from pricing.rates import Rates
from pricing.usage import TokenUsage

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "configs" / "local_profiles"

# 100 W at 25 tok/s, $0.20/kWh, $3,600 over 3 years, 8 h a day, all for inference:
#   H = 3600 / 36 = $100 a month fixed;
#   energy per 1M output tokens = 100 W x 40,000 s = 4 MJ = 1.111 kWh = $0.2222;
#   capacity = 25 tok/s x 8 h x 3600 s x 365/12 days = 21,900,000 tokens a month.
BOX = LocalProfile(
    name="box",
    tokens_per_second=25.0,
    cost_model=LocalCostModel(
        watts=100,
        electricity_usd_per_kwh=0.20,
        hardware_price_usd=3600,
        lifetime_years=3,
        hours_per_day=8,
        inference_share=1.0,
    ),
)
E = 100 * 1e6 / 25 / 3.6e6 * 0.20


def catalog(**models: Rates) -> PriceCatalog:
    return PriceCatalog({r.model: r for r in models.values()})


def test_local_month_by_hand() -> None:
    local = local_estimate(TokenUsage(output_tokens=2_000_000), BOX)
    assert local.hardware_usd == pytest.approx(100.0)
    assert local.electricity_usd == pytest.approx(2 * E)
    assert local.monthly_usd == pytest.approx(100.0 + 2 * E)
    assert local.capacity_output_tokens == pytest.approx(21_900_000)
    assert local.energy_usd_per_mtok == pytest.approx(0.2222222, rel=1e-6)


def test_crossover_against_hand_computed_values() -> None:
    # $10 per 1M out: T* = 100 x 1e6 / (10 - 0.2222) = 10,227,273 tokens a month.
    assert crossover_tokens(100.0, 10.0, E, 21_900_000) == 10_227_273
    # $1 per 1M: T* = 128.6M, beyond what the box can make in a month: never.
    assert crossover_tokens(100.0, 1.0, E, 21_900_000) is None
    # Cheaper per token than our electricity: never, whatever the volume.
    assert crossover_tokens(100.0, 0.2, E) is None


def test_estimate_rows_sorted_with_local_and_crossovers() -> None:
    cat = catalog(
        big=Rates("acme/big", input=3.0, output=10.0, cached_input=0.3),
        small=Rates("acme/small", input=0.1, output=0.2),
    )
    usage = usage_from_profile(output_tokens=2_000_000, input_tokens=4_000_000, cached_share=0.5)
    result = estimate(cat, ["acme/big", "acme/small", "acme/nope"], usage, BOX)
    by_model = {r.model: r for r in result.rows}
    big = by_model["acme/big"]
    # 2M uncached x $3 + 2M cached x $0.30 + 2M out x $10 = $26.60 a month; $13.30 per 1M out.
    assert big.monthly_usd == pytest.approx(26.6)
    assert big.usd_per_mtok == pytest.approx(13.3)
    assert big.crossover_tokens_per_month == pytest.approx(100e6 / (13.3 - E), abs=1)
    assert by_model["acme/small"].crossover == "never"
    assert by_model["acme/nope"].monthly_usd is None  # unpriced, never $0
    assert result.unknown[0][0] == "acme/nope"
    assert [r.model for r in result.rows] == ["acme/small", "acme/big", "local:box", "acme/nope"]
    assert by_model["local:box"].monthly_usd == pytest.approx(100 + 2 * E)


def test_prefill_speed_charges_prompt_time_when_given() -> None:
    with_prefill = LocalProfile("p", 25.0, BOX.cost_model, prefill_tokens_per_second=500.0)
    usage = TokenUsage(input_tokens=1_000_000, cached_input_tokens=0, output_tokens=1_000_000)
    local = local_estimate(usage, with_prefill)
    assert local.seconds == pytest.approx(40_000 + 2_000)
    assert local_estimate(usage, BOX).seconds == pytest.approx(40_000)


def test_json_shape() -> None:
    cat = catalog(big=Rates("acme/big", input=3.0, output=10.0))
    data = json.loads(
        render_estimate(estimate(cat, ["acme/big"], usage_from_profile(10**6), BOX), "json")
    )
    row = data["rows"][0]
    assert {"model", "kind", "monthly_usd", "usd_per_mtok", "crossover_tokens_per_month"} <= set(
        row
    )
    assert isinstance(row["monthly_usd"], float)
    assert data["assumptions"]["local_profile"]["tokens_per_second"] == 25.0
    assert data["assumptions"]["usage_per_month"]["output_tokens"] == 10**6


def test_named_profiles_carry_their_sources() -> None:
    profile = load_profile("m3-max-q2", PROFILES)
    assert profile.tokens_per_second == 26.7
    assert "measured" in profile.sources["tokens_per_second"]
    assert all("assumption" in profile.sources[k] for k in ("watts", "hardware.price_usd"))
    with pytest.raises(PricingError, match="m3-max-q2"):
        load_profile("m5-mythical", PROFILES)


def test_usage_profile_checks_its_inputs() -> None:
    with pytest.raises(PricingError, match="output-tokens"):
        usage_from_profile(0)
    with pytest.raises(PricingError, match="cached-share"):
        usage_from_profile(10, 10, 1.5)
    assert usage_from_profile(10, 1000, 0.25).cached_input_tokens == 250
