"""Conversation history in the shared SQLite database: storage, listing, export, deletion."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from ds4router.sessions.history import (
    HISTORY_MIGRATIONS,
    History,
    HistoryError,
    Message,
    export_json,
    export_markdown,
    title_from,
)
from pricing.db import connect, schema_version
from pricing.ledger import Ledger


def user(text: str, **kwargs: object) -> Message:
    return Message(role="user", text=text, privacy="internal", **kwargs)  # type: ignore[arg-type]


def answer(text: str | None, **kwargs: object) -> Message:
    fields: dict[str, object] = {
        "route": "cloud",
        "model": "openai/gpt-4.1",
        "rule": "default",
        "input_tokens": 11,
        "output_tokens": 4,
        "cost_usd": 0.000054,
        "status": "ok",
    }
    fields.update(kwargs)
    return Message(role="assistant", text=text, **fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ds4router.sqlite3"


def test_history_and_ledger_share_one_private_database(db: Path) -> None:
    with Ledger(db), History(db):
        pass
    conn = connect(db)
    try:
        assert schema_version(conn, "history") == len(HISTORY_MIGRATIONS)
        assert schema_version(conn, "ledger") >= 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"ledger", "conversations", "messages"} <= tables
    if os.name == "posix":
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
    # Opening again runs no migration twice.
    with History(db) as history:
        assert history.list_conversations("acme") == []


def test_turns_round_trip_with_route_tokens_and_cost(db: Path) -> None:
    with History(db) as history:
        cid = history.new_conversation("acme")
        history.add_turn(
            cid,
            user(
                "explain @a.py", content="explain @a.py\n\nFile `a.py`: ...", attachments=("a.py",)
            ),
            answer("It adds.", reasoning="think", ledger_id=7),
            project="acme",
            title="explain @a.py",
        )
        history.add_turn(
            cid,
            user("more"),
            answer("Partial", status="error", error_kind="timeout", error="too slow"),
            project="acme",
            title="ignored: the first title stays",
        )
        messages = history.messages(cid)
        (summary,) = history.list_conversations("acme")
    assert summary.title == "explain @a.py" and summary.messages == 4
    first_user, first_answer, _, failed = messages
    assert first_user.attachments == ("a.py",) and first_user.content is not None
    assert (first_answer.text, first_answer.reasoning, first_answer.ledger_id) == (
        "It adds.",
        "think",
        7,
    )
    assert (first_answer.route, first_answer.model, first_answer.rule) == (
        "cloud",
        "openai/gpt-4.1",
        "default",
    )
    assert (first_answer.input_tokens, first_answer.output_tokens) == (11, 4)
    assert first_answer.cost_usd == pytest.approx(0.000054)
    assert first_answer.created_at is not None and first_answer.created_at.tzinfo is not None
    assert (failed.status, failed.error_kind, failed.error) == ("error", "timeout", "too slow")


def test_add_turn_creates_an_unknown_conversation(db: Path) -> None:
    with History(db) as history:
        history.add_turn("c0ffee", user("hi"), answer("hello"), project="acme", title="hi")
        summary = history.get("c0ffee")
    assert summary is not None and (summary.project, summary.title) == ("acme", "hi")


def test_list_is_per_project_newest_first(db: Path) -> None:
    with History(db) as history:
        older = history.new_conversation("acme", "older")
        other = history.new_conversation("globex", "elsewhere")
        newer = history.new_conversation("acme", "newer")
        history.add_turn(older, user("q"), answer("a"), project="acme")  # now the latest
        assert [c.id for c in history.list_conversations("acme")] == [older, newer]
        assert {c.id for c in history.list_conversations(None)} == {older, newer, other}


def test_rename_and_delete_cascade_but_leave_the_ledger(db: Path) -> None:
    with History(db) as history:
        cid = history.new_conversation("acme", "draft")
        history.add_turn(cid, user("q"), answer("a"), project="acme")
        history.rename(cid, "  final title ")
        summary = history.get(cid)
        assert summary is not None and summary.title == "final title"
        assert history.delete(cid) == 2
        assert history.get(cid) is None
        orphans = history.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        assert orphans == 0
        with pytest.raises(HistoryError, match="no conversation"):
            history.delete(cid)
        with pytest.raises(HistoryError, match="no conversation"):
            history.rename(cid, "x")


def test_ids_resolve_from_a_unique_prefix(db: Path) -> None:
    with History(db) as history:
        a = history.new_conversation("acme", conversation_id="abc123")
        history.new_conversation("acme", conversation_id="abd456")
        history.new_conversation("acme", conversation_id="x_y")
        history.new_conversation("acme", conversation_id="xzy")
        assert history.resolve("abc") == a
        assert history.resolve("abc123") == a
        with pytest.raises(HistoryError, match="several"):
            history.resolve("ab")
        with pytest.raises(HistoryError, match="no conversation"):
            history.resolve("zzz")
        # LIKE wildcards in the prefix are literal characters.
        assert history.resolve("x_") == "x_y"


def test_concurrent_writers_from_threads_all_land(db: Path) -> None:
    with History(db) as history:
        cid = history.new_conversation("acme")
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for i in range(10):
                    history.add_turn(cid, user(f"{n}-{i}"), answer("ok"), project="acme")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(history.messages(cid)) == 80


def test_exports_carry_every_message(db: Path) -> None:
    with History(db) as history:
        cid = history.new_conversation("acme", "Adding numbers")
        history.add_turn(
            cid,
            user("add 2+2", attachments=("m.py",)),
            answer("4", reasoning="2+2=4"),
            project="acme",
        )
        history.add_turn(
            cid, user("secret"), answer(None, route="refused", model=None), project="acme"
        )
        summary = history.get(cid)
        messages = history.messages(cid)
    assert summary is not None
    markdown = export_markdown(summary, messages)
    assert markdown.startswith("# Adding numbers\n")
    assert "## You" in markdown and "add 2+2" in markdown and "`m.py`" in markdown
    assert "cloud · openai/gpt-4.1 · rule default · 11 in / 4 out tok · $0.000054" in markdown
    assert "> 2+2=4" in markdown and "Refused: nothing was sent." in markdown
    data = json.loads(export_json(summary, messages))
    assert data["id"] == cid and data["project"] == "acme" and len(data["messages"]) == 4
    assert data["messages"][1]["text"] == "4" and data["messages"][1]["route"] == "cloud"
    assert data["messages"][0]["attachments"] == ["m.py"]
    assert data["messages"][3]["route"] == "refused" and data["messages"][3]["text"] is None


def test_titles_are_the_first_line_shortened() -> None:
    assert title_from("\n  fix the parser  \nmore") == "fix the parser"
    long = title_from("x" * 100, width=10)
    assert len(long) == 10 and long.endswith("…")


def test_a_newer_database_is_refused_with_advice(db: Path) -> None:
    with History(db):
        pass
    conn = connect(db)
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'history'")
    conn.close()
    with pytest.raises(HistoryError, match="upgrade ds4router"):
        History(db)
