"""``ds4router engine convert | compare | plan`` through the real CLI group.

Conversion runs in a subprocess, as a user would type it, so the peak memory it prints is
its own process's. Until the lead adds ``engine`` to ``ds4router.cli.SUBCOMMANDS`` the tests
plug it in themselves (``setdefault``: the real entry wins once it exists).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run

from ds4router import cli
from ds4router.commands import engine_quant
from local_engine.checkpoint.plan import PLAN_PRESETS, memory_plan, preset_model_config
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.checkpoint.recipes import load_recipe

ENGINE_ENTRY = ("ds4router.commands.engine_cmd", "The local DeepSeek V4 Flash engine.")
MAIN = (
    "import sys\n"
    "from ds4router import cli\n"
    f"cli.SUBCOMMANDS.setdefault('engine', {ENGINE_ENTRY!r})\n"
    "cli.main(sys.argv[1:])\n"
)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def engine_command(monkeypatch: pytest.MonkeyPatch) -> None:
    if "engine" not in cli.SUBCOMMANDS:
        monkeypatch.setitem(cli.SUBCOMMANDS, "engine", ENGINE_ENTRY)


def ds4router(*argv: str, code: str = MAIN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("src") / "tiny", preset="tiny", seed=3)


@pytest.fixture(scope="module")
def converted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dst") / "q2"
    done = ds4router("engine", "convert", str(source), str(out), "--recipe", "q2", "--json")
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def test_convert_measures_its_peak_memory_against_the_bound(converted: tuple[Path, dict]) -> None:
    out, result = converted
    assert result["recipe"] == "q2" and (out / "config.json").is_file()
    assert 0 < result["peak_rss_bytes"] <= result["ram_bound_bytes"]
    assert result["ram_bound_bytes"] == 3 * result["largest_source_tensor_bytes"] + 10**9
    assert result["within_ram_bound"] is True
    print(
        f"tiny q2 convert: peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB, bound"
        f" {result['ram_bound_bytes'] / 2**20:.0f} MiB, {result['seconds']} s"
    )


def test_convert_again_needs_resume_and_resume_verifies(
    source: Path, converted: tuple[Path, dict]
) -> None:
    out, first = converted
    again = ds4router("engine", "convert", str(source), str(out))
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "Traceback" not in again.stderr
    assert "pass --resume to verify it" in again.stderr
    resumed = ds4router("engine", "convert", str(source), str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"({len(first['shards'])} finished shards verified)" in resumed.stdout
    assert "peak RAM" in resumed.stdout and "within the bound" in resumed.stdout
    assert "converting" in resumed.stderr  # the progress bar (plain text when not a tty)


def test_convert_refuses_a_foreign_directory_in_one_line(
    capsys: pytest.CaptureFixture[str], source: Path
) -> None:
    code, out, err = run(
        capsys, "engine", "convert", str(source), str(source.parent), "--recipe", "q4"
    )
    assert code == 2
    assert "refusing to write over it" in err and "Traceback" not in err


def test_unknown_recipe_is_one_actionable_line(
    capsys: pytest.CaptureFixture[str], source: Path, tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "engine", "convert", str(source), str(tmp_path / "x"), "--recipe", "q3"
    )
    assert code == 2
    assert "unknown recipe 'q3'" in err and "q2" in err and "q4" in err
    assert not (tmp_path / "x").exists()


def test_compare_prints_kl_and_top1(
    capsys: pytest.CaptureFixture[str], source: Path, converted: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = converted
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("print('hello world')\nThe cat sat on the mat.\n")
    code, stdout, _ = run(
        capsys, "engine", "compare", str(source), str(out), "--prompts", str(prompts), "--json"
    )
    assert code == 0
    result = json.loads(stdout)
    assert result["prompts"] == 2 and result["positions"] == len(result["per_position"]["kl"])
    assert result["mean_kl"] > 0 and 0 <= result["top1_agreement"] <= 1
    code, stdout, err = run(capsys, "engine", "compare", str(source), str(out), "--max-tokens", "8")
    assert code == 0
    assert "KL(A||B) nats: mean" in stdout and "top-1 agreement" in stdout
    assert "RANDOM WEIGHTS" in err


def test_plan_json_has_the_totals_and_matches_the_library(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, _ = run(
        capsys, "engine", "plan", "--preset", "deepseek-v4-flash", "--recipe", "q2", "--json"
    )
    assert code == 0
    result = json.loads(stdout)
    want = memory_plan(preset_model_config("deepseek-v4-flash"), load_recipe("q2"))
    assert result["total_weight_bytes"] == want.total_weight_bytes
    assert result["bytes_read_per_token"] == want.bytes_read_per_token
    assert result["fits"] is True and result["memory_bytes"] == 128 * 2**30
    assert set(result["kv_bytes_by_layer_type"]) == {
        "sliding_attention",
        "compressed_sparse_attention",
        "heavily_compressed_attention",
    }


def test_plan_text_says_whether_it_fits(capsys: pytest.CaptureFixture[str], source: Path) -> None:
    code, stdout, _ = run(capsys, "engine", "plan", "--recipe", "q2", "--context", "1000000")
    assert code == 0 and "fits in" in stdout and "KV at 1,000,000 tokens" in stdout
    code, stdout, _ = run(capsys, "engine", "plan", "--recipe", "q4")
    assert code == 0 and "does NOT fit" in stdout
    code, stdout, _ = run(
        capsys, "engine", "plan", "--model", str(source), "--recipe", "q2", "--memory-gb", "8"
    )
    assert code == 0 and str(source) in stdout and "fits" in stdout


def test_plan_presets_are_spelled_out_in_the_cli() -> None:
    assert set(engine_quant.PLAN_PRESETS) == set(PLAN_PRESETS)


def test_plan_does_not_import_mlx() -> None:
    code = MAIN.replace(
        "cli.main(sys.argv[1:])\n",
        "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('mlx imported:', 'mlx.core' in sys.modules)\n",
    )
    done = ds4router("engine", "plan", "--json", code=code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("mlx imported: False")


def test_ctrl_c_during_convert_says_how_to_resume(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: Path,
    tmp_path: Path,
) -> None:
    import local_engine.checkpoint.convert as convert_module

    real = convert_module.convert

    def interrupted(*args: object, **kwargs: object) -> object:
        progress = kwargs["progress"]

        def stop(done: int, total: int, what: str) -> None:
            progress(done, total, what)  # type: ignore[operator]
            if done > total // 2:
                raise KeyboardInterrupt

        kwargs["progress"] = stop
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(convert_module, "convert", interrupted)
    out = tmp_path / "q2"
    code, _, err = run(capsys, "engine", "convert", str(source), str(out))
    assert code == 130
    assert "interrupted; run the same command with --resume to continue" in err
    assert list(out.glob("*.partial")) and not (out / "config.json").exists()
    monkeypatch.setattr(convert_module, "convert", real)
    code, stdout, _ = run(capsys, "engine", "convert", str(source), str(out), "--resume")
    assert code == 0 and "wrote q2" in stdout
    assert (out / "config.json").is_file()
