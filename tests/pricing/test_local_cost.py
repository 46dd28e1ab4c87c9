"""Local cost: electricity plus amortization, each kept, from measured or configured energy."""

from __future__ import annotations

import pytest

from pricing.errors import PricingError
from pricing.local_cost import LocalCostModel

# $4,800 over 3 years of 8-hour days: 4800 / (3 x 365 x 8 x 3600) = $0.000152207 a second.
MACHINE = LocalCostModel(
    watts=90,
    electricity_usd_per_kwh=0.17,
    hardware_price_usd=4800,
    lifetime_years=3,
    hours_per_day=8,
    inference_share=1.0,
)


def test_configured_watts_times_seconds_when_nothing_was_measured() -> None:
    cost = MACHINE.local_cost(40.0)
    assert cost.energy_source == "configured"
    assert cost.energy_j == pytest.approx(3_600.0)  # 90 W x 40 s
    assert cost.electricity_usd == pytest.approx(0.001 * 0.17)  # 3,600 J = 0.001 kWh
    assert cost.amortization_usd == pytest.approx(40 * 4800 / (3 * 365 * 8 * 3600))
    assert cost.total_usd == pytest.approx(cost.electricity_usd + cost.amortization_usd)


def test_measured_energy_and_its_source_are_kept() -> None:
    cost = MACHINE.local_cost(40.0, energy_j=7_200.0, energy_source="rapl")
    assert (cost.energy_j, cost.energy_source) == (7_200.0, "rapl")
    assert cost.electricity_usd == pytest.approx(0.002 * 0.17)


def test_inference_share_scales_only_the_hardware_part() -> None:
    half = LocalCostModel(90, 0.17, 4800, 3, 8, inference_share=0.5)
    assert half.local_cost(10).amortization_usd == pytest.approx(
        MACHINE.local_cost(10).amortization_usd / 2
    )
    assert half.local_cost(10).electricity_usd == pytest.approx(
        MACHINE.local_cost(10).electricity_usd
    )


def test_usd_per_million_tokens_at_a_steady_speed() -> None:
    # 1M tokens at 25 tok/s = 40,000 s: 3.6 MJ = 1 kWh = $0.17, plus 40,000 s of hardware.
    assert MACHINE.usd_per_mtok(25.0) == pytest.approx(
        0.17 * 1.0 + 40_000 * 4800 / (3 * 365 * 8 * 3600)
    )
    assert MACHINE.monthly_hardware_usd == pytest.approx(4800 / 36)


@pytest.mark.parametrize(
    "kwargs",
    [{"watts": -1}, {"hours_per_day": 25}, {"inference_share": 1.5}, {"lifetime_years": 0}],
)
def test_impossible_settings_are_refused(kwargs: dict[str, float]) -> None:
    base = {"watts": 90, "electricity_usd_per_kwh": 0.17}
    with pytest.raises(PricingError, match="out of range"):
        LocalCostModel(**{**base, **kwargs})  # type: ignore[arg-type]
