"""The cost estimator: a month of usage priced on many cloud models and on local hardware.

A usage profile is a month of tokens ``U`` (input ``I`` of which ``C`` cached,
output ``O``; or a real month summed from the ledger). Then:

* **Cloud**, model m: ``cloud_m = price_request(U, rates_m)`` — exactly how the
  ledger prices requests, at the base rates (a sum of requests has no prompt size or
  start time, so no tier or time window can be told). When the month's requests are
  known (an agent's logs), ``cloud_m`` is the sum of each request priced on its own:
  its prompt-size tier and the time window it started in. ``c_m = cloud_m / O x 1e6``
  is its USD per 1M output tokens *of this mix* (input priced in).
* **Local**, profile p: the hardware is a fixed monthly cost
  ``H = price_usd x inference_share / (lifetime_years x 12)``; energy is per
  token: ``seconds = O / tok_s + (I - C) / prefill_tok_s`` (the prompt term
  only when the profile states a prefill speed), ``energy_J = watts x seconds``,
  ``E = energy_J / 3.6e6 x usd_per_kWh``. ``local = H + E``;
  ``e = E / O x 1e6`` is energy per 1M output tokens of the mix.
* **Crossover**, scaling the same mix to ``T`` output tokens a month:
  ``cloud(T) = c_m T / 1e6`` and ``local(T) = H + e T / 1e6``, equal at

      T* = H x 1e6 / (c_m - e)

  Local beats model m above ``T*``. When ``c_m <= e`` (the model costs less per
  token than our electricity) or ``T*`` exceeds what the machine can produce in
  a month (``hours_per_day x 3600 x 365/12`` seconds of work), local never wins:
  the crossover is ``None`` ("never").
* **Marginal** ("hardware you own anyway"): the machine is paid for, so local costs only
  its electricity, ``local_marginal(T) = e T / 1e6``. Local then wins at every volume
  when ``c_m > e`` (crossover 0, "always"), else never. The estimate carries both local
  costs (``local.monthly_usd`` amortised, ``local.electricity_usd`` marginal) and each
  cloud row both crossovers.

A month read from the ledger (:func:`usage_from_ledger`) says how many of the
requests it sums reported no usage (their token counts were estimated when they
ran); :func:`estimate` carries that count into its assumptions (``ledger``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pricing.catalog import PriceCatalog
from pricing.cost import price_request
from pricing.errors import PricingError
from pricing.ledger import Ledger
from pricing.local_cost import JOULES_PER_KWH
from pricing.profiles import LocalProfile
from pricing.rates import Rates
from pricing.report import build_report
from pricing.usage import TokenUsage

_PER_M = 1_000_000


@dataclass(frozen=True)
class EstimateRow:
    model: str
    kind: str  # "cloud" | "local"
    monthly_usd: float | None
    usd_per_mtok: float | None
    crossover_tokens_per_month: int | None
    crossover: str  # the crossover for people: a number, "never" or "-"
    resolved: str | None = None
    price_sheet: str | None = None
    note: str = ""
    # The same with the hardware owned anyway (electricity only): 0 ("always") or None.
    crossover_marginal_tokens_per_month: int | None = None
    crossover_marginal: str = "-"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "monthly_usd": self.monthly_usd,
            "usd_per_mtok": self.usd_per_mtok,
            "crossover_tokens_per_month": self.crossover_tokens_per_month,
            "crossover": self.crossover,
            "crossover_marginal_tokens_per_month": self.crossover_marginal_tokens_per_month,
            "crossover_marginal": self.crossover_marginal,
            "resolved": self.resolved,
            "price_sheet": self.price_sheet,
            "note": self.note,
        }


@dataclass(frozen=True)
class LocalEstimate:
    monthly_usd: float
    hardware_usd: float
    electricity_usd: float
    seconds: float
    capacity_output_tokens: float
    energy_usd_per_mtok: float
    fits: bool


@dataclass(frozen=True)
class Estimate:
    rows: tuple[EstimateRow, ...]
    usage: TokenUsage
    profile: LocalProfile | None
    local: LocalEstimate | None
    assumptions: dict[str, Any] = field(default_factory=dict)
    unknown: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (model, suggestions)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": [r.as_dict() for r in self.rows], "assumptions": self.assumptions}


@dataclass(frozen=True)
class LedgerUsage:
    """A month of the ledger summed for the estimator: ``requests`` answered or failed
    (refusals sent nothing and are left out), ``estimated_requests`` of them with token
    counts estimated rather than reported, and their summed ``usage``."""

    month: str
    project: str | None
    requests: int
    estimated_requests: int
    usage: TokenUsage

    def describe(self) -> str:
        scope = f"project {self.project}" if self.project else "all projects"
        plural = "request" if self.requests == 1 else "requests"
        if self.estimated_requests:
            counted = (
                f"{self.estimated_requests:,} of them with estimated token counts "
                "(no usage reported)"
            )
        else:
            counted = "none with estimated token counts"
        return f"Ledger {self.month}, {scope}: {self.requests:,} {plural}, {counted}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "project": self.project,
            "requests": self.requests,
            "estimated_requests": self.estimated_requests,
        }


def usage_from_ledger(ledger: Ledger, month: str, project: str | None = None) -> LedgerUsage:
    """The tokens of ``month`` (``YYYY-MM``, UTC; one project or all) and how many of its
    requests had estimated usage."""
    requests, usage = ledger.usage_totals(month, project)
    report = build_report(ledger, month, project)
    estimated = sum(b.estimated_requests for route, b in report.by_route if route != "refused")
    return LedgerUsage(month, project, requests, estimated, usage)


def usage_from_profile(
    output_tokens: int, input_tokens: int = 0, cached_share: float = 0.0
) -> TokenUsage:
    """A month of tokens from the CLI's numbers (``cached_share`` of the input is cached)."""
    if output_tokens <= 0:
        raise PricingError("--output-tokens must be > 0 (tokens generated a month)")
    if input_tokens < 0:
        raise PricingError("--input-tokens must be >= 0")
    if not 0.0 <= cached_share <= 1.0:
        raise PricingError(f"--cached-share must be between 0 and 1, got {cached_share}")
    return TokenUsage(
        input_tokens=input_tokens,
        cached_input_tokens=round(input_tokens * cached_share),
        output_tokens=output_tokens,
    )


