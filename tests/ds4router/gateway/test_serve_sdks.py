"""``ds4router serve`` driven by the official OpenAI and Anthropic SDKs, as agents drive it.

A live gateway on 127.0.0.1 in front of the loopback fake cloud: streamed and whole answers,
tool calls both ways, errors in each dialect, a refused secret (nothing reaches the cloud),
keys, the model list, token counting, a client that goes away mid-stream.
"""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from gateway_support import MODEL, live_gateway, wait_until, write_project
from openai_server import OpenAIServer, Reply, error, ok, tool_call
from scripted import ScriptedBackend, reply
from session_support import ledger_rows

from ds4router.gateway.auth import AuthError, KeyRing, KeySpec, check_bind

AWS = "AKIA" + "2OGYBAH6RTXMPQ7Z"
SECRET = "aws_secret_access_key = " + "wJalrXUtnFEMI" + "/K7MDENG/bPxRfiCYq9Zt3Lm"


def clients(url: str, key: str = "none") -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0),
        anthropic.Anthropic(base_url=url, api_key=key, max_retries=0),
    )


@pytest.fixture
def project(tmp_path: Path, openai_server: OpenAIServer) -> Path:
    return write_project(tmp_path / "proj", openai_server.base_url)


def test_openai_sdk_streams_and_the_ledger_names_the_client(
    project: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(ok("Hel", "lo", usage={"prompt_tokens": 9, "completion_tokens": 2}))
    with live_gateway(project) as live:
        oai, _ = clients(live.url)
        stream = oai.chat.completions.create(
            model="ds4router/auto",
            messages=[{"role": "user", "content": "say hello"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-ds4router-client": "my-agent"},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 9
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    sent = openai_server.requests[-1].body
    assert sent["messages"][-1] == {"role": "user", "content": "say hello"}
    (row,) = ledger_rows()
    assert (row.route, row.status, row.client, row.input_tokens) == ("cloud", "ok", "my-agent", 9)


def test_whole_answers_in_both_dialects_with_usage_in_each_convention(
    project: Path, openai_server: OpenAIServer
) -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "total_tokens": 105,
        "prompt_tokens_details": {"cached_tokens": 40},
    }
    openai_server.script(ok("Four.", usage=usage), ok("Four.", usage=usage))
    with live_gateway(project) as live:
        oai, ant = clients(live.url)
        whole = oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "2+2?"}]
        )
        message = ant.messages.create(
            model="ds4router/auto",
            max_tokens=50,
            system="be brief",
            messages=[{"role": "user", "content": "2+2?"}],
        )
    assert whole.choices[0].message.content == "Four."
    assert whole.usage is not None and whole.usage.prompt_tokens == 100
    assert message.content[0].type == "text" and message.content[0].text == "Four."
    # Anthropic's input_tokens leaves out the cache reads it reports apart.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (60, 40)
    assert message.stop_reason == "end_turn"
    assert openai_server.requests[-1].body["messages"][0] == {
        "role": "system",
        "content": "be brief",
    }
    assert [r.input_tokens for r in ledger_rows()] == [100, 100]


