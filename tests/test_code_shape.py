"""Code shape: no module of the three packages over 600 lines, no function over 80.

A long module or function hides its seams; these limits keep each piece readable in
one sitting. A module's size is its number of lines; a function's runs from its
``def`` line to its last line (docstring and nested functions included, decorators
not). ``EXCEPTIONS`` names what is over a limit today and why it is not split yet; an
entry that is back within its limit fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ds4router", "pricing", "local_engine")
MODULE_LINES = 600
FUNCTION_LINES = 80

# Over a limit today, each with the reason it waits. Keys: a module's path, or
# "path::Qualified.name" for a function.
EXCEPTIONS: dict[str, str] = {
    # Every open issue appends its migration step to the ledger's steps list; moving the
    # steps to their own module now would conflict with each of them.
    "pricing/ledger.py": "migration steps move out once the open migrations land",
    # The estimator's sources (--from-ledger, agents' logs) are being extended.
    "ds4router/commands/estimate.py::command": "split when the estimator work lands",
}


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            assert node.end_lineno is not None
            yield name, node.end_lineno - node.lineno + 1
            yield from functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, prefix + node.name + ".")
        else:
            yield from functions(node, prefix)


def oversized(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, int]:
    """Every module and function of ``packages`` under ``root`` over its limit, with its size."""
    found: dict[str, int] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            lines = len(text.splitlines())
            if lines > MODULE_LINES:
                found[rel] = lines
            for name, size in functions(ast.parse(text, filename=rel)):
                if size > FUNCTION_LINES:
                    found[f"{rel}::{name}"] = size
    return found


def test_no_module_or_function_is_over_its_limit_unless_listed() -> None:
    over = oversized(REPO)
    new = {place: size for place, size in over.items() if place not in EXCEPTIONS}
    listing = "\n".join(f"  {place}: {size} lines" for place, size in sorted(new.items()))
    assert not new, (
        f"over {MODULE_LINES} lines a module / {FUNCTION_LINES} a function; split along its"
        f" seams:\n{listing}"
    )


def test_every_exception_is_still_needed() -> None:
    over = oversized(REPO)
    stale = sorted(place for place in EXCEPTIONS if place not in over)
    assert not stale, f"within the limits now (or gone): remove from EXCEPTIONS: {stale}"


def test_the_measure_finds_a_long_module_and_a_long_method(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()

    def statements(n: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(n))

    # A method of FUNCTION_LINES + 1 lines, in a module of more than MODULE_LINES lines.
    long = "class Holder:\n    def method(self):\n" + statements(FUNCTION_LINES, " " * 8)
    (package / "long.py").write_text(long + "\n" * MODULE_LINES)
    # A function of exactly FUNCTION_LINES lines is within the limit.
    (package / "short.py").write_text("def ok():\n" + statements(FUNCTION_LINES - 1, "    "))
    assert oversized(tmp_path, ("pkg",)) == {
        "pkg/long.py": MODULE_LINES + FUNCTION_LINES + 2,
        "pkg/long.py::Holder.method": FUNCTION_LINES + 1,
    }
