"""The one door from the app to ``local_engine``: every engine name ds4router uses.

No other ds4router module imports ``local_engine`` (an import-linter contract in
``pyproject.toml`` holds that), so what the app asks of the engine is listed here
and nowhere else, and a change inside the engine's packages touches one table.

Importing this module imports nothing of the engine: a name is resolved on
attribute access (PEP 562 ``__getattr__``), so ``from ds4router.backends.engine_port
import Engine`` inside a function costs mlx only when that function runs, and
``ds4router --help`` or the TUI's start-up stay light. A name is looked up on its
module at every access, not cached here, so a test that replaces an engine function
on its module (``monkeypatch.setattr``) is seen by the app. The stdlib's
``importlib`` does the job in a dozen lines; a lazy-import library would add a
dependency and hide the table from mypy, which reads the ``TYPE_CHECKING`` block.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_engine.cache.kv_store import KVStore
    from local_engine.checkpoint.compare import compare_models, read_prompts_file
    from local_engine.checkpoint.convert import convert
    from local_engine.checkpoint.loader import LoadProgress
    from local_engine.checkpoint.plan import memory_plan, preset_model_config
    from local_engine.checkpoint.random_weights import write_random_checkpoint
    from local_engine.checkpoint.recipes import Recipe, load_recipe
    from local_engine.errors import EngineError
    from local_engine.model.config import RANDOM_MARKER_KEY, load_config
    from local_engine.runtime.chat import ChatEncodingError, render_prompt
    from local_engine.runtime.engine import Engine
    from local_engine.runtime.events import ToolCallDelta, ToolCallEnd, ToolCallError, ToolCallStart
    from local_engine.runtime.generate import (
        Done,
        GenerationParams,
        GenerationStats,
        ReasoningDelta,
        TextDelta,
        Usage,
    )
    from local_engine.runtime.mlx_lm_engine import MlxLmEngine
    from local_engine.runtime.mlx_lm_files import check_model_path
    from local_engine.runtime.tokenizer import Tokenizer, TokenizerError, find_tokenizer_file
    from local_engine.runtime.worker import SerialWorker

# name the app uses -> the engine module that defines it.
_NAMES: dict[str, str] = {
    "KVStore": "local_engine.cache.kv_store",
    "compare_models": "local_engine.checkpoint.compare",
    "read_prompts_file": "local_engine.checkpoint.compare",
    "convert": "local_engine.checkpoint.convert",
    "LoadProgress": "local_engine.checkpoint.loader",
    "memory_plan": "local_engine.checkpoint.plan",
    "preset_model_config": "local_engine.checkpoint.plan",
    "write_random_checkpoint": "local_engine.checkpoint.random_weights",
    "Recipe": "local_engine.checkpoint.recipes",
    "load_recipe": "local_engine.checkpoint.recipes",
    "EngineError": "local_engine.errors",
    "RANDOM_MARKER_KEY": "local_engine.model.config",
    "load_config": "local_engine.model.config",
    "ChatEncodingError": "local_engine.runtime.chat",
    "render_prompt": "local_engine.runtime.chat",
    "Engine": "local_engine.runtime.engine",
    "ToolCallStart": "local_engine.runtime.events",
    "ToolCallDelta": "local_engine.runtime.events",
    "ToolCallEnd": "local_engine.runtime.events",
    "ToolCallError": "local_engine.runtime.events",
    "Done": "local_engine.runtime.generate",
    "GenerationParams": "local_engine.runtime.generate",
    "GenerationStats": "local_engine.runtime.generate",
    "ReasoningDelta": "local_engine.runtime.generate",
    "TextDelta": "local_engine.runtime.generate",
    "Usage": "local_engine.runtime.generate",
    "MlxLmEngine": "local_engine.runtime.mlx_lm_engine",
    "check_model_path": "local_engine.runtime.mlx_lm_files",
    "Tokenizer": "local_engine.runtime.tokenizer",
    "TokenizerError": "local_engine.runtime.tokenizer",
    "find_tokenizer_file": "local_engine.runtime.tokenizer",
    "SerialWorker": "local_engine.runtime.worker",
}

# Spelled out (not sorted(_NAMES)) so linters see the TYPE_CHECKING imports as exports;
# a test checks that the two agree.
__all__ = [
    "RANDOM_MARKER_KEY",
    "ChatEncodingError",
    "Done",
    "Engine",
    "EngineError",
    "GenerationParams",
    "GenerationStats",
    "KVStore",
    "LoadProgress",
    "MlxLmEngine",
    "ReasoningDelta",
    "Recipe",
    "SerialWorker",
    "TextDelta",
    "Tokenizer",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallError",
    "ToolCallStart",
    "TokenizerError",
    "Usage",
    "check_model_path",
    "compare_models",
    "convert",
    "find_tokenizer_file",
    "kv_activity",
    "load_config",
    "load_recipe",
    "memory_plan",
    "preset_model_config",
    "read_prompts_file",
    "render_prompt",
    "write_random_checkpoint",
]


def kv_activity() -> Any:
    """This process's KV cache counters, or None before the engine used a KV store.

    Never imports the engine: before it ran, there is nothing to show.
    """
    module = sys.modules.get("local_engine.cache.kv_activity")
    return None if module is None else module.activity()


def __getattr__(name: str) -> Any:
    module_name = _NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
