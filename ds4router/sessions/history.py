"""Conversation history: conversations and their messages, in the ledger's SQLite database.

Tables (component ``history`` in ``pricing.db``'s per-component versions):
``conversations`` (id, project, title, times) and ``messages`` (role, the text,
the reasoning, what the model was sent, and per assistant message the route,
model, rule, tokens, cost, status and the id of its ledger row). Deleting a
conversation deletes its messages; the ledger rows stay (costs are history of
their own and hold no text).

A project with ``history: off`` stores **nothing** here: the session keeps that
conversation in memory for as long as it runs and writes only ledger rows,
which never hold text. (Keeping rows with the text set to NULL would still
leave titles and timestamps of private work on disk, and a conversation that
cannot be resumed is of no use.)

``History`` is safe to share between threads: each call takes a lock and runs
on the one connection (the TUI reads from worker threads).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ds4router.errors import Ds4RouterError
from pricing.db import apply_migrations, connect, transaction
from pricing.errors import PricingError
from pricing.recovery import recover_interrupted

_V1_COLUMNS = (
    "id, conversation_id, role, text, reasoning, content, attachments, privacy, task, route, "
    "model, rule, input_tokens, output_tokens, cost_usd, status, error_kind, error, ledger_id, "
    "created_at"
)

# Forward migrations of the history tables; released steps never change.
HISTORY_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        title TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX conversations_project ON conversations(project, updated_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT,
        reasoning TEXT,
        content TEXT,
        attachments TEXT,
        privacy TEXT,
        task TEXT,
        route TEXT CHECK (route IS NULL OR route IN ('local', 'cloud', 'refused')),
        model TEXT,
        rule TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cost_usd REAL,
        status TEXT CHECK (status IS NULL OR status IN ('ok', 'error', 'cancelled')),
        error_kind TEXT,
        error TEXT,
        ledger_id INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    """,
    # v2: write-ahead answers. An assistant message is written ``started`` before the
    # request is sent and finished when it ends; a dead process's is ``interrupted``.
    # (SQLite cannot change a CHECK in place: the table is rebuilt, columns in order.)
    """
    CREATE TABLE messages_v2 (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT,
        reasoning TEXT,
        content TEXT,
        attachments TEXT,
        privacy TEXT,
        task TEXT,
        route TEXT CHECK (route IS NULL OR route IN ('local', 'cloud', 'refused')),
        model TEXT,
        rule TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cost_usd REAL,
        status TEXT CHECK (status IS NULL OR status IN
            ('ok', 'error', 'cancelled', 'started', 'interrupted')),
        error_kind TEXT,
        error TEXT,
        ledger_id INTEGER,
        created_at TEXT NOT NULL
    );
    """
    + f"INSERT INTO messages_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM messages;"
    + """
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    CREATE INDEX messages_started ON messages(id) WHERE status = 'started';
    """,
)

TITLE_WIDTH = 60


class HistoryError(Ds4RouterError):
    """A conversation id that does not exist or is ambiguous, or an unusable database."""


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str | None
    project: str
    updated_at: dt.datetime
    messages: int
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class Message:
    """One message. Assistant messages carry route, model, rule, tokens and cost.

    ``content`` (user messages) is the text the model was sent: tags removed,
    attachments inlined; ``text`` is what the user typed. ``status`` is
    ``ok``, ``error`` (the text is what arrived before the failure) or
    ``cancelled``; a refused request has ``route == "refused"`` and no text.
    """

    role: str
    text: str | None
    reasoning: str | None = None
    route: str | None = None
    model: str | None = None
    rule: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    created_at: dt.datetime | None = None
    status: str | None = None
    privacy: str | None = None
    task: str | None = None
    content: str | None = None
    attachments: tuple[str, ...] = ()
    error_kind: str | None = None
    error: str | None = None
    ledger_id: int | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = None if self.created_at is None else _iso(self.created_at)
        out["attachments"] = list(self.attachments)
        return out


