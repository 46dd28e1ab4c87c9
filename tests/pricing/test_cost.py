"""Request cost: cached tokens priced once, reasoning never twice, unpriced is None."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.cost import price_request
from pricing.errors import PricingError
from pricing.rates import Rates
from pricing.usage import TokenUsage

# USD per 1M tokens: round numbers so the expected costs are easy to check by hand.
OPUS = Rates(
    "anthropic/claude-opus-4-7",
    input=5.0,
    output=25.0,
    cached_input=0.5,
    cache_write=6.25,
    sheet="2026-11",
    as_of="2026-11-15",
)


def test_cached_tokens_are_priced_once_at_the_cached_rate() -> None:
    # 10,000 prompt tokens of which 8,000 came from the cache, 1,000 written to it.
    usage = TokenUsage(
        input_tokens=10_000,
        cached_input_tokens=8_000,
        cache_write_tokens=1_000,
        output_tokens=2_000,
    )
    cost = price_request(usage, OPUS)
    # 1,000 plain x $5 + 8,000 x $0.50 + 1,000 x $6.25 + 2,000 x $25, per 1M:
    assert cost.input_usd == pytest.approx(0.005)
    assert cost.cached_input_usd == pytest.approx(0.004)
    assert cost.cache_write_usd == pytest.approx(0.00625)
    assert cost.output_usd == pytest.approx(0.05)
    assert cost.total_usd == pytest.approx(0.06525)
    # Billing all 10,000 at the input rate and the cached ones again would be $0.109.
    assert cost.total_usd < 0.109


def test_cost_keeps_the_sheet_and_rates_it_used() -> None:
    cost = price_request(TokenUsage(input_tokens=1, output_tokens=1), OPUS)
    assert cost.rates == OPUS
    assert (cost.sheet, cost.as_of) == ("2026-11", "2026-11-15")


def test_reasoning_uses_its_own_rate_and_is_not_counted_twice() -> None:
    rates = Rates("m", input=1.0, output=10.0, reasoning=4.0)
    usage = TokenUsage(input_tokens=0, output_tokens=1_000, reasoning_tokens=600)
    cost = price_request(usage, rates)
    assert cost.output_usd == pytest.approx(400 * 10.0 / 1e6)
    assert cost.reasoning_usd == pytest.approx(600 * 4.0 / 1e6)
    assert cost.total_usd == pytest.approx((4_000 + 2_400) / 1e6)


def test_reasoning_without_its_own_rate_costs_what_output_costs() -> None:
    rates = Rates("m", input=1.0, output=10.0)
    with_reasoning = price_request(TokenUsage(output_tokens=1_000, reasoning_tokens=900), rates)
    plain = price_request(TokenUsage(output_tokens=1_000), rates)
    assert with_reasoning.total_usd == pytest.approx(plain.total_usd)


def test_no_cached_rate_means_the_input_rate() -> None:
    rates = Rates("m", input=2.0, output=8.0)
    cached = price_request(TokenUsage(input_tokens=1_000, cached_input_tokens=1_000), rates)
    assert cached.total_usd == pytest.approx(0.002)


def test_unpriced_model_has_no_cost_never_zero() -> None:
    cost = price_request(TokenUsage(input_tokens=500, output_tokens=50), None, model="acme/mystery")
    assert cost.model == "acme/mystery"
    assert not cost.priced
    assert cost.total_usd is None
    assert cost.input_usd is None and cost.output_usd is None
    assert cost.sheet is None


def test_usage_rejects_cached_tokens_outside_the_prompt() -> None:
    with pytest.raises(PricingError, match="exceed input_tokens"):
        TokenUsage(input_tokens=100, cached_input_tokens=101)
    with pytest.raises(PricingError, match="include the reasoning"):
        TokenUsage(output_tokens=10, reasoning_tokens=11)
    with pytest.raises(PricingError, match=">= 0"):
        TokenUsage(input_tokens=-1)


def test_openai_usage_counts_cached_inside_prompt_tokens() -> None:
    usage = TokenUsage.from_openai(
        {
            "prompt_tokens": 1_200,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1_000},
            "completion_tokens_details": {"reasoning_tokens": 120},
        }
    )
    assert usage == TokenUsage(1_200, 1_000, 0, 300, 120)
    assert usage.uncached_input_tokens == 200
    assert usage.visible_output_tokens == 180


def test_anthropic_usage_adds_cache_reads_and_writes_to_the_prompt() -> None:
    usage = TokenUsage.from_anthropic(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 100,
            "output_tokens": 70,
        }
    )
    assert usage == TokenUsage(1_050, 900, 100, 70, 0)
    assert price_request(usage, OPUS).total_usd == pytest.approx(
        (50 * 5.0 + 900 * 0.5 + 100 * 6.25 + 70 * 25.0) / 1e6
    )


def test_separately_reported_reasoning_is_folded_into_output() -> None:
    usage = TokenUsage.separate_reasoning(input_tokens=10, output_tokens=40, reasoning_tokens=60)
    assert (usage.output_tokens, usage.reasoning_tokens, usage.visible_output_tokens) == (
        100,
        60,
        40,
    )


counts = st.integers(min_value=0, max_value=5_000_000)


@given(counts, counts, counts, counts, counts)
def test_total_is_the_sum_of_parts_and_caching_never_costs_more(
    plain: int, cached: int, written: int, visible: int, reasoning: int
) -> None:
    usage = TokenUsage(plain + cached + written, cached, written, visible + reasoning, reasoning)
    cost = price_request(usage, OPUS)
    parts = (
        cost.input_usd,
        cost.cached_input_usd,
        cost.cache_write_usd,
        cost.output_usd,
        cost.reasoning_usd,
    )
    assert cost.total_usd == pytest.approx(sum(p or 0.0 for p in parts))
    # The same prompt without cache reads costs at least as much (cached rate < input rate).
    uncached = TokenUsage(usage.input_tokens, 0, written, usage.output_tokens, reasoning)
    assert price_request(uncached, OPUS).total_usd >= cost.total_usd - 1e-12
