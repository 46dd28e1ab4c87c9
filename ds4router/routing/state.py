"""What the router needs to know about the world now: budget spent, backends' health."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ds4router import paths
from ds4router.config.loader import LoadedConfig
from ds4router.routing.router import RouterState


def local_engine_status(loaded: LoadedConfig) -> tuple[bool, str]:
    """Whether a local model is configured and present on disk (not whether it is loaded)."""
    engine = loaded.config.local.engine
    if not engine.model_path:
        return False, (
            "not configured: set local.engine.model_path, or run `ds4router models pull demo`"
        )
    path = Path(engine.model_path).expanduser()
    if engine.kind == "mlx-lm":
        from ds4router.backends.engine_port import check_model_path

        problem = check_model_path(path)
        if problem is not None:
            return False, problem
    elif not (path / "config.json").is_file():
        return False, f"no model at {path}"
    from ds4router.demo_model import LABEL, is_demo

    return True, f"{LABEL} at {path}" if is_demo(path) else f"model at {path}"


def month_spent(loaded: LoadedConfig, month: str | None = None, db: Path | None = None) -> float:
    """USD spent this month by the project (0 when there is no ledger yet)."""
    db = db or paths.database_path()
    if not db.is_file():
        return 0.0
    from pricing.ledger import Ledger

    month = month or datetime.now(UTC).strftime("%Y-%m")
    ledger = Ledger(db)
    try:
        return ledger.spent(month, loaded.project_name)
    finally:
        ledger.close()


def current_state(
    loaded: LoadedConfig,
    *,
    cloud_available: bool = True,
    cloud_detail: str = "",
    local: tuple[bool, str] | None = None,
    db: Path | None = None,
) -> RouterState:
    local_ok, local_detail = local if local is not None else local_engine_status(loaded)
    cap = loaded.config.budget.monthly_usd
    spent = month_spent(loaded, db=db) if cap is not None else None
    over = cap is not None and spent is not None and spent >= cap
    return RouterState(
        over_budget=over,
        budget_spent_usd=spent,
        budget_cap_usd=cap,
        local_available=local_ok,
        cloud_available=cloud_available,
        local_detail=local_detail,
        cloud_detail=cloud_detail,
    )
