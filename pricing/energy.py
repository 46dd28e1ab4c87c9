"""Energy meters: how many joules a span of local inference used, and how we know.

Where the OS allows it we read real counters:

* ``rapl`` — Linux powercap (``/sys/class/powercap/intel-rapl:N/energy_uj``),
  one counter per CPU package, in microjoules, wrapping at
  ``max_energy_range_uj``. Recent kernels make it root-only; then it is skipped.
* ``nvml`` — NVIDIA GPUs' total energy counter (millijoules, Volta and newer),
  only when ``pynvml`` is importable.
* ``powermetrics`` — macOS, only when it can run without a password prompt
  (root, or ``sudo -n`` allowed); its samples give the average package power,
  times the span's length.

Counters measure the whole package or GPU, other processes included: on a busy
machine they over-count, which is why the source is recorded next to the joules.
When no counter can be read, energy is the configured ``watts x seconds``, with
source ``configured``. Available counters are summed (CPU package + GPU).
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    seconds: float
    source: str


class Meter(Protocol):
    """A counter that can measure the energy of a span."""

    source: str

    def available(self) -> bool: ...

    def start(self) -> Any: ...

    def stop(self, token: Any, seconds: float) -> float | None: ...


# --- RAPL ---------------------------------------------------------------------


@dataclass(frozen=True)
class RaplZone:
    path: Path
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Counter increase from ``start`` to ``end``, allowing one wraparound."""
    if end >= start:
        return end - start
    return end + max_range - start


class RaplMeter:
    """CPU package energy from Linux powercap counters."""

    source = "rapl"

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self.root = root
        self._zones: list[RaplZone] | None = None

    def zones(self) -> list[RaplZone]:
        if self._zones is None:
            self._zones = self._find_zones()
        return self._zones

    def _find_zones(self) -> list[RaplZone]:
        if not self.root.is_dir():
            return []
        zones: list[RaplZone] = []
        # Sub-zones (intel-rapl:0:0, cores/uncore/dram) are parts of their package:
        # counting them too would double the energy.
        for path in sorted(self.root.iterdir()):
            if not _PACKAGE_ZONE.match(path.name):
                continue
            try:
                name = (path / "name").read_text().strip() if (path / "name").exists() else ""
                if name == "psys":
                    continue  # platform total overlapping the packages
                max_range = int((path / "max_energy_range_uj").read_text().strip())
                zone = RaplZone(path, max_range)
                zone.read_uj()  # unreadable (root-only) counters are not available
            except (OSError, ValueError):
                continue
            zones.append(zone)
        return zones

    def available(self) -> bool:
        return bool(self.zones())

    def start(self) -> list[int]:
        return [zone.read_uj() for zone in self.zones()]

    def stop(self, token: list[int], seconds: float) -> float | None:
        try:
            ends = [zone.read_uj() for zone in self.zones()]
        except (OSError, ValueError):
            return None
        total_uj = sum(
            counter_delta(start, end, zone.max_range_uj)
            for start, end, zone in zip(token, ends, self.zones(), strict=True)
        )
        return total_uj / 1e6


# --- NVML ---------------------------------------------------------------------


class NvmlMeter:
    """NVIDIA GPU energy from NVML's total-energy counters (only if pynvml imports)."""

    source = "nvml"

    def __init__(self) -> None:
        self._handles: list[Any] | None = None
        self._nvml: Any = None

    def _init(self) -> list[Any]:
        if self._handles is not None:
            return self._handles
        self._handles = []
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
            for handle in handles:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self._nvml = pynvml
            self._handles = handles
        except Exception:  # noqa: BLE001 - any NVML failure means "not measurable here"
            self._handles = []
        return self._handles

    def available(self) -> bool:
        return bool(self._init())

    def start(self) -> list[int]:
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._init()]

    def stop(self, token: list[int], seconds: float) -> float | None:
        try:
            ends = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._init()]
        except Exception:  # noqa: BLE001
            return None
        return sum(max(end - start, 0) for start, end in zip(token, ends, strict=True)) / 1e3


# --- powermetrics (macOS) -----------------------------------------------------


