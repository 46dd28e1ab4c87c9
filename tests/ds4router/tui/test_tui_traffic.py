"""``ds4router --serve``: the gateway runs inside the app and F12 lists agents' requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
from openai_server import OpenAIServer, ok
from textual.widgets import DataTable
from tui_support import SIZE, cloud_project, settle

from ds4router.tui.app import Ds4RouterApp
from ds4router.tui.screens.traffic import TrafficScreen

SECRET = "ghp_" + "Zq8Lm2Xv9Rt4Wb6Ny1Kc3Pd7Hs5Jf0Ga8Ue2"


async def test_agents_requests_appear_on_the_traffic_screen(
    tmp_path: Path, openai_server: OpenAIServer, make_app: Callable[..., Ds4RouterApp]
) -> None:
    openai_server.script(ok("fine"))
    project = cloud_project(tmp_path, openai_server.base_url, extra="serve: {port: 0}\n")
    app = make_app(project, check_cloud_health=False, serve=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.gateway is not None, timeout=60)
        url = app.gateway.url
        await pilot.press("f12")
        await settle(pilot, app, until=lambda: isinstance(app.screen, TrafficScreen))

        def ask(text: str) -> httpx.Response:
            body = {"model": "ds4router/auto", "messages": [{"role": "user", "content": text}]}
            headers = {"x-ds4router-client": "test-agent"}
            return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)

        answered = await asyncio.to_thread(ask, "hello")
        refused = await asyncio.to_thread(ask, f"deploy with {SECRET}")
        table = app.screen.query_one(DataTable)
        await settle(pilot, app, until=lambda: table.row_count == 2, timeout=60)
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(2)]
    assert answered.status_code == 200 and refused.status_code == 403
    assert rows[0][1] == "test-agent" and rows[0][2] == "cloud" and rows[0][-1] == "ok"
    assert rows[1][2] == "refused" and rows[1][5] == "secret"
    assert rows[1][-1].startswith("refused:") and "cloud_max_privacy" in rows[1][-1]
    assert SECRET not in " ".join(rows[1])
    assert openai_server.count == 1
