"""What a request on the local engine cost: electricity plus hardware amortization.

Per request (the ledger's view, DESIGN.md "Costs")::

    energy_J      = measured joules, else watts x seconds        (source kept)
    electricity   = energy_J / 3.6e6 x usd_per_kWh
    amortization  = price_usd / (lifetime_years x 365 x hours_per_day x 3600)
                    x seconds x inference_share
    total         = electricity + amortization

i.e. the machine's price is spread over the hours it is expected to serve
inference during its life, and each request pays for the seconds it used.
:meth:`LocalCostModel.usd_per_mtok` is the same at a steady decode speed.
The estimator (:mod:`pricing.estimator`) instead treats the hardware as a fixed
monthly cost (:attr:`LocalCostModel.monthly_hardware_usd`), which is what the
owner pays whether the machine is busy or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pricing.errors import PricingError

JOULES_PER_KWH = 3_600_000.0
SECONDS_PER_YEAR_OF_DAYS = 365.0
MONTHS_PER_YEAR = 12.0
DAYS_PER_MONTH = 365.0 / 12.0


@dataclass(frozen=True)
class LocalCost:
    electricity_usd: float
    amortization_usd: float
    total_usd: float
    energy_j: float
    energy_source: str


@dataclass(frozen=True)
class LocalCostModel:
    """The assumptions behind local cost (``local:`` in the configuration)."""

    watts: float
    electricity_usd_per_kwh: float
    hardware_price_usd: float = 0.0
    lifetime_years: float = 3.0
    hours_per_day: float = 8.0
    inference_share: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "watts": self.watts >= 0,
            "electricity_usd_per_kwh": self.electricity_usd_per_kwh >= 0,
            "hardware_price_usd": self.hardware_price_usd >= 0,
            "lifetime_years": self.lifetime_years > 0,
            "hours_per_day": 0 < self.hours_per_day <= 24,
            "inference_share": 0 <= self.inference_share <= 1,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise PricingError(f"local cost setting {name}={value!r} is out of range")

    @property
    def amortization_usd_per_second(self) -> float:
        serving_seconds = (
            self.lifetime_years * SECONDS_PER_YEAR_OF_DAYS * self.hours_per_day * 3600.0
        )
        return self.hardware_price_usd / serving_seconds * self.inference_share

    @property
    def monthly_hardware_usd(self) -> float:
        """The hardware's share of a month of ownership: price x share / months of life."""
        return (
            self.hardware_price_usd * self.inference_share / (self.lifetime_years * MONTHS_PER_YEAR)
        )

    @property
    def serving_seconds_per_month(self) -> float:
        return self.hours_per_day * 3600.0 * DAYS_PER_MONTH

    def local_cost(
        self, seconds: float, energy_j: float | None = None, energy_source: str = "configured"
    ) -> LocalCost:
        """The cost of ``seconds`` of inference; ``energy_j`` when it was measured."""
        if not math.isfinite(seconds) or seconds < 0:
            raise PricingError(f"a local request cannot last {seconds!r} seconds")
        if energy_j is None:
            energy_j = self.watts * seconds
            energy_source = "configured"
        elif not math.isfinite(energy_j) or energy_j < 0:
            raise PricingError(f"measured energy {energy_j!r} J is not a valid amount")
        electricity = energy_j / JOULES_PER_KWH * self.electricity_usd_per_kwh
        amortization = self.amortization_usd_per_second * seconds
        return LocalCost(
            electricity_usd=electricity,
            amortization_usd=amortization,
            total_usd=electricity + amortization,
            energy_j=energy_j,
            energy_source=energy_source,
        )

    def energy_usd_per_mtok(self, tokens_per_second: float) -> float:
        """Electricity per 1M tokens at a steady speed: watts x usd_per_kWh / (3.6 x tok/s)."""
        _check_speed(tokens_per_second)
        return self.watts * 1e6 / tokens_per_second / JOULES_PER_KWH * self.electricity_usd_per_kwh

    def usd_per_mtok(self, tokens_per_second: float) -> float:
        """Effective USD per 1M output tokens at ``tokens_per_second`` (energy + amortization)."""
        _check_speed(tokens_per_second)
        amortization = self.amortization_usd_per_second * 1e6 / tokens_per_second
        return self.energy_usd_per_mtok(tokens_per_second) + amortization


def local_cost(
    model: LocalCostModel,
    seconds: float,
    energy_j: float | None = None,
    energy_source: str = "configured",
) -> LocalCost:
    """Function form of :meth:`LocalCostModel.local_cost`."""
    return model.local_cost(seconds, energy_j, energy_source)


def _check_speed(tokens_per_second: float) -> None:
    if not math.isfinite(tokens_per_second) or tokens_per_second <= 0:
        raise PricingError(f"tokens per second must be > 0, got {tokens_per_second!r}")
