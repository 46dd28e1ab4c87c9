"""The privacy invariant through the HTTP layer: a credential anywhere in an agent's request
(system prompt, a message, a tool definition, a tool call's arguments, a tool result), in
either dialect, streamed or not, never reaches the cloud, and no answer quotes it."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import live_gateway, write_project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_server import OpenAIServer

ALNUM = string.ascii_letters + string.digits
BASE32 = string.ascii_uppercase + "234567"


def _token(prefix: str, alphabet: str, size: int) -> st.SearchStrategy[str]:
    """A token of that shape drawn at full entropy: a low-entropy body (``AKIA2222...``)
    is a placeholder, which the detectors rightly let pass."""
    return st.integers(0, 2**32).map(
        lambda seed: prefix + "".join(random.Random(seed).choices(alphabet, k=size))
    )


# Credential shapes whose prefix and length say what they are (not one fixed example each).
secrets = st.one_of(
    _token("AKIA", BASE32, 16),
    _token("ghp_", ALNUM, 36),
    st.tuples(_token("github_pat_", ALNUM, 22), _token("", ALNUM, 59)).map("_".join),
    st.tuples(
        _token("", string.digits, 12), _token("", string.digits, 13), _token("", ALNUM, 24)
    ).map(lambda parts: "xoxb-" + "-".join(parts)),
    _token("sk_live_", ALNUM, 32),
    _token("glpat-", ALNUM + "-_", 20),
)

PLACES = ("system", "user", "tool_definition", "tool_call", "tool_result")


def openai_body(place: str, secret: str, stream: bool) -> dict[str, Any]:
    carrier = f"here it is: {secret}"
    messages: list[dict[str, Any]] = [{"role": "user", "content": "help me deploy"}]
    tools = [
        {"type": "function", "function": {"name": "sh", "description": "run", "parameters": {}}}
    ]
    if place == "system":
        messages.insert(0, {"role": "system", "content": carrier})
    elif place == "user":
        messages.append({"role": "user", "content": carrier})
    elif place == "tool_definition":
        tools[0]["function"]["description"] = carrier
    else:
        args = json.dumps({"cmd": carrier if place == "tool_call" else "cat .env"})
        call = {"id": "c1", "type": "function", "function": {"name": "sh", "arguments": args}}
        result = carrier if place == "tool_result" else "ok"
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": result},
        ]
    return {"model": "ds4router/auto", "messages": messages, "tools": tools, "stream": stream}


def anthropic_body(place: str, secret: str, stream: bool) -> dict[str, Any]:
    carrier = f"here it is: {secret}"
    body: dict[str, Any] = {
        "model": "ds4router/auto",
        "max_tokens": 16,
        "stream": stream,
        "tools": [{"name": "sh", "description": "run", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "help me deploy"}],
    }
    if place == "system":
        body["system"] = [{"type": "text", "text": carrier}]
    elif place == "user":
        body["messages"][0]["content"] = [{"type": "text", "text": carrier}]
    elif place == "tool_definition":
        body["tools"][0]["description"] = carrier
    else:
        command = carrier if place == "tool_call" else "cat .env"
        use = {"type": "tool_use", "id": "t1", "name": "sh", "input": {"cmd": command}}
        result = carrier if place == "tool_result" else "ok"
        body["messages"] += [
            {"role": "assistant", "content": [use]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result}],
            },
        ]
    return body


@pytest.fixture
def live(tmp_path: Path, openai_server: OpenAIServer) -> Any:
    project = write_project(tmp_path / "proj", openai_server.base_url)
    with live_gateway(project) as gateway:
        yield gateway


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=secrets,
    place=st.sampled_from(PLACES),
    anthropic=st.booleans(),
    stream=st.booleans(),
)
def test_a_credential_anywhere_in_a_request_never_reaches_the_cloud(
    live: Any, openai_server: OpenAIServer, secret: str, place: str, anthropic: bool, stream: bool
) -> None:
    if anthropic:
        url, body = f"{live.url}/v1/messages", anthropic_body(place, secret, stream)
    else:
        url, body = f"{live.url}/v1/chat/completions", openai_body(place, secret, stream)
    response = httpx.post(url, json=body, timeout=120)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "privacy_refused"
    assert secret not in response.text
    assert openai_server.count == 0


def test_the_same_requests_without_the_credential_do_reach_the_cloud(
    live: Any, openai_server: OpenAIServer
) -> None:
    # The property above is not vacuous: each shape goes out when it holds nothing secret.
    for place in PLACES:
        for anthropic in (False, True):
            maker = anthropic_body if anthropic else openai_body
            path = "/v1/messages" if anthropic else "/v1/chat/completions"
            body = maker(place, "nothing to see", False)
            response = httpx.post(f"{live.url}{path}", json=body, timeout=120)
            assert response.status_code == 200, response.text
    assert openai_server.count == 2 * len(PLACES)
