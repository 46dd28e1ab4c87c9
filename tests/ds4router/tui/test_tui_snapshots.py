"""What the main screens look like (SVG snapshots, 120x36, no cursor blink, fixed clock).

Update after a deliberate change with ``pytest tests/ds4router/tui --snapshot-update``
and look at the SVGs in ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from openai_server import OpenAIServer
from tui_support import SIZE, cloud_project, seed_ledger, settle, write_project

from ds4router.tui.app import Ds4RouterApp

MakeApp = Callable[..., Ds4RouterApp]
Snap = Callable[..., bool]

ANSWER = (
    "A **dataclass** writes `__init__`, `__repr__` and `__eq__` for you:\n\n",
    "```python\nfrom dataclasses import dataclass\n\n",
    "@dataclass(frozen=True)\nclass Invoice:\n    number: str\n    total_cents: int\n```\n\n",
    "`frozen=True` makes instances immutable and hashable.",
)


def seed_conversation() -> str:
    """A conversation in the real history database, with fixed times (a resumed chat)."""
    import datetime as dt

    from ds4router import paths
    from ds4router.sessions.history import History, Message

    def at(minute: int) -> dt.datetime:
        return dt.datetime(2026, 5, 14, 9, minute, tzinfo=dt.UTC)

    turns = [
        (
            Message("user", "Explain what a Python dataclass is", privacy="internal",
                    task="explain", created_at=at(12)),
            Message("assistant", "".join(ANSWER), reasoning="They asked for the idea, then code.",
                    route="cloud", model="openai/gpt-4.1", rule="default", input_tokens=14,
                    output_tokens=96, cost_usd=0.000796, status="ok", privacy="internal",
                    task="explain", created_at=at(12)),
        ),
        (
            Message("user", "Tidy the billing module #confidential", privacy="confidential",
                    task="refactor", created_at=at(14)),
            Message("assistant", "Split `charge()` into *validate*, *price* and *record*.",
                    route="local", model="local/deepseek-v4-flash", rule="private-stays-local",
                    input_tokens=812, output_tokens=240, cost_usd=0.00213, status="ok",
                    privacy="confidential", task="refactor", created_at=at(15)),
        ),
        (
            Message("user", "Deploy with AKIA… as the key", privacy="secret", task="chat",
                    created_at=at(17)),
            Message("assistant", None, route="refused", rule="privacy", status="ok",
                    privacy="secret", task="chat", created_at=at(17)),
        ),
    ]  # fmt: skip
    history = History(paths.database_path())
    try:
        cid = history.new_conversation("acme", "What is a dataclass?")
        for user, answer in turns:
            history.add_turn(cid, user, answer, project="acme")
    finally:
        history.close()
    return cid


def test_chat_screen(
    snap_compare: Snap, tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    cid = seed_conversation()
    app = make_app(cloud_project(tmp_path, openai_server.base_url))

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, until=lambda: app.ready)
        app.resume(cid)
        await settle(pilot, app, until=lambda: app.conversation_id == cid)
        app.composer.prompt.insert("/task tests write pytest tests for Invoice")
        await settle(pilot, app, until=lambda: "tests" in str(app.query_one("#preview").render()))
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_report_screen(snap_compare: Snap, tmp_path: Path, make_app: MakeApp) -> None:
    project = write_project(tmp_path, "project: acme\nbudget: {monthly_usd: 0.5}\n")
    seed_ledger()
    app = make_app(project, check_cloud_health=False)

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app)
        await pilot.press("f2")
        await settle(pilot, app, until=lambda: getattr(app.screen, "report", None) is not None)
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_estimator_screen(snap_compare: Snap, tmp_path: Path, make_app: MakeApp) -> None:
    app = make_app(write_project(tmp_path, "project: acme\n"), check_cloud_health=False)

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app)
        await pilot.press("f3")
        await settle(pilot, app, until=lambda: type(app.screen).__name__ == "EstimatorScreen")
        # Wait on the estimate's worker itself, however long a loaded CPU makes it (a
        # deadline on the result failed once under load), then for its result to be shown.
        await app.workers.wait_for_complete()
        await settle(pilot, app)
        assert getattr(app.screen, "result", None) is not None

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_explain_screen(
    snap_compare: Snap, tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    extra = """\
privacy:
  paths: [{glob: "src/payments/**", level: secret}]
routes:
  - {name: hard-thinking, when: {task: [architecture]}, to: "cloud:openai/gpt-4.1"}
  - {name: routine-local, when: {task: [boilerplate, tests]}, to: local}
"""
    app = make_app(cloud_project(tmp_path, openai_server.base_url, extra), check_cloud_health=False)

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, until=lambda: app.ready)
        app.composer.prompt.insert("Design the sharding and replication of the billing service")
        await pilot.press("f4")
        await settle(pilot, app, until=lambda: type(app.screen).__name__ == "ExplainScreen")
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_welcome_view(snap_compare: Snap, tmp_path: Path, make_app: MakeApp) -> None:
    app = make_app(write_project(tmp_path, "project: acme\n"), env={})

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, until=lambda: bool(app.query("#welcome")))
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
