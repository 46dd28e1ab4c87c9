"""The sidebar shows the local model's load as a percentage and the shard it is at.

The engine is held inside its progress callback at the first tensor of shard 3 (of
seven), so the sidebar is looked at mid-load; the expected percentage is computed
from the files' headers.
"""

from __future__ import annotations

import json
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tui_support import SIZE, settle, write_project

from ds4router.backends import local
from ds4router.tui.app import Ds4RouterApp
from local_engine.random_checkpoint import write_random_checkpoint

MakeApp = Callable[..., Ds4RouterApp]
HOLD_AT_SHARD = 3
WAIT_S = 60.0


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("tui-lp-tiny"), preset="tiny", seed=6, shard_bytes=1 << 20
    )


@pytest.fixture
def fresh(sharded: Path, tmp_path: Path) -> Iterator[Path]:
    copy = Path(shutil.copytree(sharded, tmp_path / "model"))
    yield copy
    local.forget_load(copy)
    from local_engine.engine import Engine

    Engine.unload(copy)


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds the engine thread at shard ``HOLD_AT_SHARD`` until set (set at teardown)."""
    event = threading.Event()
    report = local._EngineLoad._progress

    def holding(self: local._EngineLoad, progress: object) -> None:
        report(self, progress)  # type: ignore[arg-type]
        if getattr(progress, "shard_index", 0) == HOLD_AT_SHARD:
            event.wait(WAIT_S)

    monkeypatch.setattr(local._EngineLoad, "_progress", holding)
    yield event
    event.set()


def percent_at_hold(model_dir: Path) -> int:
    sizes = []
    for shard in sorted(model_dir.glob("*.safetensors")):
        with shard.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        header.pop("__metadata__", None)
        sizes.append([end - start for start, end in (m["data_offsets"] for m in header.values())])
    done = sum(map(sum, sizes[: HOLD_AT_SHARD - 1])) + sizes[HOLD_AT_SHARD - 1][0]
    return done * 100 // sum(map(sum, sizes))


def text_of(app: Ds4RouterApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def test_the_sidebar_shows_the_load_percentage_and_shard_then_ready(
    tmp_path: Path, make_app: MakeApp, fresh: Path, release: threading.Event
) -> None:
    project = write_project(
        tmp_path, f"project: acme\nlocal:\n  engine: {{model_path: '{fresh}'}}\n"
    )
    app = make_app(project, check_cloud_health=False, load_local_engine=True)
    shards = len(list(fresh.glob("*.safetensors")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(
            pilot, app, until=lambda: app.engine_status.step.startswith("shard 3/"), timeout=WAIT_S
        )
        expected = percent_at_hold(fresh)
        assert app.engine_status.percent == expected
        shown = text_of(app, "#engine")
        assert shown.splitlines() == [
            f"● local loading {expected} %",
            f"  shard {HOLD_AT_SHARD}/{shards}",
        ]
        release.set()
        await settle(pilot, app, until=lambda: app.engine_status.state != "loading", timeout=WAIT_S)
        assert app.engine_status.state == "ready", app.engine_status.detail
        assert text_of(app, "#engine").startswith("● local ready · ")
        assert "shard" not in text_of(app, "#engine")
