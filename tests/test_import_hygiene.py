"""The dependency direction of DESIGN.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


CORE = (
    "import ds4router, ds4router.config, ds4router.routing.router, ds4router.routing.privacy, "
    "ds4router.routing.detectors, ds4router.routing.tasks, ds4router.routing.classify, ds4router.cli, ds4router.routing.explain, "
    "ds4router.targets, ds4router.events"
)


@pytest.mark.parametrize(
    ("imports", "forbidden"),
    [
        (CORE, {"textual", "litellm", "mlx", "torch"}),
        ("import pricing", {"textual", "litellm", "mlx", "ds4router", "local_engine"}),
        ("import local_engine", {"textual", "litellm", "ds4router", "pricing"}),
    ],
)
def test_packages_do_not_pull_in_what_they_must_not_know(imports: str, forbidden: set[str]) -> None:
    assert roots(loaded_after(imports)) & forbidden == set()


def test_pricing_submodules_never_import_mlx_or_the_app() -> None:
    import pkgutil

    import pricing

    names = [f"pricing.{m.name}" for m in pkgutil.iter_modules(pricing.__path__)]
    assert len(names) >= 5, names
    found = roots(loaded_after("import " + ", ".join(names)))
    assert found & {"mlx", "ds4router", "local_engine", "textual"} == set()
