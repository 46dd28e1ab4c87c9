"""Running the CLI in-process from tests: exit code, stdout and stderr."""

from __future__ import annotations

import pytest

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
