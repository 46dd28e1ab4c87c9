"""local_engine: DeepSeek V4 Flash on MLX.

The model, its decode state (KV cache), checkpoint loading (the names
``save_pretrained`` writes and the official release's FP4/FP8 layout) and a
random-checkpoint writer for tests. It knows nothing of ds4router, pricing,
LiteLLM or Textual.

Importing this package must stay light (the CLI imports it on fast paths), so
the public names are resolved lazily: ``from local_engine import load_model``
imports mlx only at that moment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_engine.config import ModelConfig
    from local_engine.errors import CacheError, CheckpointError, EngineError
    from local_engine.graph_options import GraphOptions
    from local_engine.loader import load_model
    from local_engine.model import Model

# public name -> module that defines it; resolved on first attribute access.
_LAZY: dict[str, str] = {
    "load_model": "local_engine.loader",
    "Model": "local_engine.model",
    "ModelConfig": "local_engine.config",
    "GraphOptions": "local_engine.graph_options",
    "EngineError": "local_engine.errors",
    "CheckpointError": "local_engine.errors",
    "CacheError": "local_engine.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'local_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
