"""`ds4router init` writes a commented, valid project file from what is found (keys by name
only, the demo model, loopback servers) and never overwrites without --force; `ds4router
doctor` says what can answer and the command that fixes what cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run
from openai_server import OpenAIServer

from ds4router.commands.init_cmd import FoundServer, probe_servers, project_yaml
from ds4router.config import validate_file

KEY = "sk-test-" + "x" * 40


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "billing-api"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def test_init_names_the_project_and_keys_by_name_only_and_refuses_to_overwrite(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    code, out, err = run(capsys, "init")
    assert code == 0, err
    written = project / ".ds4router.yaml"
    text = written.read_text(encoding="utf-8")
    assert Path(out.strip()) == written
    assert "project: billing-api" in text and "api_key_env: OPENAI_API_KEY" in text
    assert KEY not in text  # the value is never written
    config = validate_file(written)
    assert config.project == "billing-api" and config.cloud.models[0].name == "openai/gpt-4.1"
    code, _out, err = run(capsys, "init")
    assert code == 2 and "--force" in err
    assert written.read_text(encoding="utf-8") == text
    code, _out, _err = run(capsys, "init", "--force", str(project))
    assert code == 0


def test_init_writes_a_loopback_server_it_found(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    openai_server.models = ["qwen3-4b"]
    found = probe_servers([("lmstudio", openai_server.port), ("none", 9)])
    assert found == [FoundServer("lmstudio", openai_server.base_url, "qwen3-4b")]
    path = tmp_path / ".ds4router.yaml"
    path.write_text(project_yaml("p", [], None, found), encoding="utf-8")
    config = validate_file(path)
    assert [(s.name, s.model) for s in config.local.servers] == [("lmstudio", "qwen3-4b")]


def test_doctor_with_nothing_configured_gives_the_fix(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run(capsys, "doctor")
    assert code == 1
    assert "fix: ds4router models pull demo" in out and "nothing can answer yet" in out


def test_doctor_lists_what_answers_and_what_is_missing(
    project: Path,
    demo_here: Path,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (project / ".ds4router.yaml").write_text(
        "cloud: {models: [{name: openai/gpt-4.1, api_key_env: OPENAI_API_KEY}]}\n"
        "local:\n  servers:\n"
        f"    - {{name: llama, api_base: '{openai_server.base_url}', model: m}}\n"
        "    - {name: gone, api_base: 'http://127.0.0.1:9/v1', model: m}\n",
        encoding="utf-8",
    )
    code, out, _err = run(capsys, "doctor")
    assert code == 0
    assert "ok  local engine: demo-size model" in out
    assert "cloud openai/gpt-4.1: key OPENAI_API_KEY unset" in out
    assert "fix: export OPENAI_API_KEY=" in out
    assert "ok  server local:llama" in out and "loopback" in out
    assert "server local:gone: not answering" in out
    assert "can answer now: local, local:llama" in out
