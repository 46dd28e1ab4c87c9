"""Local hardware profiles for the estimator: ``configs/local_profiles/*.yaml``.

```yaml
name: m3-max-q2
description: "..."
tokens_per_second: 26.7            # decode speed
prefill_tokens_per_second: null    # optional; null = prompt time not counted
watts: 90
electricity_usd_per_kwh: 0.17
hardware: {price_usd: 4999, lifetime_years: 3, hours_per_day: 8, inference_share: 1.0}
sources:                           # where each number comes from; say "assumption" when it is one
  tokens_per_second: "..."
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pricing.errors import PricingError
from pricing.local_cost import LocalCostModel
from pricing.textio import read_text_any

_KEYS = {
    "name",
    "description",
    "tokens_per_second",
    "prefill_tokens_per_second",
    "watts",
    "electricity_usd_per_kwh",
    "hardware",
    "sources",
}
_HARDWARE_KEYS = {"price_usd", "lifetime_years", "hours_per_day", "inference_share"}


@dataclass(frozen=True)
class LocalProfile:
    name: str
    tokens_per_second: float
    cost_model: LocalCostModel
    prefill_tokens_per_second: float | None = None
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        m = self.cost_model
        return {
            "name": self.name,
            "description": self.description,
            "tokens_per_second": self.tokens_per_second,
            "prefill_tokens_per_second": self.prefill_tokens_per_second,
            "watts": m.watts,
            "electricity_usd_per_kwh": m.electricity_usd_per_kwh,
            "hardware": {
                "price_usd": m.hardware_price_usd,
                "lifetime_years": m.lifetime_years,
                "hours_per_day": m.hours_per_day,
                "inference_share": m.inference_share,
            },
            "sources": dict(self.sources),
        }


def profile_names(profiles_dir: Path) -> list[str]:
    if not profiles_dir.is_dir():
        return []
    return sorted(p.stem for p in profiles_dir.glob("*.yaml"))


def load_profile(name_or_file: str, profiles_dir: Path) -> LocalProfile:
    """A named profile from ``profiles_dir``, or a YAML file path."""
    candidate = Path(name_or_file).expanduser()
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        path = candidate
    else:
        path = profiles_dir / f"{name_or_file}.yaml"
        if not path.is_file():
            names = ", ".join(profile_names(profiles_dir)) or "none installed"
            raise PricingError(
                f"no local profile {name_or_file!r}; use one of: {names}, or a YAML file path"
            )
    try:
        data = yaml.safe_load(read_text_any(path)[0])
    except (OSError, yaml.YAMLError) as exc:
        raise PricingError(f"cannot read local profile {path}: {exc}") from None
    return parse_profile(data, default_name=path.stem, where=str(path))


def parse_profile(data: Any, *, default_name: str, where: str) -> LocalProfile:
    if not isinstance(data, dict):
        raise PricingError(f"{where}: a local profile is a mapping (tokens_per_second, watts, ...)")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise PricingError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(sorted(_KEYS))}")
    hardware = data.get("hardware") or {}
    if not isinstance(hardware, dict):
        raise PricingError(f"{where}: 'hardware' must be a mapping")
    unknown = sorted(set(hardware) - _HARDWARE_KEYS)
    if unknown:
        raise PricingError(
            f"{where}: unknown key hardware.{unknown[0]}; use {', '.join(sorted(_HARDWARE_KEYS))}"
        )
    tps = _number(data, "tokens_per_second", where, required=True)
    assert tps is not None
    if tps <= 0:
        raise PricingError(f"{where}: tokens_per_second must be > 0")
    prefill = _number(data, "prefill_tokens_per_second", where, required=False)
    if prefill is not None and prefill <= 0:
        raise PricingError(f"{where}: prefill_tokens_per_second must be > 0 or null")
    try:
        cost_model = LocalCostModel(
            watts=_opt(_number(data, "watts", where, required=True), 0.0),
            electricity_usd_per_kwh=_opt(
                _number(data, "electricity_usd_per_kwh", where, required=True), 0.0
            ),
            hardware_price_usd=_opt(_number(hardware, "price_usd", where, required=False), 0.0),
            lifetime_years=_opt(_number(hardware, "lifetime_years", where, required=False), 3.0),
            hours_per_day=_opt(_number(hardware, "hours_per_day", where, required=False), 8.0),
            inference_share=_opt(_number(hardware, "inference_share", where, required=False), 1.0),
        )
    except PricingError as exc:
        raise PricingError(f"{where}: {exc}") from None
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):
        raise PricingError(f"{where}: 'sources' must map a setting to where it comes from")
    return LocalProfile(
        name=str(data.get("name") or default_name),
        tokens_per_second=tps,
        cost_model=cost_model,
        prefill_tokens_per_second=prefill,
        description=str(data.get("description") or ""),
        sources={str(k): str(v) for k, v in sources.items()},
    )


def _opt(value: float | None, default: float) -> float:
    return default if value is None else value


def _number(data: Mapping[str, Any], key: str, where: str, *, required: bool) -> float | None:
    value = data.get(key)
    if value is None:
        if required:
            raise PricingError(f"{where}: '{key}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PricingError(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)
