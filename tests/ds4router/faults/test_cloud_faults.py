"""Faults around a cloud request, through the real CLI in a child process.

The cloud is the loopback OpenAI-compatible server streaming slowly; the child is
killed with real signals once its answer has started on stdout; the database is
damaged, made unwritable, or the config rewritten while the request runs. Each
test checks what the user saw, the exit code, the rows on disk, and that no
traceback was printed.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from fault_support import (
    Child,
    assert_clean,
    cloud_project,
    raw_rows,
    run_cli,
)
from openai_server import OpenAIServer, Reply, error, ok

from ds4router import paths

SLOW = ok("first", " second", " third", " fourth", " fifth", chunk_delay_s=0.5)
# Started slowly, stalled after the first pieces until the server stops: the child is
# signalled while it is mid-stream, however fast or slow this machine is.
STALLED = Reply(text=("first", " second", " third"), hang_after=2, hang_s=600)


def ask(project: Path, *extra: str, stdin: bytes | None = None) -> Child:
    return Child("ask", *extra, "--project", str(project), stdin=stdin)


def assert_refused(result: tuple[int, str, str], prefix: str) -> None:
    """Exit 2, nothing answered, and one line on stderr starting with ``prefix``."""
    code, out, err = result
    assert code == 2 and out == "", (out, err)
    (line,) = err.strip().splitlines()
    assert line.startswith(prefix), line


def signalled_mid_stream(
    tmp_path: Path, server: OpenAIServer, text: str, until: bytes, sig: signal.Signals
) -> tuple[int, str, str]:
    """``ask TEXT`` against a stalling stream, hit with ``sig`` once ``until`` is shown."""
    project = cloud_project(tmp_path, server.base_url)
    server.script(STALLED)
    child = ask(project, text)
    child.wait_for_output(until)
    child.signal(sig)
    code, out, err = child.finish()
    assert_clean(err)
    return code, out, err


def test_sigkill_mid_stream_leaves_the_row_and_the_next_start_marks_it_interrupted(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    code, _, _ = signalled_mid_stream(
        tmp_path, openai_server, "tell me a story", b"first second", signal.SIGKILL
    )
    assert code == -signal.SIGKILL

    # On disk, before anything else opens the database: the write-ahead row and message.
    ((status, route, model, input_tokens),) = raw_rows(
        "ledger", "status, route, model, input_tokens"
    )
    assert (status, route, model) == ("started", "cloud", "openai/gpt-4.1")
    assert input_tokens > 0
    messages = raw_rows("messages", "role, text, status")
    assert messages[0] == ("user", "tell me a story", None)
    assert messages[1][0] == "assistant" and messages[1][2] == "started"

    # The next start (any command that opens the database) marks it interrupted.
    code, out, err = run_cli("report", "--format", "json")
    assert code == 0, err
    total = json.loads(out)["totals"]
    assert (total["requests"], total["interrupted"], total["ok"]) == (1, 1, 0)
    ((status, kind, estimated),) = raw_rows("ledger", "status, error_kind, usage_estimated")
    assert (status, kind, estimated) == ("interrupted", "interrupted", 1)
    code, out, err = run_cli("history", "list", "--all")
    assert code == 0 and "tell me a story" in out
    assert raw_rows("messages", "status")[1] == ("interrupted",)  # once history is opened
    assert openai_server.count == 1


def test_sigterm_mid_stream_records_cancelled_with_the_partial_answer(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    code, _, err = signalled_mid_stream(
        tmp_path, openai_server, "hello", b"first second", signal.SIGTERM
    )
    assert code == 143 and "Cancelled." in err
    ((status, output_tokens),) = raw_rows("ledger", "status, output_tokens")
    assert status == "cancelled" and output_tokens > 0
    assert raw_rows("messages", "text, status")[1] == ("first second", "cancelled")


def test_sigint_mid_stream_records_cancelled_and_exits_130(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    code, _, err = signalled_mid_stream(tmp_path, openai_server, "hello", b"first", signal.SIGINT)
    assert code == 130 and "Cancelled." in err
    assert [r[0] for r in raw_rows("ledger", "status")] == ["cancelled"]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (error(429, "slow down", type_="rate_limit_error", retry_after="1"), "rate_limit"),
        (error(500, "boom"), "unavailable"),
        (Reply(hang_after=0, hang_s=600), "timeout"),
        (Reply(text=("Half", " an", " answer"), malformed_after=1), None),
        (Reply(text=("Half", " an", " answer"), disconnect_after=1), None),
    ],
    ids=["429", "500", "hang", "malformed", "disconnect"],
)
def test_a_failing_provider_is_one_line_exit_1_and_an_error_row(
    tmp_path: Path, openai_server: OpenAIServer, reply: Reply, kind: str | None
) -> None:
    project = cloud_project(
        tmp_path,
        openai_server.base_url,
        timeouts={"connect_s": 2, "first_token_s": 1, "total_s": 30},
    )
    openai_server.script(reply)
    code, out, err = ask(project, "hello").finish()
    assert code == 1, (out, err)
    assert_clean(err)
    assert any(line.startswith("error") for line in err.splitlines()), err
    ((status, error_kind),) = raw_rows("ledger", "status, error_kind")
    assert status == "error" and error_kind
    if kind is not None:
        assert error_kind == kind
    assert raw_rows("messages", "status")[1] == ("error",)


def test_a_damaged_database_sends_nothing(tmp_path: Path, openai_server: OpenAIServer) -> None:
    project = cloud_project(tmp_path, openai_server.base_url)
    assert ask(project, "first").finish()[0] == 0
    db = paths.database_path()
    data = bytearray(db.read_bytes())
    data[0:16] = b"\x00" * 16
    db.write_bytes(bytes(data))
    code, out, err = ask(project, "second").finish()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: {db}: the database is damaged (it does not start with an SQLite header); "
        "run `ds4router db repair` (it keeps a backup and recovers what it can)"
    ]
    assert openai_server.count == 1  # only the first request


def test_an_unwritable_database_sends_nothing(tmp_path: Path, openai_server: OpenAIServer) -> None:
    project = cloud_project(tmp_path, openai_server.base_url)
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a parent that is a file: unwritable for root too
    result = Child(
        "ask", "hello", "--project", str(project), env={"DS4ROUTER_DB": str(blocker / "db")}
    ).finish()
    assert_refused(result, f"error: {blocker / 'db'}: cannot create or open the database")
    assert openai_server.count == 0


def test_the_config_rewritten_mid_request_does_not_disturb_it(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    project = cloud_project(tmp_path, openai_server.base_url)
    openai_server.script(SLOW)
    child = ask(project, "hello")
    child.wait_for_output(b"first")
    (project / ".ds4router.yaml").write_bytes(b"project: caf\xe9\nroutes: [\x00\x01")
    code, out, err = child.finish()
    assert code == 0, err
    assert out.startswith("first second third fourth fifth")
    assert_clean(err)
    assert [r[0] for r in raw_rows("ledger", "status")] == ["ok"]
    # The next command reads the broken file and says so in one line.
    assert_refused(ask(project, "again").finish(), f"error: {project / '.ds4router.yaml'}")
    assert openai_server.count == 1


def test_stdin_in_latin1_is_asked_and_binary_stdin_refused(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    project = cloud_project(tmp_path, openai_server.base_url)
    code, _, err = ask(project, "-", stdin="résumé du café".encode("latin-1")).finish()
    assert code == 0, err
    sent = openai_server.requests[-1].body["messages"][-1]["content"]  # type: ignore[index]
    assert "résumé du café" in json.dumps(sent, ensure_ascii=False)
    binary = ask(project, "-", stdin=b"\x7fELF\x02\x01" + bytes(range(40))).finish()
    assert_refused(binary, "error: stdin: not readable as text (")
    assert openai_server.count == 1
    assert [r[0] for r in raw_rows("ledger", "status")] == ["ok"]
