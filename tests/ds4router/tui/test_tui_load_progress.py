"""The sidebar shows the local model's load as a percentage and the shard it is at.

The engine is held inside its progress callback at the first tensor of shard 3 (of
seven), so the sidebar is looked at mid-load; the expected percentage is computed
from the files' headers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from load_support import HOLD_AT_SHARD, WAIT_S, Hold, percent_at_hold, shard_count
from tui_support import SIZE, settle, write_project

from ds4router.tui.app import Ds4RouterApp

MakeApp = Callable[..., Ds4RouterApp]


def text_of(app: Ds4RouterApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def test_the_sidebar_shows_the_load_percentage_and_shard_then_ready(
    tmp_path: Path, make_app: MakeApp, fresh_sharded: Path, held_load: Hold
) -> None:
    project = write_project(
        tmp_path, f"project: acme\nlocal:\n  engine: {{model_path: '{fresh_sharded}'}}\n"
    )
    app = make_app(project, check_cloud_health=False, load_local_engine=True)
    shards = shard_count(fresh_sharded)
    async with app.run_test(size=SIZE) as pilot:
        await settle(
            pilot,
            app,
            until=lambda: app.engine_status.step.startswith(f"shard {HOLD_AT_SHARD}/"),
            timeout=WAIT_S,
        )
        expected = percent_at_hold(fresh_sharded)
        assert app.engine_status.percent == expected
        shown = text_of(app, "#engine")
        assert shown.splitlines() == [
            f"● local loading {expected} %",
            f"  shard {HOLD_AT_SHARD}/{shards}",
        ]
        held_load.release.set()
        await settle(pilot, app, until=lambda: app.engine_status.state != "loading", timeout=WAIT_S)
        assert app.engine_status.state == "ready", app.engine_status.detail
        assert text_of(app, "#engine").startswith("● local ready · ")
        assert "shard" not in text_of(app, "#engine")
