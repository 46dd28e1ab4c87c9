"""The chat tells the user, in a dim line under the answer, when earlier turns were left out
to fit the model's context window (the real session against the loopback server; LiteLLM's
map gives ``openai/gpt-4`` 8,192 tokens, 4,096 of them kept for the answer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openai_server import OpenAIServer, ok
from tui_support import SIZE, settle, write_project

from ds4router.tui.app import Ds4RouterApp
from ds4router.tui.widgets.messages import AssistantMessage

MakeApp = Callable[..., Ds4RouterApp]


async def test_a_trimmed_conversation_shows_a_dim_notice_under_the_answer(
    tmp_path: Path, openai_server: OpenAIServer, make_app: MakeApp
) -> None:
    project = write_project(
        tmp_path,
        f"""\
project: acme
default: cloud:openai/gpt-4
cloud:
  models: [{{name: openai/gpt-4, api_base: "{openai_server.base_url}"}}]
  retries: 0
""",
    )
    openai_server.script(ok("First answer"), ok("Second answer"))
    # 2,500 one-token words: one question fits the 3,840-token prompt budget, two do not.
    question = " ".join(["note"] * 2500)
    app = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        for _ in range(2):
            app.composer.prompt.insert(question)
            await pilot.pause(0.05)
            await pilot.press("ctrl+s")
            await settle(pilot, app, until=lambda: not app.generating)
        await settle(pilot, app)

        first, second = app.query(AssistantMessage)
        assert first.notes == []
        (note,) = second.notes
        assert note.plain == "1 earlier turn left out to fit openai/gpt-4's 8,192-token context"
        assert str(note.style) == "dim"
        shown = second.query_one(".notes")
        assert shown.display and "1 earlier turn left out" in str(shown.render())
        assert second.text == "Second answer"
    body = openai_server.requests[-1].body
    assert body is not None and [m["role"] for m in body["messages"]] == ["user"]