def test_anthropic_sdk_streams_text_events(project: Path, openai_server: OpenAIServer) -> None:
    openai_server.script(ok("Bon", "jour"))
    with live_gateway(project) as live:
        _, ant = clients(live.url)
        with ant.messages.stream(
            model="ds4router/auto",
            max_tokens=20,
            messages=[{"role": "user", "content": "greet me in French"}],
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
    assert final.content[0].text == "Bonjour"
    assert kinds[0] == "message_start" and "content_block_delta" in kinds
    assert final.stop_reason == "end_turn"


def test_tool_calls_pass_through_in_both_dialects(
    project: Path, openai_server: OpenAIServer
) -> None:
    arguments = json.dumps({"path": "src/main.py", "lines": [1, 20]})
    openai_server.script(
        tool_call("call_7", "read_file", arguments), tool_call("call_8", "read_file", arguments)
    )
    tool = {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
    with live_gateway(project) as live:
        oai, ant = clients(live.url)
        chunks = list(
            oai.chat.completions.create(
                model="ds4router/auto",
                messages=[{"role": "user", "content": "open main"}],
                tools=[tool],
                stream=True,
            )
        )
        with ant.messages.stream(
            model="ds4router/auto",
            max_tokens=100,
            tools=[{"name": "read_file", "input_schema": tool["function"]["parameters"]}],
            messages=[{"role": "user", "content": "open main"}],
        ) as stream:
            final = stream.get_final_message()
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert calls[0][0].id == "call_7" and calls[0][0].function.name == "read_file"
    streamed = "".join(part[0].function.arguments or "" for part in calls)
    assert json.loads(streamed) == json.loads(arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "read_file"
    assert block.input == json.loads(arguments) and final.stop_reason == "tool_use"
    assert openai_server.requests[0].body["tools"][0]["function"]["name"] == "read_file"


def test_a_secret_in_a_tool_result_is_refused_and_nothing_is_sent(
    project: Path, openai_server: OpenAIServer
) -> None:
    conversation = [
        {"role": "user", "content": "what is in .env?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "cat", "input": {"path": ".env"}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": SECRET}],
        },
    ]
    with live_gateway(project) as live:
        oai, ant = clients(live.url)
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            ant.messages.create(model="ds4router/auto", max_tokens=10, messages=conversation)
        with pytest.raises(openai.PermissionDeniedError) as refused_too:
            oai.chat.completions.create(
                model=MODEL,  # naming a cloud model does not get past the invariant
                messages=[
                    {"role": "user", "content": "run it"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "sh", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": SECRET},
                ],
                stream=True,
            )
    assert openai_server.count == 0
    body = refused.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "privacy_refused"
    assert "cloud_max_privacy" in body["error"]["message"]
    assert refused_too.value.body["type"] == "privacy_refused"  # type: ignore[index]
    for text in (json.dumps(body), json.dumps(refused_too.value.body)):
        assert "wJalrXUtnFEMI" not in text
    assert [r.route for r in ledger_rows()] == ["refused", "refused"]


def test_a_secret_goes_to_the_local_engine_when_there_is_one(
    project: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend(reply("kept", " here"))
    with live_gateway(project, local=local) as live:
        oai, _ = clients(live.url)
        answer = oai.chat.completions.create(
            model="ds4router/auto", messages=[{"role": "user", "content": f"check {AWS}"}]
        )
    assert answer.choices[0].message.content == "kept here"
    assert openai_server.count == 0 and len(local.requests) == 1
    assert ledger_rows()[0].route == "local"


def test_provider_errors_arrive_in_each_dialect(project: Path, openai_server: OpenAIServer) -> None:
    openai_server.script(
        error(429, "slow down", retry_after="0"),
        error(500, "boom"),
    )
    with live_gateway(project) as live:
        oai, ant = clients(live.url)
        with pytest.raises(openai.RateLimitError):
            oai.chat.completions.create(
                model="ds4router/auto", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.APIStatusError) as failed:
            ant.messages.create(
                model="ds4router/auto", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.BadRequestError) as bad:
            oai.chat.completions.create(model="ds4router/auto", messages=[])
        with pytest.raises(openai.BadRequestError) as unknown:
            oai.chat.completions.create(
                model="gpt-nope", messages=[{"role": "user", "content": "x"}]
            )
    assert failed.value.status_code >= 500
    assert "messages" in str(bad.value)
    assert "unknown model 'gpt-nope'" in str(unknown.value) and MODEL in str(unknown.value)
    assert [r.status for r in ledger_rows()] == ["error", "error"]


def test_models_health_and_count_tokens(project: Path, openai_server: OpenAIServer) -> None:
    with live_gateway(project) as live:
        oai, ant = clients(live.url)
        names = [m.id for m in oai.models.list()]
        counted = ant.messages.count_tokens(
            model="ds4router/auto", messages=[{"role": "user", "content": "count these words"}]
        )
        health = httpx.get(f"{live.url}/health", timeout=60).json()
    assert names[:2] == ["ds4router/auto", "local"] and MODEL in names
    assert counted.input_tokens > 0
    assert health["status"] == "ok" and health["local"] == {"busy": False, "queued": 0}


def test_a_client_that_goes_away_mid_stream_cancels_and_the_row_says_so(
    project: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(ok(*["tok "] * 200, chunk_delay_s=0.05))
    with live_gateway(project) as live:
        oai, _ = clients(live.url)
        stream = oai.chat.completions.create(
            model="ds4router/auto", messages=[{"role": "user", "content": "long"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()
        wait_until(
            lambda: len(ledger_rows()) == 1 and ledger_rows()[0].status != "started", "the row"
        )
    (row,) = ledger_rows()
    assert row.status == "cancelled" and row.route == "cloud"


def test_keys_are_required_beyond_loopback_and_name_the_client(
    project: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AuthError, match="without a key"):
        check_bind("0.0.0.0", KeyRing(()))
    monkeypatch.setenv("GW_KEY", "k-" + "x" * 30)
    keys = KeyRing.from_specs([KeySpec("ci-bot", "GW_KEY")])
    check_bind("0.0.0.0", keys)  # a key is declared: allowed
    openai_server.script(ok("fine"))
    with live_gateway(project, keys=keys) as live:
        oai, ant = clients(live.url, key="wrong")
        with pytest.raises(openai.AuthenticationError):
            oai.chat.completions.create(
                model="ds4router/auto", messages=[{"role": "user", "content": "x"}]
            )
        _, ant = clients(live.url, key="k-" + "x" * 30)
        message = ant.messages.create(
            model="ds4router/auto", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert message.content[0].text == "fine"
    assert [r.client for r in ledger_rows()] == ["ci-bot"]
    assert openai_server.count == 1


def test_reply_shapes_survive_what_the_fake_cloud_sends(openai_server: OpenAIServer) -> None:
    # The fake cloud's tool-call stream is what the SDK tests lean on: check it directly.
    openai_server.script(tool_call("c1", "f", '{"a": 1}', tool_pieces=2))
    response = httpx.post(
        f"{openai_server.base_url}/chat/completions",
        json={"model": "m", "messages": [], "stream": True},
        timeout=60,
    )
    pieces = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    args = "".join(
        p["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
        for p in pieces
        if p["choices"]
    )
    assert args == '{"a": 1}' and isinstance(Reply(), Reply)


def test_the_month_report_breaks_agents_requests_down_by_client(
    project: Path, openai_server: OpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_support import run

    openai_server.script(ok("a"), ok("b"), ok("c"))
    with live_gateway(project) as live:
        oai, _ = clients(live.url)
        for agent in ("claude-cli", "claude-cli", "codex"):
            oai.chat.completions.create(
                model="ds4router/auto",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-ds4router-client": agent},
            )
        with pytest.raises(openai.PermissionDeniedError):
            oai.chat.completions.create(
                model="ds4router/auto",
                messages=[{"role": "user", "content": SECRET}],
                extra_headers={"x-ds4router-client": "codex"},
            )
    code, out, _ = run(capsys, "report", "--format", "json")
    assert code == 0
    by_client = {c["client"]: c for c in json.loads(out)["by_client"]}
    assert (by_client["claude-cli"]["requests"], by_client["claude-cli"]["ok"]) == (2, 2)
    assert (by_client["codex"]["requests"], by_client["codex"]["refused"]) == (2, 1)
    code, out, _ = run(capsys, "report")
    assert code == 0 and "By client" in out and "claude-cli" in out


def test_local_requests_take_turns_and_carry_their_tools(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    import threading

    project = write_project(tmp_path / "loc", openai_server.base_url, default="local")
    local = ScriptedBackend(default=reply("a", "b", "c", "d", delay_s=0.3))
    tool = {"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}}
    answers: list[str] = []
    with live_gateway(project, local=local) as live:
        oai, _ = clients(live.url)

        def ask() -> None:
            answer = oai.chat.completions.create(
                model="ds4router/auto",
                messages=[{"role": "user", "content": "find it"}],
                tools=[tool],
            )
            answers.append(answer.choices[0].message.content or "")

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        # One generates, the other waits its turn, and /health says so.
        wait_until(
            lambda: (
                httpx.get(f"{live.url}/health", timeout=60).json()["local"]
                == {"busy": True, "queued": 1}
            ),
            "a queued local request",
        )
        for thread in threads:
            thread.join(timeout=120)
    assert answers == ["abcd", "abcd"] and openai_server.count == 0
    assert [r.tools[0]["function"]["name"] for r in local.requests] == ["grep", "grep"]


def test_shutting_down_lets_a_stream_in_flight_finish_and_keeps_its_row(
    project: Path, openai_server: OpenAIServer
) -> None:
    import threading

    from ds4router.gateway.service import Gateway
    from ds4router.gateway.thread import GatewayThread

    openai_server.script(ok(*["word "] * 20, chunk_delay_s=0.05))
    live = GatewayThread(Gateway(project)).start()
    oai, _ = clients(live.url)
    stream = oai.chat.completions.create(
        model="ds4router/auto", messages=[{"role": "user", "content": "long"}], stream=True
    )
    pieces: list[str] = []
    stopper = threading.Thread(target=live.stop)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            if len(pieces) == 1:
                stopper.start()  # shut down while the answer streams
    stopper.join(timeout=120)
    assert "".join(pieces) == "word " * 20
    (row,) = ledger_rows()
    assert row.status == "ok" and row.route == "cloud"
