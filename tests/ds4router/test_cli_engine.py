"""``ds4router engine``: init-random, info, generate, through the real CLI group.

The acceptance run (init-random then generate --json) goes through a subprocess, as a
user would type it; the rest runs in-process. Until the lead adds ``engine`` to
``ds4router.cli.SUBCOMMANDS`` the tests plug it in themselves (``setdefault``: the real
entry wins once it exists).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_support import run

from ds4router import cli
from ds4router.commands import engine_cmd, engine_run
from local_engine.checkpoint.random_weights import PRESETS
from local_engine.runtime.chat import render_prompt
from local_engine.runtime.tokenizer import Tokenizer

ENGINE_ENTRY = ("ds4router.commands.engine_cmd", "The local DeepSeek V4 Flash engine.")
MAIN = (
    "import sys\n"
    "from ds4router import cli\n"
    f"cli.SUBCOMMANDS.setdefault('engine', {ENGINE_ENTRY!r})\n"
    "cli.main(sys.argv[1:])\n"
)


@pytest.fixture(autouse=True)
def engine_command(monkeypatch: pytest.MonkeyPatch) -> None:
    if "engine" not in cli.SUBCOMMANDS:
        monkeypatch.setitem(cli.SUBCOMMANDS, "engine", ENGINE_ENTRY)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written by the command itself, in a subprocess (also the acceptance's first half)."""
    out = tmp_path_factory.mktemp("cli-engine") / "m"
    done = ds4router("engine", "init-random", str(out), "--preset", "tiny")
    assert done.returncode == 0, done.stderr
    assert "random tiny checkpoint" in done.stdout
    return out


def ds4router(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-c", MAIN, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def copy_of(model: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(model, tmp_path / name))


def edit_config(model: Path, **changes: object) -> None:
    path = model / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_acceptance_init_random_then_generate_json(tiny: Path) -> None:
    done = ds4router(
        "engine", "generate", str(tiny), "--prompt", "hi", "--max-tokens", "16", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON object
    expected_prompt = Tokenizer.load(tiny).encode(
        render_prompt([{"role": "user", "content": "hi"}])
    )
    assert result["prompt_tokens"] == len(expected_prompt)
    assert 1 <= result["generated_tokens"] <= 16
    if result["finish_reason"] == "length":
        assert result["generated_tokens"] == 16
    assert result["text"]
    assert result["ttft_s"] > 0 and result["prefill_tok_s"] > 0 and result["decode_tok_s"] > 0
    assert result["peak_memory_bytes"] > 0
    assert result["is_random"] is True and result["reasoning"] is None


def test_info_says_the_weights_are_random(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "engine", "info", str(tiny))
    assert code == 0, err
    assert "RANDOM WEIGHTS (preset tiny, seed 0)" in out
    assert "deepseek_v4" in out and "context limit" in out

    code, out, err = run(capsys, "engine", "info", str(tiny), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["is_random"] is True and info["random_weights"]["preset"] == "tiny"
    assert info["layers"] == 4 and info["hidden_size"] == 128 and info["vocab_size"] == 129280
    assert info["parameters"] > 0 and info["weight_bytes"] == sum(info["bytes_by_dtype"].values())


def test_generate_streams_text_and_reports_figures(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Write one word.")
    argv = ["engine", "generate", str(tiny), "--prompt-file", str(prompt), "--max-tokens", "5"]
    code, out, err = run(capsys, *argv, "--seed", "3")
    assert code == 0, err
    assert out.strip()
    assert "note: RANDOM WEIGHTS" in err
    assert "5 generated" in err and "tok/s" in err and "TTFT" in err

    again = run(capsys, *argv, "--seed", "3")
    assert again[1] == out  # the same seed samples the same text
    json_run = run(capsys, *argv, "--seed", "3", "--json")
    assert json.loads(json_run[1])["text"] + "\n" == out


@pytest.mark.parametrize(
    "extra",
    [(), ("--prompt", "a", "--prompt-file", "-")],
    ids=["no prompt", "two prompts"],
)
def test_generate_needs_exactly_one_prompt(
    tiny: Path, extra: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "engine", "generate", str(tiny), *extra)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "exactly one of --prompt" in err


def test_engine_errors_are_one_line_and_exit_2(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "absent", "does not exist")

    unknown = copy_of(tiny, tmp_path, "unknown")
    edit_config(unknown, model_type="llama")
    cases["model_type"] = (unknown, "'llama'")

    mismatch = copy_of(tiny, tmp_path, "mismatch")
    edit_config(mismatch, moe_intermediate_size=96)
    cases["shape"] = (mismatch, "expected [96, 128]")

    for name, (path, needle) in cases.items():
        for sub in (["info"], ["generate", "--prompt", "hi"]):
            code, out, err = run(capsys, "engine", sub[0], str(path), *sub[1:])
            assert code == 2, (name, sub, err)
            assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
            assert needle in err, (name, err)
            assert "Traceback" not in err

    unloaded = copy_of(tiny, tmp_path, "unloaded")  # a model loaded already is not re-checked
    code, _, err = run(capsys, "engine", "info", str(unloaded), "--memory-limit-gb", "0.01")
    assert code == 2 and "needs about" in err and err.count("\n") == 1


def test_init_random_refuses_a_directory_with_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "engine", "init-random", str(tmp_path))
    assert code == 2 and "not empty" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_init_random_replaces_an_earlier_random_checkpoint(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy_of(tiny, tmp_path)
    (model / "model-00002-of-00002.safetensors").write_bytes(b"stale shard of an old checkpoint")
    code, out, err = run(
        capsys, "engine", "init-random", str(model), "--layers", "2", "--seed", "5"
    )
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["ds4router_random_weights"]["seed"] == 5
    assert sorted(p.name for p in model.glob("*.safetensors")) == [
        "model-00001-of-00001.safetensors"
    ]
    code, out, err = run(capsys, "engine", "info", str(model), "--json")
    assert code == 0, err
    assert json.loads(out)["layers"] == 2


def test_the_presets_offered_are_the_engines() -> None:
    assert sorted(engine_run.PRESETS) == sorted(PRESETS)


def test_engine_group_attaches_only_modules_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "engine_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "quant.py").write_text(
        textwrap.dedent(
            """
            import click

            @click.command("plan")
            def plan() -> None:
                '''Plan a quantization.'''
                click.echo("planned")

            commands = [plan]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        engine_cmd,
        "MODULES",
        ("ds4router.commands.engine_run", "engine_plugins.quant", "engine_plugins.absent"),
    )
    code, out, _ = run(capsys, "engine", "--help")
    assert code == 0
    for name in ("info", "generate", "init-random", "plan"):
        assert f"  {name} " in out
    code, out, _ = run(capsys, "engine", "plan")
    assert (code, out) == (0, "planned\n")
    code, _, err = run(capsys, "engine", "convert")
    assert code == 2 and "No such command" in err


def test_engine_help_imports_neither_mlx_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from ds4router import cli\n"
        f"cli.SUBCOMMANDS.setdefault('engine', {ENGINE_ENTRY!r})\n"
        "for argv in (['engine', '--help'], ['engine', 'generate', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'numpy', 'torch'))\n"
        "print('HEAVY', *heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "init-random" in done.stdout and "--prompt-file" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY"
