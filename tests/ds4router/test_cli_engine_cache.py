"""``ds4router engine generate --kv-cache`` and ``ds4router engine cache ls|stats|verify|clear``.

The acceptance runs as a user would: two processes generate from the same long prompt
file with the same cache directory; the second restores the whole prompt from disk. The
maintenance commands run in-process against that directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run

from local_engine.checkpoint.random_weights import write_random_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORDS = "tide reef gull kelp swell shoal brine cove surf dune spray foam wake".split()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("cli-kv"), preset="tiny", seed=6)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompt") / "long.txt"
    path.write_text(" ".join(WORDS[(i * 7) % len(WORDS)] for i in range(1200)) + "\nSummarize.")
    return path


def generate(model: Path, prompt_file: Path, kv: Path, home: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS4ROUTER_HOME": str(home)}
    argv = ["engine", "generate", str(model), "--prompt-file", str(prompt_file)]
    argv += ["--kv-cache", str(kv), "--temperature", "0", "--max-tokens", "8", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "ds4router", *argv],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=home,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def two_runs(
    model: Path, prompt_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, object], dict[str, object], Path]:
    home = tmp_path_factory.mktemp("home")
    kv = home / "kv"
    return generate(model, prompt_file, kv, home), generate(model, prompt_file, kv, home), kv


def test_acceptance_the_second_run_restores_the_prompt_and_answers_the_same(
    two_runs: tuple[dict[str, object], dict[str, object], Path],
) -> None:
    first, second, kv = two_runs
    assert isinstance(first["prompt_tokens"], int) and first["prompt_tokens"] > 1000
    assert second["text"] == first["text"]
    assert first["cached_prompt_tokens"] == 0
    assert second["cached_prompt_tokens"] == second["prompt_tokens"] == first["prompt_tokens"]
    assert isinstance(first["ttft_s"], float) and isinstance(second["ttft_s"], float)
    assert second["ttft_s"] < first["ttft_s"] / 5
    assert isinstance(second["kv_restore_s"], float) and 0 < second["kv_restore_s"] < 5
    assert second["kv_cache"] == str(kv)


def test_ls_stats_and_json(
    two_runs: tuple[dict[str, object], dict[str, object], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, _, kv = two_runs
    code, out, err = run(capsys, "engine", "cache", "ls", "--kv-cache", str(kv), "--json")
    assert code == 0, err
    entries = json.loads(out)
    prompt_tokens = first["prompt_tokens"]
    assert isinstance(prompt_tokens, int)
    by_tokens = {e["tokens"]: e for e in entries}
    assert by_tokens[prompt_tokens]["hits"] == 1  # the second run's restore
    assert max(by_tokens) == prompt_tokens + 7  # the turn's end: 8 sampled, 7 fed back
    code, out, _ = run(capsys, "engine", "cache", "ls", "--kv-cache", str(kv))
    assert code == 0 and f"{prompt_tokens:,}" in out and "last used" in out

    code, out, err = run(capsys, "engine", "cache", "stats", "--kv-cache", str(kv), "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["entries"] == len(entries) and stats["models"] == 1 and stats["hits"] == 1
    on_disk = sum(p.stat().st_size for p in kv.glob("entries/*/*.kvc"))
    assert stats["nbytes"] == on_disk
    code, out, _ = run(capsys, "engine", "cache", "stats", "--kv-cache", str(kv))
    assert code == 0 and f"entries     {len(entries)}" in out


def test_verify_removes_a_damaged_entry_and_clear_empties_the_cache(
    two_runs: tuple[dict[str, object], dict[str, object], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kv = Path(shutil.copytree(two_runs[2], tmp_path / "kv"))
    files = sorted(kv.glob("entries/*/*.kvc"))
    victim = files[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    code, out, err = run(capsys, "engine", "cache", "verify", "--kv-cache", str(kv))
    assert code == 0, err
    assert f"checked {len(files)} entries" in out and "1 damaged and removed" in out
    assert victim.name in out and not victim.exists()
    code, out, _ = run(capsys, "engine", "cache", "verify", "--kv-cache", str(kv), "--json")
    assert json.loads(out)["removed"] == [] and json.loads(out)["ok"] == len(files) - 1

    code, out, _ = run(capsys, "engine", "cache", "clear", "--kv-cache", str(kv))
    assert code == 0 and f"removed {len(files) - 1} saved prefixes" in out
    assert not list(kv.glob("entries/*/*.kvc"))
    code, out, _ = run(capsys, "engine", "cache", "stats", "--kv-cache", str(kv), "--json")
    assert json.loads(out)["entries"] == 0


def test_the_default_directory_comes_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "engine", "cache", "stats")
    home = Path(os.environ["DS4ROUTER_HOME"])
    assert code == 0, err
    assert f"no KV cache at {home / 'cache' / 'kv'}" in out
    project = tmp_path / "proj"
    project.mkdir()
    configured = tmp_path / "elsewhere"
    (project / ".ds4router.yaml").write_text(
        f"project: p\nlocal:\n  engine:\n    kv_cache_dir: {configured}\n"
    )
    monkeypatch.chdir(project)
    code, out, err = run(capsys, "engine", "cache", "ls")
    assert code == 0, err
    assert f"no saved prefixes in {configured}" in out
    assert not configured.exists()  # looking does not create it


def test_a_file_instead_of_a_directory_is_one_line_exit_2(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, out, err = run(capsys, "engine", "cache", "ls", "--kv-cache", str(not_a_dir))
    assert code == 2 and "is a file" in err and "Traceback" not in err
    argv = ["engine", "generate", str(model), "--prompt", "hi", "--kv-cache", str(not_a_dir)]
    code, out, err = run(capsys, *argv)
    assert code == 2 and "is a file" in err and "Traceback" not in err
