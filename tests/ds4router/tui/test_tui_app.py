"""The app around the chat: report export, sidebar figures, live config, keys, palette, quit."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui_support import MONTH, SIZE, open_report, seed_ledger, settle, write_project

from ds4router.tui.actions import ACTIONS
from ds4router.tui.app import Ds4RouterApp
from ds4router.tui.screens.report import ReportScreen
from ds4router.tui.widgets.sidebar import BudgetBar

MakeApp = Callable[..., Ds4RouterApp]


def text_of(app: Ds4RouterApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def test_report_exports_the_month_to_a_file_in_each_format(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(tmp_path, "project: acme\nbudget: {monthly_usd: 40}\n")
    seed_ledger()
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_report(pilot, app)
        totals = text_of(app, "#report-totals")
        # cloud: 0.0384 + 0.08 + 0.175 (the unpriced row counts apart, April and the
        # other project stay out); saved: counterfactual - cost over rows priced both ways.
        assert "cloud $0.2934" in totals and "local $0.002100" in totals
        assert "saved $0.6745" in totals and "6 requests" in totals and "1 unpriced" in totals

        path_input = screen.query_one("#export-path")
        path_input.value = "out/may.csv"  # relative: next to the project
        await pilot.click("#export-button")
        await settle(pilot, app)
        exported = project / "out" / "may.csv"
        assert exported.is_file()
        rows = list(csv.reader(io.StringIO(exported.read_text())))
        assert any("openai/gpt-4.1" in row for row in rows)
        assert "wrote the 2026-05 report (csv)" in text_of(app, "#export-result")

        for fmt in ("json", "md", "html"):
            screen.export_as(fmt)
            await settle(pilot, app)
        data = json.loads((project / f"ds4router-report-{MONTH}.json").read_text())
        assert data["month"] == MONTH and data["project"] == "acme"
        assert abs(data["totals"]["cloud_usd"] - 0.2934) < 1e-9
        assert "| openai/gpt-4.1 |" in (project / f"ds4router-report-{MONTH}.md").read_text()
        assert "<svg" in (project / f"ds4router-report-{MONTH}.html").read_text()

        await pilot.press("left_square_bracket")  # April: one row of this project
        await settle(
            pilot, app, until=lambda: screen.report is not None and screen.report.month == "2026-04"
        )
        assert "1 requests" in text_of(app, "#report-totals")


async def test_report_export_to_an_unwritable_place_says_why(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(tmp_path, "project: acme\n")
    blocker = project / "file"
    blocker.write_text("x")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("f2")
        await settle(pilot, app)
        app.screen.query_one("#export-path").value = "file/inside.csv"
        await pilot.click("#export-button")
        await settle(pilot, app)
        assert "cannot write" in text_of(app, "#export-result")


async def test_sidebar_shows_month_spend_budget_colour_and_savings(
    tmp_path: Path, make_app: MakeApp
) -> None:
    # 0.2934 of a 0.5 budget is 59 %: past the first threshold only.
    project = write_project(tmp_path, "project: acme\nbudget: {monthly_usd: 0.5}\n")
    seed_ledger()
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: "Month" in text_of(app, "#month"))
        assert text_of(app, "#month") == f"Month {MONTH}"
        assert "cloud $0.2934 of $0.5000" in text_of(app, "#spend")
        assert app.query_one(BudgetBar).has_class("-warn")
        assert "59%" in text_of(app, "#budget-bar")
        assert "saved $0.6745 vs claude-opus-4-7" in text_of(app, "#savings")
        assert "privacy internal" in text_of(app, "#privacy")
        assert "local not configured" in text_of(app, "#engine")


async def test_invalid_yaml_shows_a_banner_and_edits_apply_without_restart(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(tmp_path, "project: acme\nprivacy: {default: internal}\n")
    file = project / ".ds4router.yaml"
    app = make_app(project, check_cloud_health=False, config_poll_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert not app.query_one("#banner").display

        before = file.stat().st_mtime
        file.write_text("project: acme\nprivacy: {default: [oops\n", encoding="utf-8")
        os.utime(file, (before + 2, before + 2))
        await settle(pilot, app, until=lambda: bool(app.query_one("#banner").display))
        banner = text_of(app, "#banner")
        assert f"{file}:" in banner and "invalid YAML" in banner
        assert "last good configuration" in banner
        assert app.loaded.project_name == "acme"

        file.write_text(
            "project: renamed\nprivacy: {default: confidential, cloud_max_privacy: confidential}\n",
            encoding="utf-8",
        )
        os.utime(file, (before + 4, before + 4))
        await settle(pilot, app, until=lambda: not app.query_one("#banner").display)
        await settle(pilot, app, until=lambda: "renamed" in text_of(app, "#project"))
        assert "privacy confidential" in text_of(app, "#privacy")
        assert app.loaded.project_name == "renamed"


async def test_a_config_rewritten_in_latin1_or_binary_keeps_the_app_running(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(tmp_path, "project: acme\n")
    file = project / ".ds4router.yaml"
    app = make_app(project, check_cloud_health=False, config_poll_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        before = file.stat().st_mtime
        file.write_bytes("project: café\n".encode("latin-1"))  # one Latin-1 byte
        os.utime(file, (before + 2, before + 2))
        await settle(pilot, app, until=lambda: app.loaded.project_name == "café")
        assert not app.query_one("#banner").display

        file.write_bytes(b"project: x\n\x00\x01\x02\xff\xfe binary")
        os.utime(file, (before + 4, before + 4))
        await settle(pilot, app, until=lambda: bool(app.query_one("#banner").display))
        banner = text_of(app, "#banner")
        assert f"{file}: not readable as text" in banner
        assert "last good configuration" in banner
        assert app.loaded.project_name == "café" and app.is_running
    assert app.return_code in (None, 0)


async def test_keymap_in_config_remaps_a_binding_by_id(tmp_path: Path, make_app: MakeApp) -> None:
    project = write_project(tmp_path, "project: acme\nkeymap: {report: f12, nope: f1}\n")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("f2")  # the default key no longer opens it
        await pilot.pause(0.1)
        assert not isinstance(app.screen, ReportScreen)
        await pilot.press("f12")
        await settle(pilot, app)
        assert isinstance(app.screen, ReportScreen)
        shown = [str(n.message) for n in app._notifications]
        assert any("unknown binding id 'nope'" in m for m in shown)


def test_every_binding_has_an_id_and_every_action_is_in_the_palette(tmp_path: Path) -> None:
    from ds4router.tui.app import known_binding_ids, screen_bindings

    ids = known_binding_ids()
    assert len(ids) == len(set(ids))
    for bindings in screen_bindings().values():
        assert all(b.id for b in bindings)
    assert all(a.id for a in ACTIONS)


async def test_command_palette_lists_every_action(tmp_path: Path, make_app: MakeApp) -> None:
    project = write_project(tmp_path, "project: acme\n")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {a.title for a in ACTIONS} <= titles
        # Chosen from the palette, an action runs: open it, type, pick.
        await pilot.press("ctrl+p")
        await settle(pilot, app, until=lambda: type(app.screen).__name__ == "CommandPalette")
        await pilot.press(*"Estimator")
        await pilot.pause(1.0)  # the palette searches in a worker of its own
        await pilot.press("enter")
        await settle(pilot, app)
        assert type(app.screen).__name__ == "EstimatorScreen"


async def test_ctrl_c_twice_quits_once_does_not(tmp_path: Path, make_app: MakeApp) -> None:
    project = write_project(tmp_path, "project: acme\n")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("ctrl+c")
        await settle(
            pilot,
            app,
            until=lambda: any("again to quit" in str(n.message) for n in app._notifications),
        )
        assert app.is_running
        await pilot.press("ctrl+c")
        await pilot.pause(0.1)
    assert app.return_code == 0 and not app.is_running


async def test_welcome_view_when_nothing_is_configured_and_reports_still_work(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(tmp_path, "project: acme\n")
    app = make_app(project, env={})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: bool(app.query("#welcome")))
        from ds4router.tui.widgets.welcome import WelcomeView

        source = app.query_one(WelcomeView).text
        assert "local.engine.model_path" in source and "OPENAI_API_KEY" in source
        await pilot.press("f3")
        await settle(pilot, app, until=lambda: getattr(app.screen, "result", None) is not None)
        result: Any = app.screen.result
        assert any(r.kind == "local" for r in result.rows)
        assert len([r for r in result.rows if r.kind == "cloud"]) >= 10


async def test_at_path_completion_from_project_files(tmp_path: Path, make_app: MakeApp) -> None:
    project = write_project(tmp_path, "project: acme\n")
    (project / "src").mkdir()
    (project / "src" / "billing.py").write_text("x = 1\n")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.composer.files is not None)
        await pilot.press(*"look at @src/bi")
        # Wait for state rather than a fixed time: CI machines are slow and shared.
        await settle(pilot, app, until=lambda: app.composer.completing)
        await pilot.press("tab")
        await settle(pilot, app, until=lambda: app.composer.text == "look at @src/billing.py ")
        assert not app.composer.completing


async def test_local_engine_loads_in_the_background_and_the_sidebar_follows(
    tmp_path: Path, make_app: MakeApp, tiny_checkpoint: Path
) -> None:
    project = write_project(
        tmp_path, f"project: acme\nlocal:\n  engine: {{model_path: '{tiny_checkpoint}'}}\n"
    )
    app = make_app(project, check_cloud_health=False, load_local_engine=True)
    async with app.run_test(size=SIZE) as pilot:
        # The first frame does not wait for the engine.
        assert "local loading" in text_of(app, "#engine")
        await settle(pilot, app, until=lambda: app.engine_status.state != "loading", timeout=60)
        assert app.engine_status.state == "ready", app.engine_status.detail
        assert app.engine_status.memory_bytes and app.engine_status.memory_bytes > 0
        gib = app.engine_status.memory_bytes / 1024**3
        assert f"local ready · {gib:.1f} GiB" in text_of(app, "#engine")


async def test_a_missing_model_shows_in_the_sidebar_without_loading(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(
        tmp_path, f"project: acme\nlocal:\n  engine: {{model_path: '{tmp_path / 'nowhere'}'}}\n"
    )
    app = make_app(project, check_cloud_health=False, load_local_engine=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.engine_status.state == "missing"
        assert "local no model on disk" in text_of(app, "#engine")


def test_nothing_heavy_is_imported_before_the_first_paint(tmp_path: Path) -> None:
    """litellm, mlx and torch load in workers after the first frame, never before."""
    import subprocess
    import sys

    project = write_project(tmp_path, "project: acme\ndefault: cloud:openai/gpt-4.1\n")
    code = f"""
