"""Nothing secret at rest: history keeps redacted text, the answer is scanned too, a
detected secret never reaches the KV cache on disk, and what ds4router writes is private."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import yaml
from cli_support import run
from scripted import ScriptedBackend, reply
from session_support import collect, factory

from ds4router import paths
from ds4router.config.loader import load_config
from ds4router.routing.levels import PrivacyLevel
from ds4router.sessions.history import History
from ds4router.sessions.session import Session

GH = "ghp_" + "Zx8Cv6Bn4Mq2We0Rt9Yu7Io5Pa3Sd1FgHjKl"
PASSWORD = "Vq7#mT2!pLx9"
ANSWER_KEY = "sk_live_" + "9aZ3kQ8mW2pX7vL1cR5tY0uB"


def _local_project(tmp_path: Path) -> Session:
    directory = tmp_path / "acme"
    directory.mkdir()
    data = {"project": "acme", "default": "local", "privacy": {"default": "internal"}}
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return load_config(directory)


def _all_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())


async def test_history_ledger_and_logs_hold_no_detected_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    local = ScriptedBackend(reply("The new key is ", ANSWER_KEY, ", keep it safe."))
    (tmp_path / ".env").write_text(f"DB_PASSWORD={PASSWORD}\n")
    session = Session(_local_project(tmp_path), backend_factory=factory(local))
    events = await collect(session, f"why does {GH} fail? see @.env", files=[tmp_path / ".env"])
    assert events[0].decision.privacy is PrivacyLevel.SECRET
    session.close()

    # The model was sent the real text, with the order to keep its state off the disk.
    assert GH in json.dumps(local.requests[0].messages)
    assert local.requests[0].keep_off_disk
    db = paths.database_path()
    with History(db) as history:
        (summary,) = history.list_conversations("acme")
        messages = history.messages(summary.id)
    stored = json.dumps([m.to_dict() for m in messages]) + (summary.title or "")
    for secret in (GH, PASSWORD, ANSWER_KEY):
        assert secret not in stored
        assert secret.encode() not in _all_bytes(db)  # database, WAL and all
        assert secret not in caplog.text
    assert "[github_token: 40 chars redacted]" in messages[0].text
    assert "[stripe_key: 32 chars redacted]" in (messages[1].text or "")
    # The answer's secret raises the level kept with it.
    assert messages[1].privacy == "secret"

    code, out, _ = run(capsys, "history", "show", summary.id[:8])
    assert code == 0 and "[github_token: 40 chars redacted]" in out
    export = tmp_path / "conv.md"
    code, out, _ = run(capsys, "history", "export", summary.id[:8], "-o", str(export))
    assert code == 0
    assert GH not in export.read_text() and ANSWER_KEY not in export.read_text()
    assert stat.S_IMODE(export.stat().st_mode) == 0o600


def test_the_database_is_private(tmp_path: Path) -> None:
    db = paths.database_path()
    History(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_old_rows_are_redacted_when_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ds4router.sessions.history import Message

    with History(paths.database_path()) as history:
        history.add_turn(
            "c0ffee", Message("user", f"token {GH}"), Message("assistant", "ok"), project="acme"
        )
    code, out, _ = run(capsys, "history", "show", "c0ffee")
    assert code == 0 and GH not in out and "redacted" in out


def test_kv_cache_files_and_directories_are_private(tmp_path: Path) -> None:
    import numpy as np

    from local_engine.cache.kv_store import KVStore, RawArray

    store = KVStore(tmp_path / "kv")
    ids = np.arange(300, dtype=np.int32)
    rows = np.ones((8, 4), dtype=np.float32)
    logits = np.zeros((1, 8), dtype=np.float32)
    arrays = {"layers.0.rows": RawArray("float32", rows.shape, rows)}
    assert store.put("fp", ids, arrays, {"tokens": 300}, RawArray("float32", (1, 8), logits))
    for root, _dirs, files in os.walk(tmp_path / "kv"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for name in files:
            assert stat.S_IMODE(os.stat(Path(root) / name).st_mode) == 0o600, name
