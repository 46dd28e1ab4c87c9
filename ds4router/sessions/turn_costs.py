"""What a finished turn cost: its ledger row and the ``Priced`` event a session yields last.

:func:`record_turn` prices the turn's last attempt (a cloud model from the price
catalog, the local engine from its energy reading and the hardware's amortization,
both against the project's reference model for the saving), writes exactly one
ledger row (a refused turn gets a ``refused`` row) and returns ``Priced``. Usage that
no backend reported (a stream cut before its usage chunk) is counted here and marked
``usage_estimated``. Also here: the price catalog a config reads (built once per
config) and how the figures are shown (``money``, ``priced_fields``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ds4router import paths
from ds4router.backends.endpoints import provider_of
from ds4router.config.loader import LoadedConfig
from ds4router.config.schema import Config
from ds4router.events import Priced
from ds4router.sessions.turn import Attempt, Turn, outcome_status
from ds4router.targets import CloudModel, route_of
from pricing import write_ahead
from pricing.catalog import PriceCatalog
from pricing.cost import CloudCost, price_request
from pricing.ledger import Ledger, LedgerRow
from pricing.local_cost import LocalCost, LocalCostModel
from pricing.usage import TokenUsage

# --- the catalog ----------------------------------------------------------------------------

_catalogs: dict[tuple[str, str], PriceCatalog] = {}
_catalogs_lock = threading.Lock()


def price_catalog(loaded: LoadedConfig) -> PriceCatalog:
    """The catalog for this config (dated sheets + ``pricing.overrides``), built once."""
    sheets = paths.configs_dir() / "prices"
    overrides = {
        name: rates.model_dump(exclude_none=True)
        for name, rates in loaded.config.pricing.overrides.items()
    }
    key = (str(sheets), json.dumps(overrides, sort_keys=True))
    with _catalogs_lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            catalog = PriceCatalog.load(sheets, overrides)
            _catalogs[key] = catalog
    return catalog


# --- pricing a turn -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Costed:
    """One answered attempt, priced: its ledger row and the figures ``Priced`` shows."""

    row: LedgerRow
    cost: float | None
    detail: str
    usage: TokenUsage
    counterfactual: CloudCost | None
    ttft: float | None
    tok_s: float | None
    duration: float | None


def record_turn(
    turn: Turn,
    ledger: Ledger,
    *,
    project: str,
    config: Config,
    catalog: PriceCatalog | None,
    catalog_error: str | None,
) -> Priced:
    """Price ``turn`` by its last attempt, write its one row to ``ledger``; the ``Priced`` event.

    ``catalog`` is None when it could not load (``catalog_error`` says why): a cloud
    answer is then recorded unpriced, and its ``cost_detail`` says why.
    """
    decision = turn.decision
    attempt = turn.last
    status, _, _ = outcome_status(attempt)
    reference = config.pricing.reference_model
    if attempt is None:
        row = LedgerRow.for_refused(
            time=turn.time,
            project=project,
            conversation_id=turn.conversation_id,
            rule=decision.rule,
            privacy=str(decision.privacy),
            task=decision.task,
        )
        nothing = "refused: nothing was sent, nothing spent"
        costed = _Costed(row, 0.0, nothing, TokenUsage(), None, None, None, None)
        route, model, rule = "refused", None, decision.rule
    else:
        costed = _price_attempt(turn, attempt, project, config, catalog, catalog_error)
        route, model = route_of(attempt.target), attempt.model
        rule = "fallback" if turn.fell_back else decision.rule
    cf_usd = None if costed.counterfactual is None else costed.counterfactual.total_usd
    cost = costed.cost
    return Priced(
        ledger_id=_write(ledger, turn, replace(costed.row, client=turn.client)),
        route=route,
        model=model,
        rule=rule,
        input_tokens=costed.usage.input_tokens,
        output_tokens=costed.usage.output_tokens,
        ttft_s=costed.ttft,
        tok_s=costed.tok_s,
        cost_usd=cost,
        unpriced=cost is None,
        counterfactual_usd=cf_usd,
        reference_model=reference,
        saving_usd=None if cf_usd is None or cost is None else cf_usd - cost,
        cost_detail=costed.detail,
        status=status,
        duration_s=costed.duration,
        conversation_id=turn.conversation_id,
        usage_estimated=costed.usage.estimated,
    )


def _write(ledger: Ledger, turn: Turn, row: LedgerRow) -> int:
    """The turn's final row: in place of its write-ahead row when it has one."""
    if turn.journal is None:
        return ledger.record(row)
    write_ahead.finish(ledger, turn.journal.ledger_id, row)
    return turn.journal.ledger_id


