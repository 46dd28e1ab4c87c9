"""Helpers for the TUI tests: a project on disk, a seeded ledger, waiting for the app.

(Kept apart from ``conftest.py`` so test modules import them by a unique name.)
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ds4router import paths
from ds4router.tui.app import Ds4RouterApp
from ds4router.tui.screens.report import ReportScreen

NOW = dt.datetime(2026, 5, 14, 9, 30, tzinfo=dt.UTC)
MONTH = "2026-05"
SIZE = (120, 36)


def write_project(root: Path, text: str, name: str = "acme") -> Path:
    project = root / name
    project.mkdir(parents=True, exist_ok=True)
    (project / ".ds4router.yaml").write_text(text, encoding="utf-8")
    return project


def cloud_project(root: Path, base_url: str, extra: str = "") -> Path:
    """A project whose default is a loopback OpenAI-compatible model (no key needed)."""
    return write_project(
        root,
        f"""\
project: acme
default: cloud:openai/gpt-4.1
cloud:
  models: [{{name: openai/gpt-4.1, api_base: "{base_url}"}}]
  retries: 0
budget: {{monthly_usd: 40, warn_at: [0.5, 0.8, 1.0]}}
{extra}""",
    )


def seed_ledger(project: str = "acme") -> Path:
    """A month of rows for the report: cloud and local, priced and unpriced, a refusal."""
    from pricing.ledger import LedgerRow

    def at(day: int, hour: int = 10) -> dt.datetime:
        return dt.datetime(2026, 5, day, hour, tzinfo=dt.UTC)

    rows = [
        LedgerRow(time=at(2), project=project, route="cloud", model="openai/gpt-4.1",
                  rule="hard-thinking", task="architecture", input_tokens=12_000,
                  output_tokens=1_800, cost_usd=0.0384, counterfactual_usd=0.225,
                  reference_model="anthropic/claude-opus-4-7"),
        LedgerRow(time=at(5), project=project, route="cloud", model="openai/gpt-4.1",
                  rule="default", task="debug", input_tokens=30_000, output_tokens=2_500,
                  cost_usd=0.08, counterfactual_usd=0.4625,
                  reference_model="anthropic/claude-opus-4-7"),
        LedgerRow(time=at(5, 15), project=project, route="local", model="local/deepseek-v4-flash",
                  rule="private-stays-local", task="refactor", input_tokens=8_000,
                  output_tokens=900, cost_usd=0.0021, counterfactual_usd=0.1075,
                  reference_model="anthropic/claude-opus-4-7", energy_j=3000.0),
        LedgerRow(time=at(9), project=project, route="cloud", model="acme/internal-gw",
                  rule="default", task="explain", input_tokens=2_000, output_tokens=400,
                  cost_usd=None),
        LedgerRow(time=at(12), project=project, route="refused", rule="privacy",
                  task="chat", cost_usd=0.0),
        LedgerRow(time=at(13), project=project, route="cloud", model="anthropic/claude-opus-4-7",
                  rule="hard-thinking", task="architecture", input_tokens=20_000,
                  output_tokens=3_000, cost_usd=0.175, counterfactual_usd=0.175,
                  reference_model="anthropic/claude-opus-4-7"),
        LedgerRow(time=dt.datetime(2026, 4, 28, tzinfo=dt.UTC), project=project, route="cloud",
                  model="openai/gpt-4.1", input_tokens=1000, output_tokens=100, cost_usd=0.9),
        LedgerRow(time=at(6), project="other-project", route="cloud", model="openai/gpt-4.1",
                  input_tokens=1000, output_tokens=100, cost_usd=5.0),
    ]  # fmt: skip
    return record(rows)


def record(rows: Sequence[Any]) -> Path:
    """Write ``LedgerRow`` objects to the test's ledger database (created if need be)."""
    from pricing.ledger import Ledger

    db = paths.database_path()
    db.parent.mkdir(parents=True, exist_ok=True)
    with Ledger(db) as ledger:
        ledger.record_many(rows)
    return db


async def open_report(pilot: Any, app: Ds4RouterApp) -> ReportScreen:
    """Open the Report screen with its key and wait until it shows this month."""
    await settle(pilot, app)
    await pilot.press("f2")
    await settle(pilot, app, until=lambda: getattr(app.screen, "report", None) is not None)
    screen = app.screen
    assert isinstance(screen, ReportScreen)
    return screen


async def settle(
    pilot: Any, app: Ds4RouterApp, until: Callable[[], bool] | None = None, timeout: float = 20.0
) -> None:
    """Let workers finish (and ``until`` hold), pausing the pilot meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.05)
        if until is None:
            await app.workers.wait_for_complete()
            await pilot.pause(0.05)
            return
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("the app did not reach the expected state in time")
