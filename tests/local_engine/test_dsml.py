"""DSML tool calls: rendering, and reading them back from a stream split anywhere."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from local_engine.runtime.dsml import DSML, ToolCall, render_tool_calls
from local_engine.runtime.dsml_parser import (
    ToolCallDelta,
    ToolCallEnd,
    ToolCallError,
    ToolCallParser,
    ToolCallStart,
    collect,
    parse_answer,
)

# Text the model may write: anything but the DSML token itself (the official parser refuses
# it inside content too) and the characters that would end a name.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="｜"), max_size=30)
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
ARGS = st.dictionaries(NAME, JSON, max_size=4)
CALLS = st.lists(st.tuples(NAME, ARGS), min_size=1, max_size=4)


def _calls(spec: list[tuple[str, dict[str, Any]]]) -> list[ToolCall]:
    return [ToolCall(name, json.dumps(args, ensure_ascii=False)) for name, args in spec]


def _feed_in_pieces(text: str, cuts: list[int]) -> list[Any]:
    parser = ToolCallParser("t")
    out: list[Any] = []
    edges = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    for start, end in zip(edges, edges[1:], strict=False):
        out += parser.feed(text[start:end])
    return out + parser.close()


def test_a_rendered_call_block_has_the_official_shape() -> None:
    calls = [ToolCall("get_weather", '{"city": "Paris", "days": 3}'), ToolCall("now", "{}")]
    assert render_tool_calls(calls) == (
        f"\n\n<{DSML}tool_calls>\n"
        f'<{DSML}invoke name="get_weather">\n'
        f'<{DSML}parameter name="city" string="true">Paris</{DSML}parameter>\n'
        f'<{DSML}parameter name="days" string="false">3</{DSML}parameter>\n'
        f"</{DSML}invoke>\n"
        f'<{DSML}invoke name="now">\n\n</{DSML}invoke>\n'
        f"</{DSML}tool_calls>"
    )


@given(content=TEXT, spec=CALLS)
def test_render_then_parse_round_trips(
    content: str, spec: list[tuple[str, dict[str, Any]]]
) -> None:
    calls = _calls(spec)
    parsed = parse_answer(content + render_tool_calls(calls))
    assert parsed.error is None
    assert parsed.text == content
    assert [(c.name, c.arguments) for c in parsed.calls] == [(c.name, c.arguments) for c in calls]
    assert [c.parsed_arguments() for c in parsed.calls] == [args for _, args in spec]


@given(content=TEXT, spec=CALLS, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_the_stream_gives_the_same_calls_and_deltas(
    content: str, spec: list[tuple[str, dict[str, Any]]], cuts: list[int]
) -> None:
    text = content + render_tool_calls(_calls(spec))
    whole = parse_answer(text, "t")
    items = _feed_in_pieces(text, cuts)
    assert collect(items) == whole
    # Each call's deltas concatenate to its final arguments, between its start and end.
    for call in whole.calls:
        index = int(call.id.rsplit("_", 1)[1])
        starts = [
            i for i, x in enumerate(items) if isinstance(x, ToolCallStart) and x.index == index
        ]
        ends = [i for i, x in enumerate(items) if isinstance(x, ToolCallEnd) and x.index == index]
        deltas = [x.arguments for x in items if isinstance(x, ToolCallDelta) and x.index == index]
        assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0]
        assert "".join(deltas) == call.arguments


def test_string_arguments_stream_before_the_parameter_closes() -> None:
    parser = ToolCallParser("t")
    head = f'\n\n<{DSML}tool_calls>\n<{DSML}invoke name="write">\n'
    out = parser.feed(head + f'<{DSML}parameter name="body" string="true">line one\nline "two')
    assert out[0] == ToolCallStart(0, "write", "call_t_0")
    assert "".join(x.arguments for x in out if isinstance(x, ToolCallDelta)) == (
        '{"body": "line one\\nline \\"two'
    )


@given(content=TEXT, spec=CALLS, cut=st.integers(min_value=1))
def test_a_truncated_block_reports_an_error_and_keeps_finished_calls(
    content: str, spec: list[tuple[str, dict[str, Any]]], cut: int
) -> None:
    block = render_tool_calls(_calls(spec))
    end = 2 + (cut % (len(block) - 2))  # somewhere inside the block, before its last char
    parsed = parse_answer(content + block[:end], "t")
    if end >= len(f"\n\n<{DSML}tool_calls>"):
        assert isinstance(parsed.error, ToolCallError)
        assert "cut off" in parsed.error.message
    else:  # the opening tag never completed: it is text
        assert parsed.error is None and parsed.text == content + block[:end]
    complete = parse_answer(content + block, "t").calls
    assert parsed.calls == complete[: len(parsed.calls)]


@given(
    st.text(max_size=200)
    | st.lists(
        st.sampled_from(
            [
                f"<{DSML}tool_calls>",
                f"<{DSML}invoke name=",
                '"f">',
                f"<{DSML}parameter name=",
                '"a" string="false">',
                '"b" string="true">',
                f"</{DSML}parameter>",
                f"</{DSML}invoke>",
                f"</{DSML}tool_calls>",
                "\n",
                "1",
                "{",
                "x",
                '"',
                ">",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_arbitrary_text_never_raises_and_every_call_it_reports_is_valid(text: str) -> None:
    parsed = parse_answer(text)
    for call in parsed.calls:
        assert isinstance(call.parsed_arguments(), dict)  # whole JSON objects only
    if f"<{DSML}tool_calls>" not in text:
        assert parsed == collect([text]) and parsed.error is None  # plain text untouched


def test_malformed_dsml_is_one_clear_error_and_the_rest_is_text() -> None:
    text = (
        f'ok\n\n<{DSML}tool_calls>\n<{DSML}invoke name="f">\n'
        f'<{DSML}parameter name="n" string="false">{{oops</{DSML}parameter>\n'
        f"</{DSML}invoke>\n</{DSML}tool_calls>tail"
    )
    parsed = parse_answer(text)
    assert parsed.calls == ()
    assert parsed.error is not None and "not JSON" in parsed.error.message
    assert parsed.error.index == 0 and parsed.error.text.startswith(f"<{DSML}tool_calls>")
    assert parsed.error.text.endswith(f"{{oops</{DSML}parameter>")
    # What follows the point where reading stopped is passed on as text, nothing lost.
    assert parsed.text == f"ok\n</{DSML}invoke>\n</{DSML}tool_calls>tail"


def test_duplicate_parameters_are_refused() -> None:
    p = f'<{DSML}parameter name="a" string="true">x</{DSML}parameter>'
    parsed = parse_answer(f'<{DSML}tool_calls><{DSML}invoke name="f">{p}{p}</{DSML}invoke>')
    assert parsed.error is not None and "repeats parameter 'a'" in parsed.error.message


def test_whitespace_between_tags_is_tolerated() -> None:
    text = (
        f'<{DSML}tool_calls>  <{DSML}invoke name="f">'
        f'<{DSML}parameter name="a" string="false"> [1, 2] </{DSML}parameter>\n\n'
        f"</{DSML}invoke></{DSML}tool_calls>"
    )
    parsed = parse_answer(text)
    assert parsed.error is None and parsed.calls[0].parsed_arguments() == {"a": [1, 2]}


def test_text_after_the_block_is_still_answer_text() -> None:
    parsed = parse_answer(render_tool_calls([ToolCall("f", "{}")]) + " and more")
    assert parsed.text == " and more" and len(parsed.calls) == 1
