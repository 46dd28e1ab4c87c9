"""Regenerates ``dsv4_encoder_cases.json.gz``: random conversations and the official encoder's prompt.

Run with the official ``encoding_dsv4.py`` of the DeepSeek-V4-Flash release (not shipped in
this repository; see ``local_engine/runtime/chat.py`` for the public copies):

    python tests/local_engine/data/make_dsv4_cases.py /path/to/encoding_dsv4.py [count] [seed]

Conversations mix tool definitions (random JSON schemas, non-ASCII text), assistant turns with
zero to three calls (nested JSON arguments, now and then arguments that are not JSON),
tool results answered out of order, developer messages and response formats, in chat and
thinking mode with every reasoning effort.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("dsv4_encoder_cases.json.gz")
WORDS = [
    "weather",
    "Paris",
    "naïve",
    "日本語",
    "x=1",
    'say "hi"',
    "a\\b",
    "<b>",
    "{k}",
    "ok",
    "línea\nnueva",
    "tab\there",
    "emoji 🌍",
    "",
    "  spaced  ",
    "100%",
    "$HOME",
    "end.",
]


def text(rng: random.Random, most: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, most)))


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return text(rng, 4)
    if kind == "int":
        return rng.randint(-(10**6), 10**6)
    if kind == "float":
        return round(rng.uniform(-1e3, 1e3), rng.randint(0, 6))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {
        f"k{i}_{rng.choice(WORDS)[:4]}": json_value(rng, depth + 1)
        for i in range(rng.randint(0, 3))
    }


def schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    kind = rng.choice(
        ["string", "integer", "number", "boolean", "array", "object"][: 6 if depth < 2 else 4]
    )
    out: dict[str, Any] = {"type": kind}
    if rng.random() < 0.5:
        out["description"] = text(rng)
    if kind == "string" and rng.random() < 0.3:
        out["enum"] = [rng.choice(WORDS) for _ in range(2)]
    if kind == "array":
        out["items"] = schema(rng, depth + 1)
    if kind == "object":
        props = {f"p{i}": schema(rng, depth + 1) for i in range(rng.randint(0, 3))}
        out["properties"] = props
        out["required"] = sorted(rng.sample(sorted(props), rng.randint(0, len(props))))
    return out


def tool(rng: random.Random, index: int) -> dict[str, Any]:
    function: dict[str, Any] = {"name": f"tool_{index}_{rng.choice(['get', 'run', 'find'])}"}
    if rng.random() < 0.8:
        function["description"] = text(rng)
    params = schema(rng)
    params["type"] = "object"
    params.setdefault("properties", {})
    function["parameters"] = params
    return {"type": "function", "function": function}


def call(rng: random.Random, tools: list[dict[str, Any]], n: int) -> dict[str, Any]:
    name = rng.choice(tools)["function"]["name"] if tools else f"tool_{n}"
    if rng.random() < 0.08:
        arguments = "not json " + text(rng, 2)  # the official encoder wraps it as one string
    else:
        args = {f"a{i}": json_value(rng) for i in range(rng.randint(0, 4))}
        arguments = json.dumps(args, ensure_ascii=rng.random() < 0.3)
    return {"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": arguments}}


def conversation(rng: random.Random) -> list[dict[str, Any]]:
    tools = [tool(rng, i) for i in range(rng.randint(0, 3))] if rng.random() < 0.8 else []
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.8:
        system: dict[str, Any] = {"role": "system", "content": text(rng)}
        if tools:
            system["tools"] = tools
        if rng.random() < 0.15:
            system["response_format"] = {"type": "json_schema", "json_schema": schema(rng)}
        messages.append(system)
    elif tools:
        messages.append({"role": "developer", "content": "rules " + text(rng), "tools": tools})
    n = 0
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.15:
            messages.append({"role": "developer", "content": "dev " + text(rng)})
        messages.append({"role": "user", "content": text(rng)})
        for _ in range(rng.randint(0, 3)):
            calls = [call(rng, tools, n + i) for i in range(rng.randint(0, 3))]
            n += len(calls)
            reply: dict[str, Any] = {"role": "assistant", "content": text(rng)}
            if rng.random() < 0.7:
                reply["reasoning_content"] = "think " + text(rng)
            if calls:
                reply["tool_calls"] = calls
            messages.append(reply)
            results = list(calls)
            rng.shuffle(results)
            for c in results:
                content: Any = text(rng)
                if rng.random() < 0.2:
                    content = [{"type": "text", "text": text(rng)} for _ in range(2)]
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": content})
            if not calls:
                break
    if rng.random() < 0.3 and messages[-1]["role"] == "user":
        messages.append({"role": "assistant", "content": text(rng), "reasoning_content": "r"})
    return messages


def main() -> None:
    spec = importlib.util.spec_from_file_location("encoding_dsv4", sys.argv[1])
    assert spec is not None and spec.loader is not None
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 17)
    cases = []
    while len(cases) < count:
        messages = conversation(rng)
        thinking = rng.random() < 0.5
        effort = rng.choice([None, "high", "max"])
        expected = official.encode_messages(
            messages, "thinking" if thinking else "chat", reasoning_effort=effort
        )
        cases.append(
            {
                "messages": messages,
                "thinking": thinking,
                "reasoning_effort": effort,
                "expected": expected,
            }
        )
    header = {
        "source": "official encoding_dsv4.py encode_messages (DeepSeek-V4-Flash release)",
        "regenerate": "python tests/local_engine/data/make_dsv4_cases.py ENCODER [count] [seed]",
    }
    data = json.dumps({**header, "cases": cases}, ensure_ascii=False, indent=0) + "\n"
    OUT.write_bytes(gzip.compress(data.encode("utf-8"), mtime=0))
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