def parse_powermetrics(output: bytes) -> list[tuple[float, float]]:
    """``(watts, seconds)`` per sample of ``powermetrics -f plist`` output.

    Samples are NUL-separated plists; the package power is ``combined_power``
    (mW) under ``processor``, else the sum of cpu/gpu/ane power.
    """
    samples: list[tuple[float, float]] = []
    for chunk in output.split(b"\x00"):
        chunk = chunk.strip()
        if not chunk:
            continue
        try:
            data = plistlib.loads(chunk)
        except Exception:  # noqa: BLE001 - a truncated last sample when stopped
            continue
        processor = data.get("processor", {}) if isinstance(data, dict) else {}
        milliwatts = processor.get("combined_power")
        if milliwatts is None:
            parts = [processor.get(k) for k in ("cpu_power", "gpu_power", "ane_power")]
            if all(p is None for p in parts):
                continue
            milliwatts = sum(float(p) for p in parts if p is not None)
        seconds = float(data.get("elapsed_ns", 0)) / 1e9
        samples.append((float(milliwatts) / 1000.0, seconds))
    return samples


class PowermetricsMeter:
    """macOS package power from ``powermetrics``, when it runs without a prompt."""

    source = "powermetrics"

    def __init__(self, interval_ms: int = 200) -> None:
        self.interval_ms = interval_ms
        self._command: list[str] | None = None
        self._checked = False

    def _find_command(self) -> list[str] | None:
        if self._checked:
            return self._command
        self._checked = True
        if sys.platform != "darwin" or shutil.which("powermetrics") is None:
            return None
        base = ["powermetrics", "--samplers", "cpu_power,gpu_power,ane_power"]
        base += ["-i", str(self.interval_ms), "-f", "plist"]
        if os.geteuid() == 0:
            self._command = base
        else:
            try:
                # -n: never prompt; a password prompt would hang a request.
                ok = subprocess.run(
                    ["sudo", "-n", "powermetrics", "-n", "0"],
                    capture_output=True,
                    timeout=5,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                return None
            if ok.returncode == 0:
                self._command = ["sudo", "-n", *base]
        return self._command

    def available(self) -> bool:
        return self._find_command() is not None

    def start(self) -> subprocess.Popen[bytes]:
        command = self._find_command()
        assert command is not None
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def stop(self, token: subprocess.Popen[bytes], seconds: float) -> float | None:
        token.terminate()
        try:
            output, _ = token.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            token.kill()
            output, _ = token.communicate()
        samples = parse_powermetrics(output)
        sampled = sum(s for _, s in samples)
        if sampled <= 0:
            return None
        average_watts = sum(w * s for w, s in samples) / sampled
        return average_watts * seconds


# --- the span context -----------------------------------------------------------


_DEFAULT_METERS: list[Meter] | None = None


def default_meters() -> list[Meter]:
    """The meters this machine offers (probed once per process)."""
    global _DEFAULT_METERS
    if _DEFAULT_METERS is None:
        probes: list[Meter] = [RaplMeter(), NvmlMeter(), PowermetricsMeter()]
        _DEFAULT_METERS = [m for m in probes if m.available()]
    return _DEFAULT_METERS


class EnergyMeter:
    """Measure a span: ``with EnergyMeter(90) as m: ...`` then ``m.reading``.

    ``source="configured"`` skips the counters; ``"auto"`` uses whatever this
    machine offers and falls back to ``configured_watts x seconds``.
    """

    def __init__(
        self,
        configured_watts: float,
        source: str = "auto",
        meters: Sequence[Meter] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.configured_watts = configured_watts
        self.mode = source
        self._meters: Sequence[Meter] | None = meters
        self._clock = clock
        self._started: list[tuple[Meter, Any]] = []
        self._t0 = 0.0
        self.reading: EnergyReading | None = None

    def __enter__(self) -> EnergyMeter:
        self._started = []
        if self.mode != "configured":
            meters = default_meters() if self._meters is None else self._meters
            for meter in meters:
                try:
                    if meter.available():
                        self._started.append((meter, meter.start()))
                except (OSError, ValueError, RuntimeError):
                    continue
        self._t0 = self._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = max(self._clock() - self._t0, 0.0)
        joules = 0.0
        sources: list[str] = []
        for meter, token in self._started:
            try:
                measured = meter.stop(token, seconds)
            except (OSError, ValueError, RuntimeError):
                measured = None
            if measured is not None:
                joules += measured
                sources.append(meter.source)
        if sources:
            self.reading = EnergyReading(joules, seconds, "+".join(sources))
        else:
            self.reading = EnergyReading(self.configured_watts * seconds, seconds, "configured")
