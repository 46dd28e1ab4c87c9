"""``ds4router init [DIR]``: a commented ``.ds4router.yaml`` for a project, from what is here.

What it looks at (and never more): the directory's name (the project), provider keys in the
environment **by variable name only** (a value is never read into the file), the demo model
if it was pulled, and OpenAI-compatible servers answering on loopback at the usual ports
(Ollama, LM Studio, llama.cpp / mlx_lm.server, vLLM). It refuses to overwrite a file
without ``--force``. The text is built by a pure function (``project_yaml``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from ds4router.config.loader import PROJECT_FILE
from ds4router.errors import Ds4RouterError

# (name, port) of servers commonly run on a developer's machine; probed on 127.0.0.1 only.
KNOWN_SERVERS: tuple[tuple[str, int], ...] = (
    ("ollama", 11434),
    ("lmstudio", 1234),
    ("llamacpp", 8080),
    ("vllm", 8000),
)
# A model each provider's key can reach, for the commented cloud entry.
STARTER_MODELS: dict[str, str] = {
    "OPENAI_API_KEY": "openai/gpt-4.1",
    "ANTHROPIC_API_KEY": "anthropic/claude-sonnet-4-5",
    "DEEPSEEK_API_KEY": "deepseek/deepseek-chat",
    "GEMINI_API_KEY": "gemini/gemini-2.5-flash",
}


@dataclass(frozen=True)
class FoundServer:
    name: str
    api_base: str
    model: str


def project_yaml(
    name: str, keys: Sequence[str], demo: Path | None, servers: Sequence[FoundServer]
) -> str:
    """The commented project file for what was found (pure)."""
    lines = [
        "# ds4router project config, written by `ds4router init`. Layers: built-in defaults <",
        "# your user config < this file. `ds4router config show` prints the merged result;",
        "# `ds4router doctor` says what can answer now.",
        f"project: {name}",
        "",
        "privacy:",
        "  default: internal            # the level of a request with nothing else to say",
        "  cloud_max_privacy: internal  # above this, a request never leaves the machine",
        "  on_prem_max_privacy: confidential  # the most a `trust: on_prem` server may get",
        '  # paths: [{glob: "src/payments/**", level: secret}]',
        "",
        "local:",
    ]
    if demo is not None:
        lines.append(
            f"  # the demo-size model is pulled ({demo}) and used while no model_path is set"
        )
    lines += [
        "  # engine: {model_path: ~/models/ds4-flash-q2}        # DeepSeek V4 Flash",
        "  # engine: {kind: mlx-lm, model_path: ~/models/qwen3-4b-4bit}  # any MLX model",
    ]
    if servers:
        lines.append("  servers:  # found on this machine; target them as local:<name>")
        for server in servers:
            lines.append(
                f'    - {{name: {server.name}, api_base: "{server.api_base}", '
                f'model: "{server.model}"}}'
            )
    else:
        lines.append(
            '  servers: []  # e.g. [{name: llama, api_base: "http://127.0.0.1:8080/v1", model: m}]'
        )
    lines += ["", "cloud:"]
    found = [k for k in keys if k in STARTER_MODELS]
    if found:
        lines.append(
            "  models:  # keys found in the environment (by name; values are never stored)"
        )
        for key in found:
            lines.append(f"    - {{name: {STARTER_MODELS[key]}, api_key_env: {key}}}")
    else:
        lines.append("  models: []  # e.g. [{name: openai/gpt-4.1, api_key_env: OPENAI_API_KEY}]")
    lines += ["", "default: local"]
    if found:
        lines += [
            "routes:",
            "  # public and internal work may use the cloud; confidential and secret stay local",
            "  - {name: hard-thinking, when: {task: [architecture]}, "
            f'to: "cloud:{STARTER_MODELS[found[0]]}"}}',
        ]
    return "\n".join(lines) + "\n"


def provider_keys(env: Mapping[str, str]) -> list[str]:
    """Names of provider key variables that are set (their values are not looked at again)."""
    from ds4router.backends.endpoints import PROVIDER_DEFAULTS

    names = sorted({var for _, var in PROVIDER_DEFAULTS.values()})
    return [name for name in names if env.get(name)]


def probe_servers(
    known: Sequence[tuple[str, int]] = KNOWN_SERVERS, timeout_s: float = 0.3
) -> list[FoundServer]:
    """OpenAI-compatible servers answering ``GET /v1/models`` on 127.0.0.1 (loopback only)."""
    import http.client
    import json

    found: list[FoundServer] = []
    for name, port in known:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            connection.request("GET", "/v1/models")
            response = connection.getresponse()
            body = json.loads(response.read() or b"{}") if response.status == 200 else {}
        except (OSError, ValueError, http.client.HTTPException):
            continue
        finally:
            connection.close()
        models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
        if models and isinstance(models[0], str):
            found.append(FoundServer(name, f"http://127.0.0.1:{port}/v1", models[0]))
    return found


@click.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing .ds4router.yaml.")
def command(directory: Path | None, force: bool) -> None:
    """Write a commented .ds4router.yaml in DIRECTORY (default: here)."""
    from ds4router.demo_model import installed_demo

    root = (directory or Path.cwd()).expanduser().resolve()
    if not root.is_dir():
        raise Ds4RouterError(f"{root}: no such directory")
    target = root / PROJECT_FILE
    if target.exists() and not force:
        raise Ds4RouterError(f"{target} exists; use --force to overwrite it")
    text = project_yaml(root.name, provider_keys(os.environ), installed_demo(), probe_servers())
    target.write_text(text, encoding="utf-8")
    click.echo(str(target))
    click.echo("next: `ds4router doctor` says what can answer now", err=True)
