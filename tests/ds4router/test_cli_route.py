"""`ds4router route` as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY4kQz9Lp2vW"


def run(
    args: list[str], *, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ds4router", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ},
        timeout=60,
    )


def test_aws_secret_on_stdin_is_secret_and_never_printed() -> None:
    text = f"deploy with\naws_secret_access_key = {AWS_SECRET}\n"
    for extra in (["--json"], ["--explain"], []):
        result = run(["route", "-", *extra], stdin=text)
        assert result.returncode == 0, result.stderr
        for stream in (result.stdout, result.stderr):
            assert AWS_SECRET not in stream
            assert AWS_SECRET[:12] not in stream and AWS_SECRET[-12:] not in stream
    data = json.loads(run(["route", "-", "--json"], stdin=text).stdout)
    assert data["privacy"] == "secret"
    assert data["target"] != "cloud"
    assert data["findings"][0]["kind"] == "aws_secret_access_key"
    assert set(data) >= {"target", "model", "rule", "privacy", "task", "reasons", "findings"}


def test_architecture_goes_to_the_configured_cloud_model(tmp_path: Path) -> None:
    (tmp_path / ".ds4router.yaml").write_text(
        "routes:\n"
        "  - name: hard-thinking\n"
        "    when: {task: [architecture]}\n"
        "    to: cloud:anthropic/claude-opus-4-7\n"
    )
    result = run(
        ["route", "/task architecture design the sharding", "--project", str(tmp_path), "--json"]
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["target"], data["model"], data["rule"]) == (
        "cloud",
        "anthropic/claude-opus-4-7",
        "hard-thinking",
    )
    assert data["task"] == "architecture" and data["task_source"] == "tag"


@pytest.mark.parametrize(
    ("args", "config", "needle"),
    [
        (["route", "hi", "--file", "missing.py"], None, "--file missing.py: no such file"),
        (["route", "hi"], "routes: [\n", "invalid YAML"),
        (["route", "hi"], "privacy: {defualt: secret}\n", "did you mean 'default'?"),
        (["route", "/task sonnets hi"], None, "unknown task type"),
    ],
)
def test_user_errors_are_one_clear_line_and_exit_2(tmp_path: Path, args, config, needle) -> None:
    if config is not None:
        (tmp_path / ".ds4router.yaml").write_text(config)
    result = run(args, cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")


def test_help_is_light() -> None:
    code = (
        "import sys; from ds4router.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('litellm', 'mlx', 'textual', 'torch', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "route" in out.stdout and "config" in out.stdout
