"""What a newcomer meets first: Enter sends, Shift+Enter / Ctrl+J break the line, a paste
never sends; the welcome's key fetches the demo model; Settings' edit button; one palette
entry per command; the project named after its directory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from openai_server import OpenAIServer, ok
from textual import events
from tui_support import SIZE, cloud_project, settle

from ds4router.demo_model import MODEL_ID
from ds4router.targets import LocalEngine
from ds4router.tui.app import Ds4RouterApp


async def test_enter_sends_and_shift_enter_ctrl_j_and_paste_only_edit(
    tmp_path: Path, openai_server: OpenAIServer, make_app
) -> None:
    openai_server.script(ok("Hello back."))
    app: Ds4RouterApp = make_app(
        cloud_project(tmp_path, openai_server.base_url), check_cloud_health=False
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        app.composer.prompt.focus()
        await pilot.press(*"line one", "shift+enter", *"two", "ctrl+j", *"three")
        app.post_message(events.Paste("\npasted\nlines\n"))  # as the terminal sends one
        await pilot.pause(0.2)
        assert app.composer.text == "line one\ntwo\nthree\npasted\nlines\n"
        assert openai_server.count == 0  # nothing was sent by any of that
        await pilot.press("enter")
        await settle(pilot, app, until=lambda: openai_server.count == 1 and not app.generating)
        chats = [r for r in openai_server.requests if r.path.endswith("/chat/completions")]
        assert chats[0].body is not None
        sent = chats[0].body["messages"][-1]["content"]
        assert sent == "line one\ntwo\nthree\npasted\nlines"


async def test_a_remapped_send_key_leaves_enter_to_break_lines(
    tmp_path: Path, openai_server: OpenAIServer, make_app
) -> None:
    project = cloud_project(tmp_path, openai_server.base_url, "keymap: {send: ctrl+s}\n")
    app: Ds4RouterApp = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        app.composer.prompt.focus()
        await pilot.press(*"a", "enter", *"b")
        assert app.composer.text == "a\nb"
        assert openai_server.count == 0


async def test_the_welcome_key_installs_the_demo_model_and_the_chat_answers_locally(
    tmp_path: Path, pulled_demo: Path, make_app
) -> None:
    from ds4router.demo_model import demo_file

    project = tmp_path / "newcomer"
    project.mkdir()  # no .ds4router.yaml: a first run
    app: Ds4RouterApp = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: bool(app.query("#welcome")))
        welcome = str(app.query_one("#welcome").text)  # type: ignore[attr-defined]
        assert "press **F1** to fetch the demo-size model" in welcome
        # What a pull leaves behind (the pull itself is tested with the real command).
        demo_file().parent.mkdir(parents=True)
        demo_file().symlink_to(pulled_demo)
        await pilot.press("f1")
        await settle(pilot, app, until=lambda: not app.query("#welcome"))
        assert app.session is not None
        _request, decision = app.session.preview("hello")
        assert isinstance(decision.target, LocalEngine) and decision.model == MODEL_ID
        assert app.loaded.project_name == "newcomer"


async def test_settings_edit_button_opens_the_project_file(
    tmp_path: Path, make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITOR", "true")  # an editor that exists and changes nothing
    project = tmp_path / "shop"
    project.mkdir()
    app: Ds4RouterApp = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        await pilot.press("f5")
        await settle(pilot, app, until=lambda: type(app.screen).__name__ == "SettingsScreen")
        await pilot.click("#edit-config")
        await settle(pilot, app, until=lambda: (project / ".ds4router.yaml").is_file())
        text = (project / ".ds4router.yaml").read_text(encoding="utf-8")
        assert "project: shop" in text


async def test_the_palette_lists_each_command_once(tmp_path: Path, make_app) -> None:
    project = tmp_path / "p"
    project.mkdir()
    app: Ds4RouterApp = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.ready)
        titles = Counter(c.title for c in app.get_system_commands(app.screen))
        assert titles["Quit"] == 1
        assert [t for t, n in titles.items() if n > 1] == []


async def test_a_refused_request_is_not_counted_as_local(tmp_path: Path, make_app) -> None:
    from tui_support import NOW, record

    from pricing.ledger import LedgerRow

    record([LedgerRow(time=NOW, project="acme", route="refused", rule="privacy", task="chat",
                      cost_usd=0.0)])  # fmt: skip
    project = tmp_path / "acme"
    project.mkdir()
    app: Ds4RouterApp = make_app(project, check_cloud_health=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: "refused" in str(app.query_one("#savings").render()))
        lines = str(app.query_one("#savings").render()).splitlines()
        assert lines[1] == "local $0.00 · 0 req" and "1 refused" in lines