def local_estimate(usage: TokenUsage, profile: LocalProfile) -> LocalEstimate:
    model = profile.cost_model
    seconds_per_output = 1.0 / profile.tokens_per_second
    prompt_seconds = 0.0
    if profile.prefill_tokens_per_second:
        prompt_seconds = usage.uncached_input_tokens / profile.prefill_tokens_per_second
    seconds = usage.output_tokens * seconds_per_output + prompt_seconds
    electricity = model.watts * seconds / JOULES_PER_KWH * model.electricity_usd_per_kwh
    hardware = model.monthly_hardware_usd
    # Capacity in output tokens of this mix: the month's serving seconds over the
    # seconds one output token (and its share of prompt) takes.
    per_output = seconds / usage.output_tokens if usage.output_tokens else seconds_per_output
    capacity = model.serving_seconds_per_month / per_output if per_output > 0 else math.inf
    energy_per_m = electricity / usage.output_tokens * _PER_M if usage.output_tokens else 0.0
    return LocalEstimate(
        monthly_usd=hardware + electricity,
        hardware_usd=hardware,
        electricity_usd=electricity,
        seconds=seconds,
        capacity_output_tokens=capacity,
        energy_usd_per_mtok=energy_per_m,
        fits=usage.output_tokens <= capacity,
    )


def crossover_tokens(
    hardware_monthly_usd: float,
    cloud_usd_per_mtok: float,
    energy_usd_per_mtok: float,
    capacity_tokens: float = math.inf,
) -> int | None:
    """``T* = H x 1e6 / (c - e)`` output tokens a month, or None when local never wins."""
    margin = cloud_usd_per_mtok - energy_usd_per_mtok
    if margin <= 0:
        return None
    tokens = hardware_monthly_usd * _PER_M / margin
    if tokens > capacity_tokens:
        return None
    return math.ceil(tokens)