def title_from(text: str, width: int = TITLE_WIDTH) -> str:
    """A conversation title from its first message: the first non-empty line, shortened."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


_MESSAGE_COLUMNS = (
    "id, role, text, reasoning, route, model, rule, input_tokens, output_tokens, cost_usd, "
    "created_at, status, privacy, task, content, attachments, error_kind, error, ledger_id"
)


def _message(row: Sequence[Any]) -> Message:
    (
        mid,
        role,
        text,
        reasoning,
        route,
        model,
        rule,
        input_tokens,
        output_tokens,
        cost_usd,
        created_at,
        status,
        privacy,
        task,
        content,
        attachments,
        error_kind,
        error,
        ledger_id,
    ) = row
    return Message(
        role=role,
        text=text,
        reasoning=reasoning,
        route=route,
        model=model,
        rule=rule,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        created_at=_parse(created_at),
        status=status,
        privacy=privacy,
        task=task,
        content=content,
        attachments=tuple(json.loads(attachments)) if attachments else (),
        error_kind=error_kind,
        error=error,
        ledger_id=ledger_id,
        id=mid,
    )


class History:
    """Conversations in the database at ``db_path`` (created and migrated on open)."""

    def __init__(self, db_path: Path | str) -> None:
        self.path = Path(db_path)
        try:
            self.conn: sqlite3.Connection = connect(self.path)
        except PricingError as exc:
            raise HistoryError(str(exc)) from None
        try:
            apply_migrations(self.conn, "history", HISTORY_MIGRATIONS)
            self._recover()
        except PricingError as exc:
            self.conn.close()
            raise HistoryError(str(exc)) from None
        except BaseException:
            self.conn.close()
            raise
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _recover(self) -> None:
        """Answers left ``started`` by a process that died become ``interrupted`` once
        their ledger row is (``pricing.recovery``, run when the ledger opens)."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(ledger)")}
        if "process_mark" not in columns:
            return  # no ledger yet, or one older than write-ahead rows: nothing started
        recover_interrupted(self.conn)  # opened before the ledger: its rows first
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE messages SET status = 'interrupted', error_kind = 'interrupted', "
                "error = 'the process ended before the answer did' "
                "WHERE status = 'started' AND ledger_id IN "
                "(SELECT id FROM ledger WHERE status = 'interrupted')"
            )

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- conversations ------------------------------------------------------------

    def new_conversation(
        self, project: str, title: str | None = None, *, conversation_id: str | None = None
    ) -> str:
        """Start a conversation; returns its id (a fresh one unless given)."""
        if not project:
            raise HistoryError("a conversation needs a project name")
        cid = conversation_id or uuid.uuid4().hex
        now = _iso(_now())
        with self._lock, transaction(self.conn):
            self.conn.execute(
                "INSERT INTO conversations (id, project, title, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (cid, project, title or None, now, now),
            )
        return cid

    def exists(self, conversation_id: str) -> bool:
        with self._lock:
            row = self.conn.execute(
                "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        return row is not None

    def get(self, conversation_id: str) -> ConversationSummary | None:
        with self._lock:
            row = self.conn.execute(
                _SUMMARY_SQL + " WHERE c.id = ? GROUP BY c.id", (conversation_id,)
            ).fetchone()
        return None if row is None else _summary(row)

    def list_conversations(self, project: str | None = None) -> list[ConversationSummary]:
        """A project's conversations (all projects when None), most recently updated first."""
        where, params = ("", ()) if project is None else (" WHERE c.project = ?", (project,))
        with self._lock:
            rows = self.conn.execute(
                _SUMMARY_SQL + where + " GROUP BY c.id ORDER BY c.updated_at DESC, c.id",
                params,
            ).fetchall()
        return [_summary(row) for row in rows]

    def resolve(self, prefix: str) -> str:
        """The full id of the one conversation whose id starts with ``prefix``."""
        prefix = prefix.strip()
        if not prefix:
            raise HistoryError("give a conversation id (see `ds4router history list`)")
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._lock:
            rows = self.conn.execute(
                "SELECT id FROM conversations WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 3",
                (escaped + "%",),
            ).fetchall()
        ids = [r[0] for r in rows]
        if prefix in ids:
            return prefix
        if not ids:
            raise HistoryError(
                f"no conversation {prefix!r}; `ds4router history list` shows the ids"
            )
        if len(ids) > 1:
            raise HistoryError(
                f"{prefix!r} matches several conversations ({', '.join(ids[:2])}, ...); "
                "give more of the id"
            )
        return str(ids[0])

    def rename(self, conversation_id: str, title: str) -> None:
        with self._lock, transaction(self.conn):
            cursor = self.conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ?",
                (title.strip() or None, conversation_id),
            )
        if cursor.rowcount == 0:
            raise HistoryError(f"no conversation {conversation_id!r} to rename")

    def delete(self, conversation_id: str) -> int:
        """Delete a conversation and its messages; returns how many messages went with it."""
        with self._lock, transaction(self.conn):
            count = self.conn.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            cursor = self.conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        if cursor.rowcount == 0:
            raise HistoryError(f"no conversation {conversation_id!r} to delete")
        return int(count)

    # --- messages -----------------------------------------------------------------

    def messages(self, conversation_id: str) -> list[Message]:
        """A conversation's messages, oldest first."""
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [_message(row) for row in rows]

    def add_turn(
        self,
        conversation_id: str,
        user: Message,
        assistant: Message,
        *,
        project: str,
        title: str | None = None,
    ) -> tuple[int, int]:
        """Append a user message and its answer in one transaction.

        The conversation is created (with ``title``) when it does not exist yet,
        so a session can be handed an id it has not seen. Returns the two ids.
        """
        now = _now()
        with self._lock, transaction(self.conn):
            known = self.conn.execute(
                "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if known is None:
                self.conn.execute(
                    "INSERT INTO conversations (id, project, title, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (conversation_id, project, title or None, _iso(now), _iso(now)),
                )
            elif title:
                # A conversation created without a title takes its first message's.
                self.conn.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND title IS NULL",
                    (title, conversation_id),
                )
            ids = tuple(
                self._insert(conversation_id, message, now) for message in (user, assistant)
            )
            self.conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (_iso(now), conversation_id),
            )
        return ids[0], ids[1]

    def progress(self, message_id: int, text: str, reasoning: str | None = None) -> None:
        """Keep a running answer's text so far, so a killed process leaves it."""
        with self._lock, transaction(self.conn):
            self.conn.execute(
                "UPDATE messages SET text = ?, reasoning = ? WHERE id = ? AND status = 'started'",
                (text, reasoning or None, message_id),
            )

    def finish(self, message_id: int, answer: Message) -> None:
        """Replace the write-ahead answer ``message_id`` with the finished one."""
        with self._lock, transaction(self.conn):
            cursor = self.conn.execute(
                "UPDATE messages SET text = ?, reasoning = ?, route = ?, model = ?, rule = ?, "
                "input_tokens = ?, output_tokens = ?, cost_usd = ?, status = ?, "
                "error_kind = ?, error = ?, ledger_id = ? WHERE id = ?",
                (
                    answer.text,
                    answer.reasoning or None,
                    answer.route,
                    answer.model,
                    answer.rule,
                    answer.input_tokens,
                    answer.output_tokens,
                    answer.cost_usd,
                    answer.status,
                    answer.error_kind,
                    answer.error,
                    answer.ledger_id,
                    message_id,
                ),
            )
        if cursor.rowcount != 1:
            raise HistoryError(f"{self.path}: no message {message_id} to finish")

    def _insert(self, conversation_id: str, message: Message, now: dt.datetime) -> int:
        created = message.created_at or now
        cursor = self.conn.execute(
            "INSERT INTO messages (conversation_id, role, text, reasoning, content, attachments, "
            "privacy, task, route, model, rule, input_tokens, output_tokens, cost_usd, status, "
            "error_kind, error, ledger_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conversation_id,
                message.role,
                message.text,
                message.reasoning or None,
                message.content,
                json.dumps(list(message.attachments)) if message.attachments else None,
                message.privacy,
                message.task,
                message.route,
                message.model,
                message.rule,
                message.input_tokens,
                message.output_tokens,
                message.cost_usd,
                message.status,
                message.error_kind,
                message.error,
                message.ledger_id,
                _iso(created),
            ),
        )
        rowid = cursor.lastrowid
        assert rowid is not None
        return rowid