import asyncio, sys
from ds4router.tui.app import Ds4RouterApp
seen = []
class Probe(Ds4RouterApp):
    def _boot(self):  # runs right after the first frame
        seen.extend(m for m in ("litellm", "mlx", "torch", "transformers") if m in sys.modules)
        seen.append("painted")
        self.exit()
async def main():
    async with Probe({str(project)!r}).run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.5)
asyncio.run(main())
print(" ".join(seen))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["painted"]


async def test_settings_show_each_value_with_its_source_and_the_key_ids(
    tmp_path: Path, make_app: MakeApp
) -> None:
    project = write_project(tmp_path, "project: acme\nbudget: {monthly_usd: 40}\n")
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("f5")
        await settle(pilot, app)
        from textual.widgets import DataTable

        config = app.screen.query_one("#config-table", DataTable)
        rows = {str(config.get_row_at(i)[0]): config.get_row_at(i) for i in range(config.row_count)}
        assert rows["budget.monthly_usd"][1:] == ["40.0", "project (.ds4router.yaml)"]
        assert rows["default"][1:] == ['"local"', "built-in"]
        keys = app.screen.query_one("#keys-table", DataTable)
        ids = {str(keys.get_row_at(i)[0]) for i in range(keys.row_count)}
        assert {"send", "cancel", "quit", "report", "report.export"} <= ids
