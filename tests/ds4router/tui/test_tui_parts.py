"""The TUI's plain parts: budget colours, bars and charts, stats lines, @path completion,
live config reload, and what the welcome view says is missing."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ds4router.config import load_config
from ds4router.targets import LocalEngine
from ds4router.tui.config_watch import ConfigProblem, ConfigWatcher
from ds4router.tui.files import ProjectFiles, mention_before_cursor, replace_mention
from ds4router.tui.format import bar, budget_level, column_chart, stats_line
from ds4router.tui.setup import setup_status


@pytest.mark.parametrize(
    ("spent", "level"),
    [(0.0, "ok"), (19.99, "ok"), (20.0, "warn"), (31.0, "warn"), (32.0, "high"),
     (39.99, "high"), (40.0, "over"), (55.0, "over")],
)  # fmt: skip
def test_budget_bar_changes_colour_at_each_warning_threshold(spent: float, level: str) -> None:
    assert budget_level(spent, 40.0, [0.5, 0.8, 1.0])[0] == level


def test_budget_level_without_a_cap_and_with_a_zero_cap() -> None:
    assert budget_level(12.0, None, [0.5]) == ("none", None)
    assert budget_level(0.0, 0.0, [0.5])[0] == "ok"
    assert budget_level(0.01, 0.0, [0.5])[0] == "over"


def test_bar_fills_in_eighths_and_keeps_its_width() -> None:
    assert bar(0.0, 10) == "░" * 10
    assert bar(1.0, 10) == "█" * 10
    assert bar(2.5, 4) == "████"  # over budget: full, never wider
    half = bar(0.55, 10)
    assert len(half) == 10 and half.startswith("█████") and half[5] in "▏▎▍▌▋▊▉"


def test_column_chart_scales_to_the_largest_value_and_shows_small_ones() -> None:
    rows = column_chart([0.0, 1.0, 4.0, 0.001], height=4)
    assert len(rows) == 4 and all(len(r) == 4 for r in rows)
    columns = ["".join(r[x] for r in rows) for x in range(4)]
    assert columns[0] == "    "
    assert columns[2] == "████"  # the maximum fills the height
    assert columns[1] == "   █"  # a quarter of it: one full cell of four
    assert columns[3].strip() == "▁"  # tiny but not zero: still visible


def priced(**kw: object) -> SimpleNamespace:
    base = dict(
        input_tokens=1200, output_tokens=340, ttft_s=0.42, tok_s=21.5, cost_usd=0.0123,
        unpriced=False, saving_usd=0.21, reference_model="anthropic/claude-opus-4-7",
    )  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def test_stats_line_has_tokens_timing_cost_and_saving() -> None:
    line = stats_line(priced())
    assert line == (
        "in 1,200 · out 340 tok · TTFT 0.42 s · 21.5 tok/s · $0.0123 · "
        "saved $0.2100 vs claude-opus-4-7"
    )
    assert "$0.000062" in stats_line(priced(cost_usd=0.000062)), "a tiny cost is never $0.0000"


def test_stats_line_says_unpriced_never_zero() -> None:
    line = stats_line(priced(cost_usd=None, unpriced=True, saving_usd=None))
    assert "unpriced" in line and "$0.00" not in line
    assert "saving vs claude-opus-4-7 unknown" in line


def test_stats_line_when_dearer_than_the_reference() -> None:
    assert "$0.0500 more than gpt-4.1" in stats_line(
        priced(saving_usd=-0.05, reference_model="openai/gpt-4.1")
    )


def test_mention_at_cursor() -> None:
    assert mention_before_cursor("look at @src/pay") == "src/pay"
    assert mention_before_cursor("look at @") == ""
    assert mention_before_cursor("mail me at bob@example") is None  # not a word start
    assert mention_before_cursor("@src/a.py and more") is None  # cursor past it
    assert replace_mention("see @sr", "src/app.py")[0] == "see @src/app.py "


def test_project_files_complete_prefix_then_name_then_substring(tmp_path: Path) -> None:
    for name in ("src/payments/charge.py", "src/app.py", "docs/pay.md", "README.md",
                 ".hidden/secret.txt", "node_modules/x/index.js"):  # fmt: skip
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    files = ProjectFiles.scan(tmp_path)
    assert ".hidden/secret.txt" not in files.paths
    assert "node_modules/x/index.js" not in files.paths
    assert files.complete("src/") == ["src/app.py", "src/payments/charge.py"]
    assert files.complete("pay") == ["docs/pay.md", "src/payments/charge.py"]
    assert files.complete("harg") == ["src/payments/charge.py"]


def test_project_files_follow_git_ignore(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "kept.py").write_text("x")
    (tmp_path / "ignored.log").write_text("x")
    (tmp_path / ".gitignore").write_text("*.log\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    files = ProjectFiles.scan(tmp_path)
    assert "kept.py" in files.paths and "ignored.log" not in files.paths


def touch_later(path: Path, text: str) -> None:
    """Write, making sure the mtime moves even on coarse-grained file systems."""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime == before:
        os.utime(path, (before + 1, before + 1))


def test_config_watcher_reloads_and_keeps_the_last_good_config(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    file = project / ".ds4router.yaml"
    file.write_text("project: first\n", encoding="utf-8")
    watcher = ConfigWatcher(project)
    assert watcher.current.project_name == "first" and not watcher.changed()

    touch_later(file, "project: second\nprivacy: {default: confidential}\n")
    assert watcher.changed()
    reloaded = watcher.reload()
    assert not isinstance(reloaded, ConfigProblem)
    assert watcher.current.project_name == "second"
    assert str(watcher.current.config.privacy.default) == "confidential"

    touch_later(file, "project: third\nroutes:\n  - {name: x, to: local\n")
    problem = watcher.reload()
    assert isinstance(problem, ConfigProblem)
    assert problem.first_line.startswith(f"{file}:")  # file:line first
    assert "invalid YAML" in problem.first_line
    assert watcher.current.project_name == "second"  # the last good one stays


def test_config_watcher_starts_on_defaults_when_the_file_is_broken(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".ds4router.yaml").write_text("budjet: {monthly_usd: 4}\n", encoding="utf-8")
    watcher = ConfigWatcher(project)
    assert watcher.problem is not None
    assert (
        ":1: " in watcher.problem.first_line
        and "did you mean 'budget'" in watcher.problem.first_line
    )
    assert watcher.current.config.default == LocalEngine()  # built-in defaults


def test_config_watcher_notices_a_project_file_that_appears(tmp_path: Path) -> None:
    watcher = ConfigWatcher(None, cwd=tmp_path)
    assert not watcher.changed()
    time.sleep(0.01)
    (tmp_path / ".ds4router.yaml").write_text("project: born\n", encoding="utf-8")
    assert watcher.changed()
    watcher.reload()
    assert watcher.current.project_name == "born"


def test_setup_status_names_what_is_missing(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    loaded = load_config(project)
    nothing = setup_status(loaded, env={})
    assert nothing.nothing_configured
    assert "local.engine.model_path" in nothing.local_detail
    assert "OPENAI_API_KEY" in nothing.cloud_detail

    with_key = setup_status(loaded, env={"ANTHROPIC_API_KEY": "sk-test"})
    assert with_key.cloud_ok and "ANTHROPIC_API_KEY" in with_key.cloud_detail
    assert "sk-test" not in with_key.cloud_detail

    (project / ".ds4router.yaml").write_text(
        "default: cloud:openai/gpt-4.1\ncloud: {models: [{name: openai/gpt-4.1, api_key_env: TEAM_KEY}]}\n"
    )
    needs_key = setup_status(load_config(project), env={})
    assert not needs_key.cloud_ok and "TEAM_KEY" in needs_key.cloud_detail
    assert setup_status(load_config(project), env={"TEAM_KEY": "k"}).cloud_ok
