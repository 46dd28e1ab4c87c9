"""``ds4router ask`` and ``ds4router history`` through the real CLI group.

The cloud is the loopback OpenAI-compatible server reached through real LiteLLM;
the ledger and history are the real SQLite database under the test's
DS4ROUTER_HOME. One test runs ``ask`` in a subprocess to press Ctrl-C on it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cli_support import cloud_project, run
from openai_server import OpenAIServer, error, ok
from scripted import ScriptedBackend

import ds4router.sessions.backend_pool as pool_module
from ds4router import cli, paths
from ds4router.sessions.history import History
from ds4router.sessions.turn_costs import money
from ds4router.targets import LocalEngine, Sendable
from pricing.catalog import PriceCatalog
from pricing.ledger import Ledger, LedgerRow

KEY_ENV = "DS4_ASK_TEST_KEY"
MODEL = "openai/gpt-4.1"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
MONTH = dt.datetime.now(dt.UTC).strftime("%Y-%m")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug the commands in as the lead will in ``SUBCOMMANDS``; a key for the gateway."""
    monkeypatch.setitem(cli.SUBCOMMANDS, "ask", ("ds4router.commands.ask", "Ask."))
    monkeypatch.setitem(cli.SUBCOMMANDS, "history", ("ds4router.commands.history_cmd", "History."))
    monkeypatch.setenv(KEY_ENV, "sk-ask-test-0000")


def write_project(tmp_path: Path, server: OpenAIServer, **extra: Any) -> Path:
    return cloud_project(tmp_path, server.base_url, KEY_ENV, MODEL, **extra)


@pytest.fixture
def project_dir(tmp_path: Path, openai_server: OpenAIServer) -> Path:
    return write_project(tmp_path, openai_server)


def rows() -> list[LedgerRow]:
    with Ledger(paths.database_path()) as ledger:
        return ledger.month_rows(MONTH)


def bundled_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    rates = PriceCatalog.load(paths.configs_dir() / "prices").rates(model)
    assert rates is not None
    return (input_tokens * rates.input + output_tokens * rates.output) / 1e6


# --- the acceptance scenario ------------------------------------------------------------


