"""local_engine: DeepSeek V4 Flash on MLX.

The model, its decode state (KV cache), checkpoint loading (the names
``save_pretrained`` writes and the official release's FP4/FP8 layout), a
random-checkpoint writer for tests, and the engine on top: tokenizer, DeepSeek V4
chat encoding, sampling and streaming generation (``Engine``). It knows nothing
of ds4router, pricing, LiteLLM or Textual.

Importing this package must stay light (the CLI imports it on fast paths), so
the public names are resolved lazily: ``from local_engine import load_model``
imports mlx only at that moment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from local_engine.cpu_blas import prefer_fast_blas

# Before any submodule imports mlx: on Linux, MLX's CPU matmuls then run on the
# machine's optimized BLAS instead of the reference one its wheel bundles.
prefer_fast_blas()

if TYPE_CHECKING:
    from local_engine.checkpoint.loader import load_model
    from local_engine.errors import CacheError, CheckpointError, EngineError
    from local_engine.model.config import ModelConfig
    from local_engine.model.graph_options import GraphOptions
    from local_engine.model.transformer import Model
    from local_engine.runtime.chat import (
        ChatEncodingError,
        render_prompt,
        split_reasoning,
    )
    from local_engine.runtime.dsml import ToolCall
    from local_engine.runtime.engine import Engine, EngineInfo, InsufficientMemoryError
    from local_engine.runtime.events import (
        Done,
        Event,
        GenerationStats,
        ReasoningDelta,
        TextDelta,
        ToolCallDelta,
        ToolCallEnd,
        ToolCallError,
        ToolCallStart,
        Usage,
    )
    from local_engine.runtime.generate import GenerationParams
    from local_engine.runtime.sampling import SamplingParams
    from local_engine.runtime.tokenizer import Tokenizer

# public name -> module that defines it; resolved on first attribute access.
_LAZY: dict[str, str] = {
    "load_model": "local_engine.checkpoint.loader",
    "Model": "local_engine.model.transformer",
    "ModelConfig": "local_engine.model.config",
    "GraphOptions": "local_engine.model.graph_options",
    "EngineError": "local_engine.errors",
    "CheckpointError": "local_engine.errors",
    "CacheError": "local_engine.errors",
    "Engine": "local_engine.runtime.engine",
    "EngineInfo": "local_engine.runtime.engine",
    "InsufficientMemoryError": "local_engine.runtime.engine",
    "GenerationParams": "local_engine.runtime.generate",
    "GenerationStats": "local_engine.runtime.events",
    "TextDelta": "local_engine.runtime.events",
    "ReasoningDelta": "local_engine.runtime.events",
    "Usage": "local_engine.runtime.events",
    "Done": "local_engine.runtime.events",
    "Event": "local_engine.runtime.events",
    "render_prompt": "local_engine.runtime.chat",
    "split_reasoning": "local_engine.runtime.chat",
    "ChatEncodingError": "local_engine.runtime.chat",
    "ToolCall": "local_engine.runtime.dsml",
    "ToolCallStart": "local_engine.runtime.events",
    "ToolCallDelta": "local_engine.runtime.events",
    "ToolCallEnd": "local_engine.runtime.events",
    "ToolCallError": "local_engine.runtime.events",
    "Tokenizer": "local_engine.runtime.tokenizer",
    "SamplingParams": "local_engine.runtime.sampling",
}

# Spelled out (not sorted(_LAZY)) so linters see the TYPE_CHECKING imports as exports.
__all__ = [
    "CacheError",
    "ChatEncodingError",
    "CheckpointError",
    "Done",
    "Engine",
    "EngineError",
    "EngineInfo",
    "Event",
    "GenerationParams",
    "GenerationStats",
    "GraphOptions",
    "InsufficientMemoryError",
    "Model",
    "ModelConfig",
    "ReasoningDelta",
    "SamplingParams",
    "TextDelta",
    "Tokenizer",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallError",
    "ToolCallStart",
    "Usage",
    "load_model",
    "render_prompt",
    "split_reasoning",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'local_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
