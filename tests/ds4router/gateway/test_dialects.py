"""The two dialects' parsing and encoding, without a server: what each client sends and sees."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds4router.gateway import anthropic_api, openai_api
from ds4router.gateway.wire import Dialect, WireError
from ds4router.routing.scan.pieces import pieces_from_chat
from ds4router.sessions.plan import Reasoning
from pricing.usage import TokenUsage


def test_anthropic_tool_turns_become_openai_tool_calls_and_tool_messages() -> None:
    body = {
        "model": "ds4router/auto",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You are terse."}],
        "tools": [
            {"name": "read", "description": "read a file", "input_schema": {"type": "object"}}
        ],
        "messages": [
            {"role": "user", "content": "open .env"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "need the file"},
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "tu_1", "name": "read", "input": {"path": ".env"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": "A=1"},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    wire = anthropic_api.parse_request(body)
    assert wire.dialect is Dialect.ANTHROPIC and wire.auto and wire.reasoning is Reasoning.MEDIUM
    assert wire.messages[0] == {"role": "system", "content": "You are terse."}
    assistant = wire.messages[2]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "read",
        "arguments": '{"path": ".env"}',
    }
    assert assistant["reasoning_content"] == "need the file"
    assert wire.messages[3] == {"role": "tool", "tool_call_id": "tu_1", "content": "A=1"}
    assert wire.messages[4] == {"role": "user", "content": "and?"}
    assert wire.tools[0]["function"]["parameters"] == {"type": "object"}


def test_an_anthropic_image_stays_an_unreadable_part_for_the_privacy_scan() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
    }
    wire = anthropic_api.parse_request(
        {"max_tokens": 5, "messages": [{"role": "user", "content": [image]}]}
    )
    pieces = list(pieces_from_chat(wire.messages))
    assert any(p.unreadable for p in pieces)
    result = {"type": "tool_result", "tool_use_id": "t", "content": [image]}
    wire = anthropic_api.parse_request(
        {"max_tokens": 5, "messages": [{"role": "user", "content": [result]}]}
    )
    assert any(p.unreadable for p in pieces_from_chat(wire.messages))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0"),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"max_tokens": 5, "temperature": 3, "messages": [{"role": "user", "content": "x"}]},
            "temperature",
        ),
    ],
)
def test_bad_anthropic_bodies_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(WireError) as caught:
        anthropic_api.parse_request(body)
    assert caught.value.param == param


def test_count_tokens_does_not_need_max_tokens() -> None:
    wire = anthropic_api.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}, counting=True
    )
    assert wire.max_tokens is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "x"}]}, "messages[0]"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"},
            "reasoning_effort",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
    ],
)
def test_bad_openai_bodies_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(WireError) as caught:
        openai_api.parse_request(body)
    assert caught.value.param == param


def test_openai_request_knobs_are_read() -> None:
    wire = openai_api.parse_request(
        {
            "model": "openai/gpt-4.1",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": "x"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": 64,
            "stop": "END",
            "reasoning_effort": "high",
        }
    )
    assert not wire.auto and wire.stream and wire.include_usage
    assert wire.messages[0]["role"] == "system"
    assert (wire.max_tokens, wire.stop, wire.reasoning) == (64, ("END",), Reasoning.HIGH)


usages = st.builds(
    lambda cached, written, plain, reasoning, visible: TokenUsage(
        input_tokens=cached + written + plain,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=reasoning + visible,
        reasoning_tokens=reasoning,
    ),
    *(st.integers(0, 10**6) for _ in range(5)),
)


@given(usages)
def test_each_dialect_reports_the_ledger_usage_in_its_own_convention(usage: TokenUsage) -> None:
    a = anthropic_api.usage_json(usage)
    assert a["input_tokens"] + a["cache_read_input_tokens"] + a["cache_creation_input_tokens"] == (
        usage.input_tokens
    )
    o = openai_api.usage_json(usage)
    assert o["prompt_tokens"] == usage.input_tokens
    assert o["prompt_tokens_details"]["cached_tokens"] == usage.cached_input_tokens
    assert o["total_tokens"] == usage.input_tokens + usage.output_tokens


def test_anthropic_stream_events_follow_the_published_sequence() -> None:
    msg = anthropic_api.Message(id="msg_1", model="m")
    events = msg.start(TokenUsage(input_tokens=10, cached_input_tokens=4))
    events += msg.thinking("hmm")
    events += msg.text("Hel") + msg.text("lo")
    events += msg.tool_start("tu_1", "read")
    events += msg.tool_arguments('{"pa') + msg.tool_arguments('th": "a"}')
    events += msg.finish("stop", TokenUsage(input_tokens=10, output_tokens=7))
    names = [name for name, _ in events]
    assert names == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[0][1]["message"]["usage"]["input_tokens"] == 6
    assert [e[1]["index"] for e in events if e[0] == "content_block_start"] == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    body = msg.body("stop", TokenUsage(input_tokens=10, output_tokens=7))
    assert body["content"][2] == {
        "type": "tool_use",
        "id": "tu_1",
        "name": "read",
        "input": {"path": "a"},
    }
    assert body["content"][1] == {"type": "text", "text": "Hello"}


def test_openai_chunks_carry_the_role_once_and_tool_calls_by_index() -> None:
    c = openai_api.Completion(id="chatcmpl-1", model="m")
    chunks = [c.chunk_text("Hi"), c.chunk_tool_start("call_1", "read")]
    chunks += [
        c.chunk_tool_arguments('{"a":'),
        c.chunk_tool_arguments("1}"),
        c.chunk_finish("stop"),
    ]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert all("role" not in ch["choices"][0]["delta"] for ch in chunks[1:])
    args = "".join(
        ch["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments", "")
        for ch in chunks[1:4]
    )
    assert json.loads(args) == {"a": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    body = c.body("stop", TokenUsage(input_tokens=3, output_tokens=2))
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