def test_ask_json_answers_from_the_server_and_writes_one_priced_row(
    capsys: pytest.CaptureFixture[str], openai_server: OpenAIServer, project_dir: Path
) -> None:
    code, out, err = run(capsys, "ask", "hello", "--project", str(project_dir), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["text"] == "Hello, world!"
    assert (data["status"], data["route"], data["model"], data["rule"]) == (
        "ok",
        "cloud",
        MODEL,
        "default",
    )
    expected = bundled_cost(MODEL, 11, 4)
    assert data["cost_usd"] == pytest.approx(expected)
    assert (data["input_tokens"], data["output_tokens"]) == (11, 4)
    assert data["reference_model"] and data["saving_usd"] == pytest.approx(
        data["counterfactual_usd"] - expected
    )
    (row,) = rows()
    assert (row.route, row.model, row.project, row.status) == ("cloud", MODEL, "acme", "ok")
    assert row.cost_usd == pytest.approx(expected)
    assert data["ledger_id"] == 1 and openai_server.count == 1


def test_ask_streams_the_answer_to_stdout_and_the_footer_to_stderr(
    capsys: pytest.CaptureFixture[str], openai_server: OpenAIServer, project_dir: Path
) -> None:
    code, out, err = run(capsys, "ask", "hello", "--project", str(project_dir))
    assert code == 0, err
    assert out == "Hello, world!\n"
    footer = err.strip().splitlines()[-1]
    cost = bundled_cost(MODEL, 11, 4)
    for part in ("cloud", MODEL, "rule default", "11 in / 4 out tok", "tok/s", money(cost)):
        assert part in footer, footer
    assert "vs anthropic/claude-opus-4-7" in footer


def test_a_github_token_is_refused_with_the_reason_and_nothing_is_sent(
    capsys: pytest.CaptureFixture[str], openai_server: OpenAIServer, project_dir: Path
) -> None:
    text = f"why is {GH} rejected?"
    code, out, err = run(capsys, "ask", text, "--project", str(project_dir), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "refused" and data["route"] == "refused" and data["text"] == ""
    assert data["privacy"] == "secret"
    assert any("cloud_max_privacy" in r for r in data["reasons"]) and data["fix"]
    assert openai_server.count == 0
    assert [r.route for r in rows()] == ["refused"]

    code, out, err = run(capsys, "ask", text, "--project", str(project_dir))
    assert code == 1 and out == ""
    assert "Refused: nothing was sent." in err and "to allow it:" in err
    assert GH not in err and openai_server.count == 0


def test_a_github_token_is_served_locally_when_the_local_backend_is_there(
    capsys: pytest.CaptureFixture[str],
    openai_server: OpenAIServer,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = ScriptedBackend()
    real = pool_module.backend_for

    def with_local(target: Sendable, loaded: Any) -> Any:
        return local if target == LocalEngine() else real(target, loaded)

    monkeypatch.setattr(pool_module, "backend_for", with_local)
    code, out, err = run(capsys, "ask", f"is {GH} valid?", "--project", str(project_dir), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["route"], data["text"]) == ("local", "Hello from the local engine.")
    assert openai_server.count == 0 and len(local.requests) == 1
    assert [(r.route, r.privacy) for r in rows()] == [("local", "secret")]


# --- input ----------------------------------------------------------------------------------


def test_stdin_and_attached_files_reach_the_model(
    capsys: pytest.CaptureFixture[str],
    openai_server: OpenAIServer,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    (project_dir / "notes.txt").write_text("the build is red\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("what now? #public"))
    code, _, err = run(
        capsys, "ask", "-", "--file", str(project_dir / "notes.txt"), "--project", str(project_dir)
    )
    assert code == 0, err
    body = openai_server.requests[-1].body
    assert body is not None
    assert body["messages"][-1]["content"] == (
        "what now?\n\nFile `notes.txt`:\n```\nthe build is red\n```"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "hi", "--file", "missing.txt"], "--file missing.txt: no such file"),
        (["ask", "   "], "nothing to ask"),
        (["ask", "hi", "--conversation", "nope"], "no conversation 'nope'"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    project_dir: Path,
    openai_server: OpenAIServer,
    argv: list[str],
    message: str,
) -> None:
    code, out, err = run(capsys, *argv, "--project", str(project_dir))
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert openai_server.count == 0


# --- failures --------------------------------------------------------------------------------


def test_a_failure_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], openai_server: OpenAIServer, project_dir: Path
) -> None:
    openai_server.script(error(401, "bad key", type_="invalid_request_error"))
    code, out, err = run(capsys, "ask", "hello", "--project", str(project_dir))
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: failed (auth):") and KEY_ENV in last
    assert [(r.status, r.error_kind) for r in rows()] == [("error", "auth")]


def test_a_failure_mid_stream_keeps_the_partial_answer(
    capsys: pytest.CaptureFixture[str], openai_server: OpenAIServer, project_dir: Path
) -> None:
    from openai_server import Reply

    openai_server.script(Reply(text=("Half", " an", " answer"), disconnect_after=1))
    code, out, err = run(capsys, "ask", "hello", "--project", str(project_dir), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["text"] == "Half" and data["status"] == "error"
    assert data["error"]["after_tokens"] is True and data["fallbacks"] == []
    assert [r.status for r in rows()] == ["error"]


def test_ctrl_c_cancels_records_cancelled_and_exits_130(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    directory = write_project(tmp_path, openai_server)
    openai_server.script(ok("first", " second", " third", chunk_delay_s=1.0))
    script = (
        "import sys; from ds4router import cli; "
        "cli.register('ask', 'ds4router.commands.ask', 'Ask.'); "
        "cli.main(sys.argv[1:])"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "ask", "hello", "--project", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.read(5)))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=60)
    assert first == [b"first"], proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"Cancelled." in err and b"Traceback" not in err
    (row,) = rows()
    assert (row.status, row.route) == ("cancelled", "cloud")
    assert openai_server.count == 1


# --- history ----------------------------------------------------------------------------


def test_history_list_show_export_delete(
    capsys: pytest.CaptureFixture[str],
    openai_server: OpenAIServer,
    project_dir: Path,
    tmp_path: Path,
) -> None:
    code, out, _ = run(capsys, "history", "list", "--project", str(project_dir))
    assert code == 0 and "no conversations" in out
    assert not paths.database_path().exists()  # reading never creates the database

    run(capsys, "ask", "first question", "--project", str(project_dir))
    code, out, _ = run(capsys, "history", "list", "--project", str(project_dir), "--json")
    (listed,) = json.loads(out)
    cid = listed["id"]
    assert (listed["title"], listed["messages"]) == ("first question", 2)

    openai_server.script(ok("Second", " answer"))
    code, out, err = run(
        capsys, "ask", "again", "--conversation", cid[:8], "--project", str(project_dir)
    )
    assert code == 0, err
    assert len(openai_server.requests[-1].body["messages"]) == 3  # type: ignore[index]

    code, out, _ = run(capsys, "history", "list", "--project", str(project_dir))
    assert out.startswith(cid[:12]) and "4 msgs" in out and "first question" in out

    code, out, _ = run(capsys, "history", "show", cid[:6])
    assert code == 0
    assert "first question" in out and "Hello, world!" in out and "Second answer" in out
    assert f"cloud · {MODEL} · rule default · 11 in / 4 out tok" in out

    code, out, _ = run(capsys, "history", "export", cid, "--format", "md")
    assert out.startswith("# first question\n") and "## Assistant" in out
    target = tmp_path / "conv.json"
    code, out, _ = run(capsys, "history", "export", cid, "--format", "json", "-o", str(target))
    data = json.loads(target.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][3]["text"] == "Second answer"

    code, out, _ = run(capsys, "history", "delete", cid)
    assert code == 0 and out.strip() == f"deleted conversation {cid[:12]} (4 messages)"
    code, out, err = run(capsys, "history", "show", cid)
    assert code == 2 and "no conversation" in err
    with History(paths.database_path()) as history:
        assert history.list_conversations(None) == []
    assert len(rows()) == 2  # costs outlive the conversation


def test_history_off_leaves_history_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, openai_server: OpenAIServer
) -> None:
    directory = write_project(tmp_path, openai_server, history="off")
    code, _, err = run(capsys, "ask", "hello", "--project", str(directory))
    assert code == 0, err
    code, out, _ = run(capsys, "history", "list", "--project", str(directory))
    assert "no conversations" in out
    assert len(rows()) == 1
    code, _, err = run(capsys, "ask", "hi", "--conversation", "x", "--project", str(directory))
    assert code == 2 and "history is off" in err


def test_command_modules_do_not_import_heavy_libraries() -> None:
    """``ds4router ask --help`` stays fast: litellm is imported only when a request is sent."""
    code = "import sys, ds4router.commands.ask, ds4router.commands.history_cmd; " + (
        "print(' '.join(m for m in ('litellm', 'textual', 'mlx', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_an_explicit_model_overrides_the_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, openai_server: OpenAIServer
) -> None:
    directory = write_project(tmp_path, openai_server, default="local")
    code, out, err = run(
        capsys, "ask", "hello", "--model", MODEL, "--project", str(directory), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert (data["route"], data["model"], data["rule"]) == ("cloud", MODEL, "explicit model")
    assert openai_server.count == 1