_SUMMARY_SQL = (
    "SELECT c.id, c.title, c.project, c.updated_at, COUNT(m.id), c.created_at "
    "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
)


def _summary(row: Sequence[Any]) -> ConversationSummary:
    updated = _parse(row[3])
    assert updated is not None
    return ConversationSummary(
        id=row[0],
        title=row[1],
        project=row[2],
        updated_at=updated,
        messages=int(row[4]),
        created_at=_parse(row[5]),
    )


# --- export ---------------------------------------------------------------------------


def export_json(conversation: ConversationSummary, messages: Sequence[Message]) -> str:
    """The conversation and its messages as one JSON object."""
    data = {
        "id": conversation.id,
        "title": conversation.title,
        "project": conversation.project,
        "created_at": None if conversation.created_at is None else _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "messages": [m.to_dict() for m in messages],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def export_markdown(conversation: ConversationSummary, messages: Sequence[Message]) -> str:
    """The conversation as Markdown: a heading per message, the route line under answers."""
    lines = [f"# {conversation.title or 'Untitled conversation'}", ""]
    lines.append(f"Project `{conversation.project}` · conversation `{conversation.id}`")
    lines.append("")
    for message in messages:
        stamp = (
            message.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            if message.created_at
            else ""
        )
        if message.role == "user":
            lines += [f"## You · {stamp}", ""]
            if message.attachments:
                lines.append("Attached: " + ", ".join(f"`{a}`" for a in message.attachments))
                lines.append("")
            lines += [message.text or "", ""]
            continue
        lines += [f"## Assistant · {stamp}", "", f"_{route_line(message)}_", ""]
        if message.route == "refused":
            lines += ["Refused: nothing was sent.", ""]
            continue
        if message.reasoning:
            quoted = "\n".join("> " + line for line in message.reasoning.splitlines())
            lines += ["<details><summary>Reasoning</summary>", "", quoted, "", "</details>", ""]
        lines += [message.text or "", ""]
        if message.status == "error":
            lines += [f"**Failed** ({message.error_kind or 'error'}): {message.error or ''}", ""]
        elif message.status == "cancelled":
            lines += ["**Cancelled.**", ""]
        elif message.status == "interrupted":
            lines += ["**Interrupted:** the process ended before the answer did.", ""]
    return "\n".join(lines).rstrip() + "\n"


def route_line(message: Message) -> str:
    """``cloud · openai/gpt-4.1 · rule default · 11 in / 4 out tok · $0.000054``."""
    parts = [message.route or "-"]
    if message.model:
        parts.append(message.model)
    if message.rule:
        parts.append(f"rule {message.rule}")
    if message.route != "refused":
        parts.append(f"{message.input_tokens or 0} in / {message.output_tokens or 0} out tok")
        parts.append("unpriced" if message.cost_usd is None else f"${message.cost_usd:.6f}")
    if message.status and message.status != "ok":
        parts.append(message.status)
    return " · ".join(parts)


__all__ = [
    "ConversationSummary",
    "History",
    "HistoryError",
    "Message",
    "export_json",
    "export_markdown",
    "route_line",
    "title_from",
]
