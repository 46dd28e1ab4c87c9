"""Local servers (`local.servers`, targeted as `local:<name>`): a loopback server is local for
the privacy invariant, any other host is a cloud target unless `trust: on_prem` (capped by
`privacy.on_prem_max_privacy`); requests reach a real loopback server; priced as local."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_support import run
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_server import OpenAIServer, ok

from ds4router.config import Config, load_config
from ds4router.routing.classify import classify
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.request import Request
from ds4router.routing.router import RouterState, decide
from ds4router.servers import is_loopback, may_send
from ds4router.targets import LocalServer

SECRET = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzzzzzzz"
DEFAULTS = load_config(cwd=Path("/")).config


@pytest.mark.parametrize(
    ("api_base", "local"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://127.3.2.1:1234/v1", True),
        ("http://[::1]:11434/v1", True),
        ("http://localhost:8000/v1", True),
        ("unix:///run/llama.sock", True),
        ("http://10.0.0.7:8000/v1", False),
        ("http://192.168.1.20:8000/v1", False),
        ("https://gpu.example.com/v1", False),
        ("http://localhost.example.com/v1", False),
        ("http://127.0.0.1.example.com/v1", False),
    ],
)
def test_only_this_machine_counts_as_loopback(api_base: str, local: bool) -> None:
    assert is_loopback(api_base) is local


def test_ask_reaches_a_loopback_server_and_a_secret_may_go_there(
    tmp_path: Path,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    openai_server.script(ok("Stored safely."))
    (tmp_path / ".ds4router.yaml").write_text(
        "local:\n  servers:\n"
        f"    - {{name: llama, api_base: '{openai_server.base_url}', model: smol, power: 30}}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "ask", "--model", "local:llama", "--json", SECRET)
    assert code == 0, err
    import json

    data = json.loads(out)
    assert data["text"] == "Stored safely." and data["privacy"] == "secret"
    assert data["route"] == "local" and data["cost_usd"] > 0  # 30 W x seconds, not $0
    body = openai_server.requests[-1].body
    assert body is not None and body["model"] == "smol"


def _config(api_base: str, trust: str | None, cloud_max: str, on_prem_max: str) -> Config:
    data = DEFAULTS.model_dump(mode="json")
    server: dict[str, object] = {"name": "team", "api_base": api_base, "model": "v4-flash"}
    if trust:
        server["trust"] = trust
    data["local"]["servers"] = [server]
    data["privacy"]["cloud_max_privacy"] = cloud_max
    data["privacy"]["on_prem_max_privacy"] = on_prem_max
    data["default"] = "local:team"
    data["fallback"] = {"cloud_unavailable": "local:team", "local_unavailable": "local:team"}
    return Config.model_validate(data)


HOSTS = st.sampled_from(
    ["127.0.0.1", "127.9.9.9", "[::1]", "localhost", "10.1.2.3", "gpu.corp.example", "8.8.8.8"]
)
LEVELS = st.sampled_from([str(level) for level in PrivacyLevel])
TEXTS = st.sampled_from(["hello", "#confidential the plan", SECRET, "#secret nothing"])


@settings(max_examples=int(os.environ.get("DS4_PROPERTY_EXAMPLES", "300")), deadline=None)
@given(
    host=HOSTS,
    trust=st.sampled_from([None, "on_prem"]),
    cloud_max=LEVELS,
    on_prem_max=LEVELS,
    text=TEXTS,
    local_up=st.booleans(),
    explicit=st.booleans(),
)
def test_a_secret_never_reaches_a_server_off_this_machine_without_on_prem(
    host: str,
    trust: str | None,
    cloud_max: str,
    on_prem_max: str,
    text: str,
    local_up: bool,
    explicit: bool,
) -> None:
    api_base = f"http://{host}:8000/v1"
    config = _config(api_base, trust, cloud_max, on_prem_max)
    request = Request(text, model=LocalServer("team") if explicit else None)
    classified = classify(request, config)
    decision = decide(classified, config, RouterState(local_available=local_up))
    level = max(classified.privacy.level, decision.privacy)
    for target in decision.chain:
        assert may_send(target, level, config)
        if isinstance(target, LocalServer) and not is_loopback(api_base):
            cap = PrivacyLevel(on_prem_max if trust == "on_prem" else cloud_max)
            assert level <= cap
            if trust is None:
                assert level <= PrivacyLevel(cloud_max)
    if level == PrivacyLevel.SECRET and not is_loopback(api_base) and trust is None:
        assert LocalServer("team") not in decision.chain or cloud_max == "secret"
