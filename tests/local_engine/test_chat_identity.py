"""The chat encoding is byte-identical to the official DeepSeek V4 encoder, tools included.

``data/dsv4_encoder_cases.json.gz`` holds random conversations (tool schemas, nested JSON
arguments, several calls per turn, results out of order, developer messages, response
formats; chat and thinking mode; every reasoning effort) with the prompt the official
``encoding_dsv4.encode_messages`` wrote for each. The official file is not part of this
repository; ``data/make_dsv4_cases.py`` regenerates the cases from it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from local_engine.runtime.chat import render_prompt
from local_engine.runtime.dsml import render_tool_calls, tool_call_of
from local_engine.runtime.dsml_parser import parse_answer

CASES: list[dict[str, Any]] = json.loads(
    gzip.decompress((Path(__file__).parent / "data" / "dsv4_encoder_cases.json.gz").read_bytes())
)["cases"]


def test_the_corpus_exercises_tools_in_both_modes() -> None:
    with_tools = [c for c in CASES if any(m.get("tools") for m in c["messages"])]
    with_calls = [c for c in CASES if any(m.get("tool_calls") for m in c["messages"])]
    several = [c for c in CASES if any(len(m.get("tool_calls") or ()) > 1 for m in c["messages"])]
    assert len(CASES) >= 400
    assert len(with_tools) > 200 and len(with_calls) > 300 and len(several) > 250
    assert {c["thinking"] for c in with_tools} == {True, False}


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_prompt_is_identical_to_the_official_encoder(case: dict[str, Any]) -> None:
    prompt = render_prompt(
        case["messages"], thinking=case["thinking"], reasoning_effort=case["reasoning_effort"]
    )
    assert prompt == case["expected"]


def _assistant_calls(case: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [m["tool_calls"] for m in case["messages"] if m.get("tool_calls")]


def test_every_rendered_call_block_of_the_corpus_parses_back() -> None:
    blocks = 0
    for case in CASES:
        for calls in _assistant_calls(case):
            wanted = [tool_call_of(c, "corpus") for c in calls]
            block = render_tool_calls(wanted)
            assert block in case["expected"]
            text = "answer" + block
            parsed = parse_answer(text)
            assert parsed.error is None and parsed.text == "answer"
            assert [c.name for c in parsed.calls] == [c.name for c in wanted]
            for got, want in zip(parsed.calls, wanted, strict=True):
                try:
                    expected_args = json.loads(want.arguments)
                except ValueError:  # written as one string parameter, as the official does
                    expected_args = {"arguments": want.arguments}
                assert json.loads(got.arguments) == expected_args
            blocks += 1
    assert blocks > 150
