"""What the main screens look like (SVG snapshots, 120x36, no cursor blink, fixed clock).

Update after a deliberate change with ``pytest tests/ds4router/tui --snapshot-update``
and look at the SVGs in ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import SIZE, cloud_project, seed_ledger, settle, write_project
from openai_server import OpenAIServer, ok

from ds4router.tui.app import Ds4RouterApp

MakeApp = Callable[..., Ds4RouterApp]
Snap = Callable[..., bool]

ANSWER = (
    "A **dataclass** writes `__init__`, `__repr__` and `__eq__` for you:\n\n",
    "```python\nfrom dataclasses import dataclass\n\n",
    "@dataclass(frozen=True)\nclass Invoice:\n    number: str\n    total_cents: int\n```\n\n",
    "`frozen=True` makes instances immutable and hashable.",
)


def test_chat_screen(
    snap_compare: Snap, tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    openai_server.script(ok(*ANSWER), ok("Yes: `frozen=True` makes them hashable."))
    app = make_app(cloud_project(tmp_path, openai_server.base_url))

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, until=lambda: app.ready)
        for text in ("Explain what a Python dataclass is", "Can I use one as a dict key?"):
            app.composer.prompt.insert(text)
            await pilot.press("ctrl+s")
            await settle(pilot, app, until=lambda: not app.generating)
        # Resumed from history: what it shows does not depend on timings.
        assert app.conversation_id is not None
        app.resume(app.conversation_id)
        await settle(pilot, app)
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
        await settle(pilot, app, until=lambda: getattr(app.screen, "result", None) is not None)
        await settle(pilot, app)

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
        app.composer.prompt.insert(
            "Design the sharding and replication of the billing service; "
            "contact ops at ops@example.com"
        )
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