def estimate(
    catalog: PriceCatalog,
    models: Sequence[str],
    usage: TokenUsage,
    profile: LocalProfile | None,
    *,
    ledger: LedgerUsage | None = None,
    requests: Sequence[tuple[dt.datetime, TokenUsage]] = (),
    more_profiles: Sequence[LocalProfile] = (),
) -> Estimate:
    """Price ``usage`` on each model and on ``profile``; rows sorted by monthly cost.
    ``ledger``: where ``usage`` came from, when it is a month of the ledger;
    ``requests``: the requests ``usage`` sums (start time, tokens), priced one by one;
    ``more_profiles``: other local profiles to price (rows only; crossovers are
    ``profile``'s)."""
    if usage.output_tokens <= 0:
        raise PricingError("the usage has no output tokens; nothing to compare")
    local = local_estimate(usage, profile) if profile is not None else None
    rows: list[EstimateRow] = []
    unknown: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for name in models:
        rates = catalog.rates(name)
        if rates is None:
            unknown.append((name, tuple(catalog.suggest(name))))
            rows.append(EstimateRow(name, "cloud", None, None, None, "-", note="unpriced"))
            continue
        if rates.model in seen:
            continue
        seen.add(rates.model)
        monthly = _monthly_cloud(usage, rates, requests)
        per_m = monthly / usage.output_tokens * _PER_M
        crossover: int | None = None
        marginal: int | None = None
        label = marginal_label = "-"
        if local is not None:
            crossover = crossover_tokens(
                local.hardware_usd, per_m, local.energy_usd_per_mtok, local.capacity_output_tokens
            )
            label = "never" if crossover is None else f"{crossover:,}"
            marginal = crossover_tokens(0.0, per_m, local.energy_usd_per_mtok)
            marginal_label = "never" if marginal is None else "always"
        note = "unverified price" if rates.model in catalog.unverified else ""
        rows.append(
            EstimateRow(
                model=rates.model,
                kind="cloud",
                monthly_usd=monthly,
                usd_per_mtok=per_m,
                crossover_tokens_per_month=crossover,
                crossover=label,
                resolved=rates.model,
                price_sheet=rates.sheet,
                note=note,
                crossover_marginal_tokens_per_month=marginal,
                crossover_marginal=marginal_label,
            )
        )
    if profile is not None and local is not None:
        rows.append(_local_row(profile, local, usage))
    crossovers_of = f"crossovers: {profile.name}" if profile is not None else ""
    for other in more_profiles:  # priced too; the crossovers stay ``profile``'s
        if profile is not None and other.name == profile.name:
            continue
        row = _local_row(other, local_estimate(usage, other), usage)
        rows.append(replace(row, note=row.note or crossovers_of))

    rows.sort(key=lambda r: (r.monthly_usd is None, r.monthly_usd or 0.0, r.model))
    assumptions = _assumptions(catalog, usage, profile, local)
    if ledger is not None:
        assumptions["ledger"] = ledger.as_dict()
    return Estimate(tuple(rows), usage, profile, local, assumptions, tuple(unknown))


def _local_row(profile: LocalProfile, local: LocalEstimate, usage: TokenUsage) -> EstimateRow:
    note = (
        ""
        if local.fits
        else (
            f"exceeds capacity: {local.capacity_output_tokens:,.0f} output tok/month "
            f"at {profile.cost_model.hours_per_day:g} h/day"
        )
    )
    return EstimateRow(
        model=f"local:{profile.name}",
        kind="local",
        monthly_usd=local.monthly_usd,
        usd_per_mtok=local.monthly_usd / usage.output_tokens * _PER_M,
        crossover_tokens_per_month=None,
        crossover="-",
        note=note,
    )


def _monthly_cloud(
    usage: TokenUsage, rates: Rates, requests: Sequence[tuple[dt.datetime, TokenUsage]]
) -> float:
    if not requests:
        total = price_request(usage, rates, one_request=False).total_usd
    else:
        total = sum(price_request(u, rates, at=t).total_usd or 0.0 for t, u in requests)
    assert total is not None
    return total


def _assumptions(
    catalog: PriceCatalog,
    usage: TokenUsage,
    profile: LocalProfile | None,
    local: LocalEstimate | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "usage_per_month": {
            "input_tokens": usage.input_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        },
        "usd_per_mtok": "USD per 1M output tokens of this usage mix, input priced in",
        "crossover": "output tokens a month above which local costs less: "
        "H x 1e6 / (cloud_usd_per_mtok - local_energy_usd_per_mtok); "
        "null (never) when the cloud model is cheaper per token than electricity "
        "or the crossover exceeds local capacity",
        "prices": [
            {"name": layer.name, "as_of": layer.as_of, "source": layer.source}
            for layer in catalog.layers
        ],
    }
    if profile is not None and local is not None:
        out["local_profile"] = profile.as_dict()
        out["local"] = {
            "hardware_usd_per_month": local.hardware_usd,
            "electricity_usd_per_month": local.electricity_usd,
            "energy_usd_per_mtok": local.energy_usd_per_mtok,
            "seconds_per_month": local.seconds,
            "capacity_output_tokens_per_month": local.capacity_output_tokens,
            "prompt_time_counted": profile.prefill_tokens_per_second is not None,
        }
    return out
