"""Energy meters: RAPL counters (wraparound included), powermetrics samples, the fallback."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from pricing.energy import EnergyMeter, RaplMeter, counter_delta, parse_powermetrics


def make_zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


class StepClock:
    """A clock that advances by fixed steps, so span lengths are exact."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def test_counter_delta_handles_one_wraparound() -> None:
    assert counter_delta(100, 350, 1_000) == 250
    assert counter_delta(900, 150, 1_000) == 250  # 100 to the wrap, 150 after it


def test_rapl_sums_packages_skips_subzones_and_handles_wrap(tmp_path: Path) -> None:
    pkg0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, 1_000_000_000)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000, 1_000_000_000)
    core = make_zone(tmp_path, "intel-rapl:0:0", "core", 1, 1_000_000_000)
    meter = RaplMeter(tmp_path)
    assert meter.available()
    assert [z.path.name for z in meter.zones()] == ["intel-rapl:0", "intel-rapl:1"]
    with EnergyMeter(90, meters=[meter], clock=StepClock(2.0)) as span:
        # package 0 wraps: 1,000,000 uJ to the top, then 2,000,000 more; package 1 +3 J.
        (pkg0 / "energy_uj").write_text("2000000\n")
        (pkg1 / "energy_uj").write_text("8000000\n")
        (core / "energy_uj").write_text("999999999\n")  # a sub-zone: must not count
    assert span.reading is not None
    assert span.reading.source == "rapl"
    assert span.reading.joules == pytest.approx(3.0 + 3.0)
    assert span.reading.seconds == pytest.approx(2.0)


def test_unreadable_or_missing_counters_fall_back_to_configured_watts(tmp_path: Path) -> None:
    meter = RaplMeter(tmp_path / "no-powercap-here")
    assert not meter.available()
    with EnergyMeter(90, meters=[meter], clock=StepClock(1.5)) as span:
        pass
    assert span.reading is not None
    assert (span.reading.source, span.reading.joules) == ("configured", pytest.approx(135.0))


def test_configured_mode_never_reads_counters(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 0, 10**12)
    with EnergyMeter(
        50, source="configured", meters=[RaplMeter(tmp_path)], clock=StepClock(2.0)
    ) as span:
        pass
    assert span.reading is not None
    assert (span.reading.source, span.reading.joules) == ("configured", pytest.approx(100.0))


def test_powermetrics_samples_give_average_power() -> None:
    samples = [
        {"elapsed_ns": 200_000_000, "processor": {"combined_power": 30_000.0}},
        {"elapsed_ns": 200_000_000, "processor": {"cpu_power": 5_000.0, "gpu_power": 45_000.0}},
    ]
    output = b"\x00".join(plistlib.dumps(s) for s in samples) + b"\x00<?xml trunc"
    assert parse_powermetrics(output) == [(30.0, 0.2), (50.0, 0.2)]
