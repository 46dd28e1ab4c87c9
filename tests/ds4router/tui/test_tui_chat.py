"""The chat with the real session, history and ledger, against the loopback server:
send -> stream -> badge and ledger row; a refused secret sends nothing; Esc cancels
mid-stream; conversations switch and resume from history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from openai_server import OpenAIServer, Reply, ok
from tui_support import SIZE, cloud_project, settle

from ds4router import paths
from ds4router.tui.app import Ds4RouterApp
from ds4router.tui.widgets.messages import AssistantMessage, UserMessage

MakeApp = Callable[..., Ds4RouterApp]


def ledger_rows(project: str = "acme") -> list:
    """This month's rows: the session stamps rows with the real time, not the app's clock."""
    from pricing.ledger import Ledger

    db = paths.database_path()
    if not db.is_file():
        return []
    with Ledger(db) as ledger:
        return ledger.month_rows(dt.datetime.now(dt.UTC).strftime("%Y-%m"), project)


def last_answer(app: Ds4RouterApp) -> AssistantMessage:
    return app.query(AssistantMessage).last()


def shown(widget: AssistantMessage, part: str) -> str:
    return str(widget.query_one(f".{part}").render())


async def type_and_send(pilot, app: Ds4RouterApp, text: str) -> None:  # type: ignore[no-untyped-def]
    app.composer.prompt.insert(text)
    await pilot.pause(0.05)
    await pilot.press("ctrl+s")


async def test_send_streams_markdown_then_badge_stats_and_a_ledger_row(
    tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    openai_server.script(
        ok("Use a **dataclass**:\n\n", "```python\n", "@dataclass\nclass Invoice:\n",
           "    total: int\n", "```\n", chunk_delay_s=0.02)
    )  # fmt: skip
    project = cloud_project(tmp_path, openai_server.base_url)
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        app.composer.prompt.insert("What does the dataclass decorator do? Please explain")
        await settle(pilot, app, until=lambda: "CLOUD" in str(app.query_one("#preview").render()))
        assert "openai/gpt-4.1" in str(app.query_one("#preview").render())
        await pilot.press("ctrl+s")
        await settle(pilot, app, until=lambda: not app.generating)
        await settle(pilot, app)

        answer = last_answer(app)
        assert answer.text.startswith("Use a **dataclass**")
        # Markdown, not plain text: the fence became a code block widget.
        fences = list(answer.query("MarkdownFence"))
        assert len(fences) == 1 and "class Invoice" in fences[0].code
        badge = shown(answer, "badge")
        assert badge.startswith(" CLOUD ") and "openai/gpt-4.1" in badge
        assert "rule default" in badge and "internal" in badge and "explain" in badge
        stats = shown(answer, "stats")
        assert "in 11 · out 5 tok" in stats and "TTFT" in stats and "tok/s" in stats

        rows = ledger_rows()
        assert len(rows) == 1
        row = rows[0]
        assert (row.route, row.model, row.status) == ("cloud", "openai/gpt-4.1", "ok")
        assert (row.input_tokens, row.output_tokens) == (11, 5)
        assert row.cost_usd is not None and f"${row.cost_usd:.4f}" in stats
        assert openai_server.count == 1

        # The code block copies (OSC 52 keeps it on the app as well).
        await pilot.press("ctrl+g")
        await settle(pilot, app)
        assert app.clipboard == fences[0].code

        # Explain, with an empty draft: the last message, as it was routed.
        await pilot.press("f4")
        await settle(pilot, app, until=lambda: type(app.screen).__name__ == "ExplainScreen")
        assert "as routed" in app.screen.subject
        assert app.screen.decision is answer.decision


async def test_a_refused_secret_request_shows_why_and_sends_nothing(
    tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    project = cloud_project(tmp_path, openai_server.base_url)
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        secret = "deploy with AKIAIOSFODNN7EXAMPLE please #secret"
        app.composer.prompt.insert(secret)
        await settle(pilot, app, until=lambda: "REFUSED" in str(app.query_one("#preview").render()))
        assert "nothing will be sent" in str(app.query_one("#preview").render())
        await pilot.press("ctrl+s")
        await settle(pilot, app, until=lambda: not app.generating)
        answer = last_answer(app)
        notes = shown(answer, "notes")
        assert "Refused: nothing was sent." in notes
        assert "cloud_max_privacy" in notes and "To allow it:" in notes
        assert shown(answer, "badge").startswith(" REFUSED ")
        assert answer.text == ""
    assert openai_server.count == 0
    assert [r.route for r in ledger_rows()] == ["refused"]
    # The ledger never holds the secret.
    assert "AKIA" not in repr(ledger_rows())


async def test_escape_cancels_a_stream_midway(
    tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    words = tuple(f"word{i} " for i in range(200))
    openai_server.script(Reply(text=words, chunk_delay_s=0.05))
    project = cloud_project(tmp_path, openai_server.base_url)
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        await type_and_send(pilot, app, "Tell me a long story")
        await settle(pilot, app, until=lambda: app.generating and "word3" in last_answer(app).text)
        await pilot.press("escape")
        await settle(pilot, app, until=lambda: not app.generating, timeout=10)
        await settle(pilot, app)
        answer = last_answer(app)
        assert "Cancelled." in shown(answer, "notes")
        assert "word0" in answer.text and "word199" not in answer.text
        assert answer.failure is not None and answer.failure.kind == "cancelled"
    rows = ledger_rows()
    assert [(r.route, r.status) for r in rows] == [("cloud", "cancelled")]


async def test_conversations_switch_and_resume_from_history(
    tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    openai_server.script(ok("Answer one"), ok("Answer two"), ok("Answer three"))
    project = cloud_project(tmp_path, openai_server.base_url)
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        await type_and_send(pilot, app, "First question")
        await settle(pilot, app, until=lambda: not app.generating)
        await type_and_send(pilot, app, "Second question")
        await settle(pilot, app, until=lambda: not app.generating)
        first_id = app.conversation_id
        assert first_id is not None

        await pilot.press("ctrl+n")
        await settle(pilot, app, until=lambda: not app.query(UserMessage))
        await type_and_send(pilot, app, "Another topic")
        await settle(pilot, app, until=lambda: not app.generating)
        second_id = app.conversation_id
        assert second_id not in (None, first_id)
        await settle(pilot, app, until=lambda: len(app.conversations) == 2)

        app.resume(first_id)
        await settle(pilot, app, until=lambda: app.conversation_id == first_id)
        await settle(pilot, app)
        users = [m.text for m in app.query(UserMessage)]
        answers = [m.text for m in app.query(AssistantMessage)]
        assert users == ["First question", "Second question"]
        assert answers == ["Answer one", "Answer two"]
        assert shown(app.query(AssistantMessage).first(), "badge").startswith(" CLOUD ")

        # Rename, then delete, through the dialogs.
        await pilot.press("ctrl+r")
        await settle(pilot, app, until=lambda: type(app.screen).__name__ == "TextPrompt")
        app.screen.query_one("Input").value = "Invoices"
        await pilot.press("enter")
        await settle(
            pilot, app, until=lambda: any(c.title == "Invoices" for c in app.conversations)
        )
        await pilot.press("f8")
        await settle(pilot, app, until=lambda: bool(app.screen.query("#yes")))
        await pilot.click("#yes")
        await settle(pilot, app, until=lambda: len(app.conversations) == 1)
        assert app.conversations[0].id == second_id
        assert app.conversation_id is None and not app.query(UserMessage)


async def test_a_local_request_streams_from_a_tiny_random_checkpoint(
    tmp_path: Path, make_app: MakeApp, tiny_checkpoint: Path
) -> None:
    """The LOCAL badge and a local cost (electricity + hardware). The random model never
    stops on its own, so the answer is cancelled after a few tokens; it is still priced."""
    from tui_support import write_project

    project = write_project(
        tmp_path,
        f"""\