def _price_attempt(
    turn: Turn,
    attempt: Attempt,
    project: str,
    config: Config,
    catalog: PriceCatalog | None,
    catalog_error: str | None,
) -> _Costed:
    """The ledger row of an attempt that ran (cloud or local) and what it cost."""
    status, error_kind, _ = outcome_status(attempt)
    reference = config.pricing.reference_model
    usage = (
        attempt.usage or _estimate(turn, attempt, config.local.engine.model_path) or TokenUsage()
    )
    ttft = tok_s = None
    end = attempt.ended if attempt.ended is not None else time.monotonic()
    duration = max(end - attempt.started, 0.0)
    if attempt.first_token is not None:
        ttft = attempt.first_token - attempt.started
        decoding = end - attempt.first_token
        output = usage.output_tokens
        tok_s = output / decoding if decoding > 0 and output else None
    counterfactual = (
        catalog.price(reference, usage, turn.time) if reference and catalog is not None else None
    )
    extra: dict[str, Any] = {
        "conversation_id": turn.conversation_id,
        "rule": "fallback" if turn.fell_back else turn.decision.rule,
        "privacy": str(turn.classified.privacy.level),
        "task": turn.decision.task,
        "ttft_s": ttft,
        "duration_s": duration,
        "tok_s": tok_s,
        "status": status,
        "error_kind": error_kind,
    }
    if isinstance(attempt.target, CloudModel):
        priced = (
            catalog.price(attempt.model, usage, turn.time)
            if catalog is not None
            else price_request(usage, None, model=attempt.model)
        )
        row = LedgerRow.for_cloud(
            time=turn.time,
            project=project,
            cost=priced,
            provider=provider_of(attempt.model),
            counterfactual=counterfactual,
            redacted=attempt.redactions > 0,
            redacted_findings=attempt.redactions,
            **extra,
        )
        detail = _cloud_detail(priced, catalog_error)
        return _Costed(row, priced.total_usd, detail, usage, counterfactual, ttft, tok_s, duration)
    local = _local_cost(attempt, config)
    if attempt.energy is not None:
        extra["duration_s"] = duration = attempt.energy.seconds
    row = LedgerRow.for_local(
        time=turn.time,
        project=project,
        usage=usage,
        cost=local,
        model=attempt.model,
        counterfactual=counterfactual,
        **extra,
    )
    detail = _local_detail(local, config.local.electricity_usd_per_kwh, duration)
    return _Costed(row, local.total_usd, detail, usage, counterfactual, ttft, tok_s, duration)


def _local_cost(attempt: Attempt, config: Config) -> LocalCost:
    """The engine's cost, or a server's: its own ``power`` when given, else this machine's."""
    from ds4router.servers import server_watts

    local = config.local
    watts = server_watts(config, attempt.target)
    model = LocalCostModel(
        watts=local.power.watts if watts is None else watts,
        electricity_usd_per_kwh=local.electricity_usd_per_kwh,
        hardware_price_usd=local.hardware.price_usd,
        lifetime_years=local.hardware.lifetime_years,
        hours_per_day=local.hardware.hours_per_day,
        inference_share=local.hardware.inference_share,
    )
    reading = attempt.energy
    if reading is None:  # never started (backend unavailable): nothing ran
        return model.local_cost(0.0)
    if reading.source == "configured":
        return model.local_cost(reading.seconds)
    return model.local_cost(reading.seconds, reading.joules, reading.source)


