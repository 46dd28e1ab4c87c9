"""Configuration: the schema (pydantic) and the layered loader."""

from __future__ import annotations

from ds4router.config.loader import (
    PROJECT_FILE,
    LoadedConfig,
    find_project_dir,
    load_config,
    read_config_file,
    source_of,
    validate_file,
)
from ds4router.config.schema import TASK_TYPES, Config

__all__ = [
    "PROJECT_FILE",
    "TASK_TYPES",
    "Config",
    "LoadedConfig",
    "find_project_dir",
    "load_config",
    "read_config_file",
    "source_of",
    "validate_file",
]
