"""Layered configuration: validation errors name file, line and key; sources are tracked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ds4router.cli import cli
from ds4router.config import load_config, validate_file
from ds4router.errors import ConfigError
from ds4router.routing.levels import PrivacyLevel
from ds4router.targets import CloudModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "examples" / "acme-billing.yaml"


def test_the_design_example_validates_as_written() -> None:
    design = REPO.parent / "shared" / "DESIGN.md"
    if design.is_file():  # the copy must stay identical to the document
        block = design.read_text().split("# .ds4router.yaml (example)", 1)[1].split("```", 1)[0]
        assert EXAMPLE.read_text() == "# .ds4router.yaml (example)" + block
    config = validate_file(EXAMPLE)
    assert config.project == "acme-billing"
    assert [r.name for r in config.routes] == [
        "private-stays-local",
        "hard-thinking",
        "routine-local",
    ]
    assert config.routes[1].to == CloudModel("anthropic/claude-opus-4-7")
    assert config.privacy.paths[0].level is PrivacyLevel.SECRET
    assert config.budget.monthly_usd == 40
    assert config.cloud.models[1].api_key_env == "TEAM_KEY"
    assert config.local.hardware.price_usd == 4800


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_layers_merge_and_remember_where_each_value_came_from(tmp_path: Path) -> None:
    user = write(
        tmp_path / "user.yaml", "budget: {monthly_usd: 10}\nlocal: {electricity_usd_per_kwh: 0.3}\n"
    )
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    write(project / ".ds4router.yaml", "project: p1\nbudget: {monthly_usd: 25}\n")
    loaded = load_config(cwd=project / "src", user_file=user)
    assert loaded.project_dir == project.resolve()
    assert loaded.project_name == "p1"
    assert loaded.config.budget.monthly_usd == 25  # project beats user
    assert loaded.config.budget.warn_at == [0.5, 0.8, 1.0]  # default kept under a merged mapping
    assert loaded.config.local.electricity_usd_per_kwh == 0.3
    assert loaded.sources["budget.monthly_usd"].endswith(".ds4router.yaml")
    assert loaded.sources["local.electricity_usd_per_kwh"] == str(user)
    assert loaded.sources["budget.warn_at"] == "<built-in>"


def test_unknown_key_names_file_line_and_the_closest_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "project: x\nprivacy:\n  default: internal\n  cloud_max_privcy: secret\n",
    )
    with pytest.raises(ConfigError) as err:
        validate_file(path)
    message = str(err.value)
    assert f"{path}:4: privacy.cloud_max_privcy: unknown key 'cloud_max_privcy'" in message
    assert "did you mean 'cloud_max_privacy'?" in message


def test_bad_values_are_located_in_lists(tmp_path: Path) -> None:
    text = "routes:\n  - name: a\n    to: local\n  - name: b\n    when: {privacy: [topsecret]}\n    to: local\n"
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=r":5: routes\[1\]\.when\.privacy\[0\]"):
        validate_file(path)


def test_invalid_target_and_duplicate_rule_names(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "default: openai/gpt-4.1\n")
    with pytest.raises(ConfigError, match=r"a\.yaml:1: default: 'openai/gpt-4.1' is not a target"):
        validate_file(path)
    path = write(
        tmp_path / "b.yaml", "routes:\n  - {name: x, to: local}\n  - {name: x, to: refuse}\n"
    )
    with pytest.raises(ConfigError, match="two routes are named 'x'"):
        validate_file(path)


def test_api_keys_are_never_config_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "k.yaml",
        'cloud: {models: [{name: openai/gpt-4.1, api_key_env: "sk-abc123def456"}]}\n',
    )
    with pytest.raises(ConfigError, match="NAME of an environment variable") as err:
        validate_file(path)
    assert "sk-abc123def456" not in str(err.value)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "y.yaml", "privacy:\n  default: [internal\n")
    with pytest.raises(ConfigError, match=r"y\.yaml:\d+: invalid YAML"):
        validate_file(path)


def test_bare_on_off_are_accepted_for_history(tmp_path: Path) -> None:
    assert validate_file(write(tmp_path / "h.yaml", "history: off\n")).history == "off"


def test_cli_validate_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["config", "validate", str(EXAMPLE)])
    assert ok.exit_code == 0 and "OK (3 routes)" in ok.output
    project = tmp_path / "p"
    project.mkdir()
    write(project / ".ds4router.yaml", "budget: {monthly_usd: 12}\n")
    shown = runner.invoke(cli, ["config", "show", "--json", "--project", str(project)])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["config"]["budget"]["monthly_usd"] == 12
    assert data["sources"]["budget.monthly_usd"] == str(project.resolve() / ".ds4router.yaml")
    assert data["sources"]["privacy.default"] == "<built-in>"