def _estimate(
    turn: Turn, attempt: Attempt, local_model_path: str | None = None
) -> TokenUsage | None:
    """Rough counts for an attempt that streamed but never reported usage (a consumer
    that went away mid-stream): the tokens were spent, so they are counted."""
    if not attempt.has_tokens:
        return None
    from ds4router.token_count import count_text

    sent = attempt.prompt_tokens  # what this attempt sent, after fitting the window
    answer = "".join(attempt.text) + "".join(attempt.reasoning)
    return TokenUsage(
        input_tokens=turn.classified.tokens if sent is None else sent,
        # The target's own tokenizer where there is one; still not reported, so estimated.
        output_tokens=count_text(attempt.target, answer, local_model_path=local_model_path).tokens,
        estimated=True,
    )


# --- showing the figures --------------------------------------------------------------------


def money(value: float) -> str:
    """USD for a footer: 4 decimals from a cent up, 6 below, and never a misleading $0."""
    if value >= 0.01 or value == 0:
        return f"${value:.4f}"
    if value >= 0.0000005:
        return f"${value:.6f}"
    return "<$0.000001"


def _cloud_detail(cost: CloudCost, catalog_error: str | None) -> str:
    if catalog_error is not None:
        return f"{cost.model}: unpriced, the price catalog could not load ({catalog_error})"
    if cost.rates is None or cost.total_usd is None:
        return (
            f"{cost.model}: no known price, so unpriced; add it under pricing.overrides "
            "in .ds4router.yaml (USD per 1M tokens)"
        )
    rates, usage = cost.rates, cost.usage
    terms = [f"{usage.uncached_input_tokens} in x ${rates.input:g}/M"]
    if usage.cached_input_tokens:
        terms.append(f"{usage.cached_input_tokens} cached x ${rates.effective_cached_input:g}/M")
    if usage.cache_write_tokens:
        terms.append(f"{usage.cache_write_tokens} cache-write x ${rates.effective_cache_write:g}/M")
    terms.append(f"{usage.visible_output_tokens} out x ${rates.output:g}/M")
    if usage.reasoning_tokens:
        terms.append(f"{usage.reasoning_tokens} reasoning x ${rates.effective_reasoning:g}/M")
    source = rates.sheet or "prices"
    if rates.as_of:
        source += f", {rates.as_of}"
    for applied in (rates.window, rates.tier):
        if applied:
            source += f", {applied}"
    return f"{cost.model}: {' + '.join(terms)} = {money(cost.total_usd)} ({source})"


def _local_detail(cost: LocalCost, usd_per_kwh: float, seconds: float | None) -> str:
    return (
        f"local: {cost.energy_j:.1f} J ({cost.energy_source}) x ${usd_per_kwh:g}/kWh = "
        f"{money(cost.electricity_usd)} electricity + {money(cost.amortization_usd)} hardware "
        f"over {seconds or 0.0:.2f} s"
    )


def priced_fields(priced: Priced) -> Mapping[str, Any]:
    """The ``Priced`` figures as a JSON-ready mapping (``ask --json``)."""
    return {
        "ledger_id": priced.ledger_id,
        "route": priced.route,
        "model": priced.model,
        "rule": priced.rule,
        "status": priced.status,
        "input_tokens": priced.input_tokens,
        "output_tokens": priced.output_tokens,
        "ttft_s": priced.ttft_s,
        "tok_s": priced.tok_s,
        "duration_s": priced.duration_s,
        "cost_usd": priced.cost_usd,
        "unpriced": priced.unpriced,
        "counterfactual_usd": priced.counterfactual_usd,
        "reference_model": priced.reference_model,
        "saving_usd": priced.saving_usd,
        "cost_detail": priced.cost_detail,
        "conversation_id": priced.conversation_id,
        "usage_estimated": priced.usage_estimated,
    }


__all__ = [
    "money",
    "price_catalog",
    "priced_fields",
    "record_turn",
]
