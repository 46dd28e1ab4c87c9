"""Which files the mlx-lm engine can serve, judged from names alone (no mlx import)."""

from __future__ import annotations

from pathlib import Path


def find_gguf(path: Path) -> Path | None:
    """The GGUF file ``path`` names, or the only one in the directory ``path``."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
    return None


def check_model_path(path: Path) -> str | None:
    """Why ``path`` cannot be served by mlx-lm (from file names only), or None."""
    if not path.exists():
        return f"no model at {path}"
    if find_gguf(path) is not None:
        return None
    if not path.is_dir():
        return f"{path} is neither a model directory nor a .gguf file"
    if not (path / "config.json").is_file():
        return f"{path} has no config.json (an MLX-format model directory has one)"
    if not any(path.glob("*.safetensors")):
        return f"{path} has no *.safetensors weight files"
    return None
