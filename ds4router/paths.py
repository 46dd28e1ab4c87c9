"""Where ds4router keeps its files: user config, data (the database) and cache.

``DS4ROUTER_HOME`` puts all three under one directory (tests and portable
installs); otherwise platformdirs decides per OS.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "ds4router"


def _home() -> Path | None:
    value = os.environ.get("DS4ROUTER_HOME")
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "config"
    from platformdirs import user_config_path

    return user_config_path(APP)


def data_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "data"
    from platformdirs import user_data_path

    return user_data_path(APP)


def cache_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "cache"
    from platformdirs import user_cache_path

    return user_cache_path(APP)


def user_config_file() -> Path:
    return config_dir() / "config.yaml"


def database_path() -> Path:
    """The one SQLite database: the cost ledger and the conversation history."""
    override = os.environ.get("DS4ROUTER_DB")
    if override:
        return Path(override).expanduser()
    return data_dir() / "ds4router.sqlite3"


def kv_cache_dir() -> Path:
    return cache_dir() / "kv"


def configs_dir() -> Path:
    """The built-in ``configs/`` folder (repo checkout or installed wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "configs", here / "_configs"):
        if (candidate / "default.yaml").is_file():
            return candidate
    raise FileNotFoundError("ds4router's built-in configs/ folder is missing; reinstall ds4router")
