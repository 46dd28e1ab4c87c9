"""The import-linter contracts of ``pyproject.toml`` hold, and they catch a wrong import.

``lint-imports`` reads the import graph statically, so an import inside a function
(the lazy imports the packages use for heavy libraries) counts as much as one at the
top of a module. Each run analyses the packages it finds first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ds4router", "pricing", "local_engine")
LINT = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_packages_keep_every_layer_contract() -> None:
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
    kept = out.stdout.count(" KEPT")
    assert kept >= 6, out.stdout


@pytest.fixture(scope="module")
def copy_of_the_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


# (module to spoil, the import added, a line of the contract that must break)
WRONG_IMPORTS = [
    ("pricing/ledger.py", "import ds4router.config", "ds4router sits on pricing and local_engine"),
    ("local_engine/errors.py", "import pricing.cost", "ds4router sits on pricing and local_engine"),
    (
        "ds4router/sessions/session.py",
        "from local_engine.runtime.engine import Engine",
        "one door",
    ),
    ("ds4router/routing/router.py", "import textual.app", "Textual only under ds4router.tui"),
    ("local_engine/runtime/engine.py", "import litellm", "LiteLLM only under ds4router.backends"),
    ("pricing/cost.py", "import mlx.core", "mlx and mlx-lm only in local_engine"),
    ("local_engine/model/config.py", "import torch", "torch and transformers"),
]


@pytest.mark.parametrize(("module", "statement", "contract"), WRONG_IMPORTS)
def test_a_wrong_import_breaks_its_contract(
    copy_of_the_packages: Path, module: str, statement: str, contract: str
) -> None:
    path = copy_of_the_packages / module
    clean = path.read_text()
    # Inside a function, the way the packages import what they load lazily.
    path.write_text(clean + f"\n\ndef _wrong() -> None:\n    {statement}\n")
    try:
        out = lint_imports(copy_of_the_packages)
    finally:
        path.write_text(clean)
    assert out.returncode == 1, out.stdout + out.stderr
    broken = [line for line in out.stdout.splitlines() if " BROKEN" in line]
    assert len(broken) == 1 and contract in broken[0], out.stdout
    assert f"{module[:-3].replace('/', '.')} -> " in out.stdout
