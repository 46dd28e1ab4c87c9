"""The dependency direction of docs/DESIGN.md, checked at run time in fresh interpreters.

``tests/test_layers.py`` checks the import graph statically (import-linter); this
file checks what importing actually loads, over every module of each package (found
with pkgutil, so a new module is covered the day it is added): the heavy libraries
are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def loaded_after(modules: list[str]) -> set[str]:
    code = "import importlib, sys\n"
    code += f"for name in {modules!r}:\n    importlib.import_module(name)\n"
    code += "print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def modules_of(package: str) -> list[str]:
    """Every module of ``package`` by its files, without importing any of them.

    ``__main__`` is left out: importing it runs the program.
    """
    found = [package]

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)]):
            if info.name == "__main__":
                continue
            found.append(prefix + info.name)
            if info.ispkg:
                walk(folder / info.name, f"{prefix}{info.name}.")

    walk(REPO / package, f"{package}.")
    return found


def is_tui(name: str) -> bool:
    return name == "ds4router.tui" or name.startswith("ds4router.tui.")


HEAVY = {"litellm", "mlx", "mlx_lm", "torch", "transformers"}
CORE = [m for m in modules_of("ds4router") if not is_tui(m)]
TUI = [m for m in modules_of("ds4router") if is_tui(m)]


def test_every_module_is_found() -> None:
    assert {"ds4router.backends.local", "ds4router.routing.router", "ds4router.cli"} <= set(CORE)
    assert "ds4router.tui.app" in TUI
    assert "local_engine.cache.kv_store" in modules_of("local_engine")
    assert "pricing.ledger" in modules_of("pricing")


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        # The core (everything but the TUI) never imports Textual, and nothing heavy at import.
        (CORE, {"textual"} | HEAVY),
        # The TUI imports the heavy libraries only after the first paint, inside workers.
        (TUI, HEAVY),
        (modules_of("pricing"), {"textual", "ds4router", "local_engine"} | HEAVY),
        (modules_of("local_engine"), {"textual", "litellm", "ds4router", "pricing", "torch"}),
        # The packages alone: what `ds4router --help` and the engine CLI's fast paths pay.
        (["ds4router", "ds4router.cli"], {"textual", "local_engine"} | HEAVY),
        (["local_engine"], {"mlx", "numpy", "textual", "litellm", "ds4router", "pricing"}),
    ],
    ids=["core", "tui", "pricing", "local_engine", "cli", "engine-package"],
)
def test_modules_do_not_pull_in_what_they_must_not_know(
    modules: list[str], forbidden: set[str]
) -> None:
    assert roots(loaded_after(modules)) & forbidden == set()
