"""Running the CLI in-process from tests: exit code, stdout and stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ds4router import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``ds4router ARGV...`` through ``cli.main``, as the console script calls it."""
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def cloud_project(
    tmp_path: Path,
    base_url: str,
    key_env: str,
    model: str,
    cloud: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A project ``acme`` whose default is ``model`` on the loopback server at ``base_url``;
    ``cloud`` overrides keys of its ``cloud:`` section, ``extra`` top-level keys."""
    directory = tmp_path / "acme"
    directory.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "project": "acme",
        "default": f"cloud:{model}",
        "cloud": {
            "models": [{"name": model, "api_base": base_url, "api_key_env": key_env}],
            "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 20},
            "retries": 0,
            **(cloud or {}),
        },
        "local": {"power": {"source": "configured"}},
        **extra,
    }
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return directory
