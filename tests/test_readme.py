"""The README's quickstart stays true: CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quickstart_is_two_commands_and_ci_runs_the_second() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2
    install_and_start, test = commands
    assert install_and_start.endswith("&& ds4router")
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines
    assert "pytest" in test and "[test]" in test


def test_ci_script_fails_on_any_failure() -> None:
    script = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert "|| true" not in script and "--exitfirst" not in script


def test_readme_screenshots_are_the_current_snapshots() -> None:
    """docs/screenshots/*.svg are copies of the TUI's SVG snapshots: update both together."""
    snapshots = REPO / "tests" / "ds4router" / "tui" / "__snapshots__" / "test_tui_snapshots"
    readme = (REPO / "README.md").read_text()
    shown = re.findall(r"\(docs/screenshots/(\w+)\.svg\)", readme)
    assert set(shown) == {"chat", "report", "estimator", "explain", "welcome"}
    for name in shown:
        [snapshot] = snapshots.glob(f"test_{name}_*.svg")
        assert (
            REPO / "docs" / "screenshots" / f"{name}.svg"
        ).read_bytes() == snapshot.read_bytes(), (
            f"copy {snapshot.name} to docs/screenshots/{name}.svg"
        )


def test_the_architecture_tree_names_every_package_and_subpackage() -> None:
    """README's tree (one line per package, indented under its parent) stays the real layout."""
    section = (REPO / "README.md").read_text().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```\n", 2)[1]
    listed: set[str] = set()
    modules: set[str] = set()
    parents: list[str] = []
    for line in tree.splitlines():
        name = line.split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        if name.endswith(".py"):
            modules.add("/".join([*parents[:depth], name]))
        if not name.endswith("/"):
            continue
        parents = [*parents[:depth], name.rstrip("/")]
        listed.add("/".join(parents))
    misplaced = sorted(m for m in modules if not (REPO / m).is_file())
    assert not misplaced, (
        f"README's Architecture tree puts these modules under the wrong folder: {misplaced}"
    )
    packages = {
        init.parent.relative_to(REPO).as_posix()
        for root in ("ds4router", "pricing", "local_engine")
        for init in (REPO / root).rglob("__init__.py")
    }
    assert packages - listed == set(), "add these packages to README's Architecture tree"
    assert {p for p in listed if p.split("/")[0] in ("ds4router", "pricing", "local_engine")} <= (
        packages
    ), "README's Architecture tree names a package that does not exist"
