"""The package's surface: a light import, lazy public names, no app-level dependencies."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import local_engine

MINE = [
    "model.attention",
    "checkpoint.names",
    "model.config",
    "errors",
    "model.graph_options",
    "model.hyper_connections",
    "cache.kv_cache",
    "checkpoint.loader",
    "model.transformer",
    "model.moe",
    "checkpoint.official",
    "checkpoint.random_weights",
    "model.rope",
    "checkpoint.safetensors",
    "model.weights",
]


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return {m.split(".")[0] for m in out.stdout.split()}


def test_importing_the_package_does_not_import_mlx() -> None:
    light = modules_after("import local_engine\nfrom local_engine import EngineError")
    assert "mlx" not in light and "numpy" not in light
    heavy = modules_after("from local_engine import load_model")
    assert "mlx" in heavy


def test_engine_modules_know_nothing_of_the_app() -> None:
    names = ", ".join(f"local_engine.{m}" for m in MINE)
    found = modules_after(f"import {names}")
    assert found & {"ds4router", "pricing", "litellm", "textual", "torch", "transformers"} == set()


def test_public_names_resolve_lazily() -> None:
    assert set(local_engine.__all__) >= {"load_model", "EngineError", "Model", "GraphOptions"}
    assert local_engine.EngineError is __import__("local_engine.errors").errors.EngineError
    assert callable(local_engine.load_model)
    present = {
        m.name.removeprefix("local_engine.")
        for m in pkgutil.walk_packages(local_engine.__path__, "local_engine.")
    }
    assert set(MINE) <= present
    try:
        local_engine.not_a_name  # noqa: B018
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown names must raise AttributeError")
