"""privacy.on_detected: redact — a request private only by its findings may go to the cloud
with each finding replaced by a stable placeholder; paths, tags and the default never lower."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai_server import OpenAIServer
from session_support import collect, factory, ledger_rows

from ds4router.config import Config, load_config
from ds4router.config.loader import LoadedConfig
from ds4router.routing.classify import classify
from ds4router.routing.explain import decision_dict
from ds4router.routing.request import Attachment, Request
from ds4router.routing.router import RouterState, decide
from ds4router.sessions.session import Session
from ds4router.targets import CloudModel, LocalEngine

GH = "ghp_" + "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz1Xc3Vb5N"
KEY_ENV = "DS4_REDACT_TEST_KEY"
MODEL = "openai/gpt-4.1"


def config(**privacy: Any) -> Config:
    data = load_config(cwd=Path("/")).config.model_dump(mode="json")
    data.update(default=f"cloud:{MODEL}", routes=[])
    data["privacy"] = {**data["privacy"], "on_detected": "redact", **privacy}
    return Config.model_validate(data)


def route(text: str, cfg: Config, files: tuple[Attachment, ...] = ()) -> Any:
    request = classify(Request(text, files), cfg)
    return request, decide(request, cfg, RouterState())


def test_findings_alone_are_redacted_for_the_cloud() -> None:
    request, decision = route(f"why does {GH} fail?", config())
    assert decision.target == CloudModel(MODEL)
    assert decision.redact and decision.redactions == 1
    assert str(decision.privacy) == "secret"  # the level itself is kept, for the record
    shown = decision_dict(decision, request)
    assert shown["redacted"] is True and shown["redactions"] == 1
    assert any("on_detected: redact" in r for r in decision.reasons)
    # The default stays keep_local.
    _, kept = route(f"why does {GH} fail?", config(on_detected="keep_local"))
    assert kept.target == LocalEngine() and not kept.redact


def test_paths_tags_and_the_default_are_never_lowered_by_redaction() -> None:
    cfg = config(paths=[{"glob": "secrets/**", "level": "secret"}])
    _, by_path = route(f"see {GH}", cfg, (Attachment("secrets/a.txt", "x"),))
    _, by_tag = route(f"#confidential see {GH}", config())
    _, by_default = route(f"see {GH}", config(default="confidential"))
    for decision in (by_path, by_tag, by_default):
        assert decision.target == LocalEngine()
        assert not any(isinstance(f, CloudModel) for f in decision.fallbacks)


def _project(tmp_path: Path, api_base: str) -> LoadedConfig:
    data = {
        "project": "acme",
        "default": f"cloud:{MODEL}",
        "fallback": {"cloud_unavailable": None, "local_unavailable": None},
        "privacy": {"on_detected": "redact"},
        "cloud": {
            "models": [{"name": MODEL, "api_base": api_base, "api_key_env": KEY_ENV}],
            "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 20},
            "retries": 0,
        },
    }
    directory = tmp_path / "acme"
    directory.mkdir()
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return load_config(directory)


async def test_the_cloud_gets_stable_placeholders_and_the_ledger_says_so(
    tmp_path: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-redact-test-0000")
    session = Session(_project(tmp_path, openai_server.base_url), backend_factory=factory(None))
    text = f"token {GH} fails; I also tried {GH} and password=Vq7#mT2!pLx9"
    events = await collect(session, text)
    assert events[0].decision.target == CloudModel(MODEL)
    (sent,) = [r for r in openai_server.requests if r.path.endswith("/chat/completions")]
    body = json.dumps(sent.body)
    assert GH not in body and "Vq7#mT2!pLx9" not in body
    content = sent.body["messages"][-1]["content"]
    placeholders = [w[:8] for w in content.split("[REDACTED github_token ")[1:]]
    assert len(placeholders) == 2 and placeholders[0] == placeholders[1]
    # The same secret in a follow-up of the conversation gets the same placeholder.
    await collect(session, f"still {GH}", conversation_id=session.conversation_id)
    last = openai_server.requests[-1].body["messages"][-1]["content"]
    assert f"[REDACTED github_token {placeholders[0]}]" in last
    session.close()
    rows = ledger_rows()
    assert [(r.redacted, r.redacted_findings) for r in rows] == [(True, 3), (True, 1)]
    assert os.environ[KEY_ENV]  # the key came from the environment, never a file
