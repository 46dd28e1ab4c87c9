"""DeepSeek V4 chat encoding: exact prompt strings, refusals, and splitting reasoning."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from local_engine.errors import EngineError
from local_engine.runtime.chat import (
    ChatEncodingError,
    render_prompt,
    split_reasoning,
)

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
U = "<｜User｜>"
A = "<｜Assistant｜>"

# Written out independently of the module under test: the official max-effort preamble.
MAX_EFFORT = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential "
    "paths, edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no "
    "assumption is left unchecked.\n\n"
)

SYSTEM = {"role": "system", "content": "You are terse."}
MULTI_TURN = [
    SYSTEM,
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "add them"},
    {"role": "user", "content": "and 3+3?"},
]


def test_chat_mode_single_turn() -> None:
    prompt = render_prompt([SYSTEM, {"role": "user", "content": "Hi"}])
    assert prompt == f"{BOS}You are terse.{U}Hi{A}</think>"


def test_thinking_mode_single_turn() -> None:
    prompt = render_prompt([SYSTEM, {"role": "user", "content": "Hi"}], thinking=True)
    assert prompt == f"{BOS}You are terse.{U}Hi{A}<think>"


def test_no_system_message() -> None:
    assert render_prompt([{"role": "user", "content": "Hi"}]) == f"{BOS}{U}Hi{A}</think>"


def test_chat_mode_multi_turn_never_shows_reasoning() -> None:
    assert render_prompt(MULTI_TURN) == (
        f"{BOS}You are terse.{U}2+2?{A}</think>4{EOS}{U}and 3+3?{A}</think>"
    )


def test_thinking_mode_multi_turn_drops_earlier_reasoning() -> None:
    assert render_prompt(MULTI_TURN, thinking=True) == (
        f"{BOS}You are terse.{U}2+2?{A}</think>4{EOS}{U}and 3+3?{A}<think>"
    )


def test_thinking_mode_keeps_reasoning_of_an_assistant_turn_after_the_last_user() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "answer", "reasoning_content": "hmm"},
    ]
    assert render_prompt(messages, thinking=True) == f"{BOS}{U}q{A}<think>hmm</think>answer{EOS}"
    assert render_prompt(messages) == f"{BOS}{U}q{A}</think>answer{EOS}"


def test_max_reasoning_effort_prefixes_the_prompt_in_thinking_mode() -> None:
    messages = [SYSTEM, {"role": "user", "content": "Hi"}]
    assert render_prompt(messages, thinking=True, reasoning_effort="max") == (
        f"{BOS}{MAX_EFFORT}You are terse.{U}Hi{A}<think>"
    )


def test_reasoning_effort_changes_nothing_else() -> None:
    messages = [SYSTEM, {"role": "user", "content": "Hi"}]
    plain_thinking = render_prompt(messages, thinking=True)
    assert render_prompt(messages, thinking=True, reasoning_effort="high") == plain_thinking
    # Chat mode ignores the effort, as the official encoder does.
    assert render_prompt(messages, reasoning_effort="max") == render_prompt(messages)


def test_tool_results_become_tool_result_blocks_in_one_user_turn() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {"role": "assistant", "content": "Looking it up."},
        {"role": "tool", "tool_call_id": "a", "content": "Paris: 21C"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "Oslo: 9C"}]},
        {"role": "user", "content": "thanks, compare them"},
    ]
    assert render_prompt(messages) == (
        f"{BOS}{U}weather in Paris and Oslo?{A}</think>Looking it up.{EOS}"
        f"{U}<tool_result>Paris: 21C</tool_result>\n\n<tool_result>Oslo: 9C</tool_result>"
        f"\n\nthanks, compare them{A}</think>"
    )


def test_a_trailing_tool_result_gets_the_assistant_turn_opened() -> None:
    messages = [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": "ok", "reasoning_content": "plan"},
        {"role": "tool", "content": "exit 0"},
    ]
    assert render_prompt(messages, thinking=True) == (
        f"{BOS}{U}run it{A}</think>ok{EOS}{U}<tool_result>exit 0</tool_result>{A}<think>"
    )


def test_consecutive_user_messages_merge_with_a_blank_line() -> None:
    messages = [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]
    assert render_prompt(messages) == f"{BOS}{U}first\n\nsecond{A}</think>"


def test_three_turns_thinking_with_a_developer_message_before_the_last_user() -> None:
    messages = [
        {"role": "developer", "content": "house rules"},
        {"role": "assistant", "content": "noted", "reasoning_content": "r0"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
        {"role": "user", "content": "q2"},
    ]
    # Chat mode keeps the developer turn (written as a user turn).
    assert render_prompt(messages) == (
        f"{BOS}{U}house rules{A}</think>noted{EOS}{U}q1{A}</think>a1{EOS}{U}q2{A}</think>"
    )
    # Thinking mode drops developer turns before the last user turn, and old reasoning.
    assert render_prompt(messages, thinking=True) == (
        f"{BOS}noted{EOS}{U}q1{A}</think>a1{EOS}{U}q2{A}<think>"
    )


def test_a_system_message_after_a_user_turn_delays_the_assistant_opening() -> None:
    messages = [{"role": "user", "content": "q"}, {"role": "system", "content": "late"}]
    assert render_prompt(messages) == f"{BOS}{U}qlate"


@dataclass(frozen=True)
class _Msg:
    role: str
    content: str


def test_message_objects_with_role_and_content_are_accepted() -> None:
    assert render_prompt([_Msg("user", "Hi")]) == render_prompt([{"role": "user", "content": "Hi"}])


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def test_request_tools_go_on_the_system_message() -> None:
    on_request = render_prompt([SYSTEM, {"role": "user", "content": "Hi"}], tools=[WEATHER])
    on_message = render_prompt([{**SYSTEM, "tools": [WEATHER]}, {"role": "user", "content": "Hi"}])
    assert on_request == on_message
    assert on_request.startswith(f"{BOS}You are terse.\n\n## Tools\n\n")
    assert '{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}' in (
        on_request
    )


def test_request_tools_without_a_system_message_get_an_empty_one() -> None:
    prompt = render_prompt([{"role": "user", "content": "Hi"}], tools=[WEATHER], thinking=True)
    assert prompt.startswith(f"{BOS}\n\n## Tools\n\n")
    assert prompt.endswith(f"{U}Hi{A}<think>")


def test_with_tools_thinking_mode_keeps_every_turns_reasoning() -> None:
    messages = [{**SYSTEM, "tools": [WEATHER]}, *MULTI_TURN[1:]]
    prompt = render_prompt(messages, thinking=True)
    assert prompt.endswith(f"{U}2+2?{A}<think>add them</think>4{EOS}{U}and 3+3?{A}<think>")


def test_assistant_tool_calls_and_their_results_in_call_order() -> None:
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
    ]
    d = "｜DSML｜"
    assert render_prompt(messages) == (
        f"{BOS}{U}go{A}</think>\n\n<{d}tool_calls>\n"
        f'<{d}invoke name="f">\n<{d}parameter name="x" string="false">1</{d}parameter>\n'
        f'</{d}invoke>\n<{d}invoke name="g">\n\n</{d}invoke>\n</{d}tool_calls>{EOS}'
        f"{U}<tool_result>A</tool_result>\n\n<tool_result>B</tool_result>{A}</think>"
    )


def test_tools_on_a_user_message_are_refused_not_ignored() -> None:
    with pytest.raises(ChatEncodingError, match="message 0: tools on a user message") as info:
        render_prompt([{"role": "user", "content": "x", "tools": [WEATHER]}])
    assert isinstance(info.value, EngineError)


def test_tool_call_arguments_that_are_not_an_object_are_refused() -> None:
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    messages = [_Msg("user", "x"), {"role": "assistant", "content": "", "tool_calls": [call]}]
    with pytest.raises(ChatEncodingError, match="message 1.*JSON object"):
        render_prompt(messages)


@pytest.mark.parametrize(
    ("messages", "kwargs", "needle"),
    [
        ([], {}, "at least one"),
        ([{"role": "robot", "content": "x"}], {}, "unknown role 'robot'"),
        ([{"role": "user", "content": "x"}], {"reasoning_effort": "low"}, "reasoning_effort"),
        (
            [{"role": "user", "content": "x", "response_format": {"type": "json"}}],
            {},
            "response_format",
        ),
        ([{"role": "user", "content": [{"type": "image_url"}]}], {}, "image_url"),
        ([{"role": "developer", "content": ""}], {}, "developer"),
        ([{"role": "user", "content": 42}], {}, "content must be text"),
    ],
)
def test_invalid_requests_raise_an_actionable_error(
    messages: list[dict[str, object]], kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(ChatEncodingError, match=needle):
        render_prompt(messages, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "thinking", "expected"),
    [
        ("weigh it</think>The answer is 4.", True, ("weigh it", "The answer is 4.")),
        ("weigh it</think>4" + EOS, True, ("weigh it", "4")),
        ("<think>weigh</think>4", True, ("weigh", "4")),
        ("still thinking when cut off", True, ("still thinking when cut off", "")),
        ("</think>direct", True, ("", "direct")),
        ("a</think>b</think>c", True, ("a", "b</think>c")),
        ("plain answer" + EOS, False, ("", "plain answer")),
    ],
)
def test_split_reasoning(text: str, thinking: bool, expected: tuple[str, str]) -> None:
    assert split_reasoning(text, thinking=thinking) == expected