project: acme
default: local
local:
  engine: {{model_path: '{tiny_checkpoint}'}}
  hardware: {{price_usd: 3000, lifetime_years: 3, hours_per_day: 8}}
""",
    )
    app = make_app(project, check_cloud_health=False, load_local_engine=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(
            pilot, app, until=lambda: app.ready and app.engine_status.state == "ready", timeout=60
        )
        await type_and_send(pilot, app, "Say hello")
        await settle(pilot, app, until=lambda: len(last_answer(app).text) >= 3, timeout=60)
        await pilot.press("escape")
        await settle(pilot, app, until=lambda: not app.generating, timeout=30)
        await settle(pilot, app)
        answer = last_answer(app)
        badge = shown(answer, "badge")
        assert badge.startswith(" LOCAL ") and "local/deepseek-v4-flash" in badge
        assert "rule default" in badge
        stats = shown(answer, "stats")
        assert "TTFT" in stats and "unpriced" not in stats
        assert answer.priced is not None and answer.priced.route == "local"
        assert answer.priced.cost_usd is not None and answer.priced.cost_usd > 0
        assert "electricity" in answer.priced.cost_detail
    rows = ledger_rows()
    assert [(r.route, r.status) for r in rows] == [("local", "cancelled")]
    assert rows[0].cost_amortization_usd is not None and rows[0].cost_amortization_usd > 0
    assert rows[0].energy_source is not None


async def test_a_backend_failure_shows_its_reason_and_the_fallback_taken(
    tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    from openai_server import error

    base = openai_server.base_url
    project = cloud_project(
        tmp_path,
        base,
        extra="""\
fallback: {cloud_unavailable: "cloud:openai/backup"}
""",
    )
    (project / ".ds4router.yaml").write_text(
        (project / ".ds4router.yaml")
        .read_text()
        .replace(
            f'models: [{{name: openai/gpt-4.1, api_base: "{base}"}}]',
            f'models: [{{name: openai/gpt-4.1, api_base: "{base}"}}, '
            f'{{name: openai/backup, api_base: "{base}"}}]',
        )
    )
    openai_server.script(error(503, "overloaded"), ok("Backup answer"))
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        await type_and_send(pilot, app, "Hello there")
        await settle(pilot, app, until=lambda: not app.generating)
        await settle(pilot, app)
        answer = last_answer(app)
        notes = shown(answer, "notes")
        assert "cloud:openai/gpt-4.1 failed before any token" in notes
        assert "→ trying cloud:openai/backup" in notes and "overloaded" in notes
        assert answer.text == "Backup answer"
        badge = shown(answer, "badge")
        assert "openai/backup" in badge and "rule fallback" in badge

        # With nothing left to fall back to, the failure itself is shown, with its reason.
        openai_server.script(error(401, "bad key", type_="invalid_request_error"))
        app.conversation_id = None
        (project / ".ds4router.yaml").write_text(
            (project / ".ds4router.yaml")
            .read_text()
            .replace(
                'fallback: {cloud_unavailable: "cloud:openai/backup"}',
                "fallback: {cloud_unavailable: null}",
            )
        )
        app.action_reload_config()
        await settle(pilot, app)
        await type_and_send(pilot, app, "Hello again")
        await settle(pilot, app, until=lambda: not app.generating)
        await settle(pilot, app)
        notes = shown(last_answer(app), "notes")
        assert "Failed (auth)" in notes and "bad key" in notes
