"""Agent-shaped prefix reuse: a scripted 20-turn tool-using agent, warm session vs cold prefill.

An agent resends its whole conversation every turn: the system prompt with its tool
definitions, the task, and every earlier assistant turn (text and DSML tool calls) with the
tool results. The engine keeps the session's decode states in RAM (``session=``), so each
turn restores the longest matching token prefix and prefills only what is new. This
benchmark plays a scripted coding-agent transcript (20 requests; each assistant turn makes
one or two tool calls whose results come back in the next request) against the tiny random
DeepSeek V4 model on CPU and prints one JSON object:

- per turn: ``prompt_tokens``, ``reused_tokens`` (restored, not prefilled), ``reuse``
  (their ratio), ``ttft_s`` (session, warm) and ``cold_ttft_s`` (the same prompt prefilled
  from nothing, no session, no disk cache);
- ``new_tokens``: what this request adds to the previous one's prompt (no cache can skip
  them), and ``reused_of_shared``: reused tokens / the prefix shared with the previous
  request (1.0: nothing reusable was prefilled again);
- ``min_reuse_from_turn_2`` and ``mean_reuse_from_turn_2``; the target is >= 0.90. A turn
  whose tool result is large next to the conversation so far (a whole file read) cannot
  reach it: its new tokens must be prefilled.

With ``--thinking`` the requests are rendered in thinking mode (with tools the official
encoding keeps every turn's reasoning, so the transcript's reasoning stays in the prefix).

Run: ``python bench/agent_reuse.py`` (a minute or two here).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# A coding agent's standing instructions, shorter than real ones (those run to thousands of
# tokens), so the share of each turn's new tokens is if anything overstated here.
SYSTEM = """You are a careful coding agent working in a Python repository on the user's behalf.

# Workflow
1. Understand the request. Restate the goal in one sentence before you start.
2. Explore before you edit: list directories, search for the symbols involved, and read
   every file you intend to change. Never invent file contents or APIs.
3. Make the smallest change that solves the problem. Keep the repository's style: typed
   functions, docstrings that say why, no dead code, no commented-out code.
4. After every change run the relevant tests. If a test fails, read the failure, form a
   hypothesis, and check it with the tools before changing anything else.
5. When done, show the diff and summarise what changed and why, in a few lines.

# Tools
- Use one tool call per step unless the calls are independent; then batch them.
- Paths are relative to the repository root. Do not read binary files.
- edit_file replaces one exact string: include enough context to make it unique.
- run_tests takes pytest paths; prefer the narrowest set that covers your change.

# Communication
- Be brief. Lead with the answer or the next action. No filler, no apologies.
- If the request is ambiguous, ask one precise question instead of guessing.
- Quote error messages exactly; never paraphrase a traceback.

# Safety
- Never run destructive commands, never touch files outside the repository, never print
  secrets (API keys, tokens, passwords) even if a file contains them.
- Do not add dependencies without saying why the standard library is not enough.
"""


def _tool(name: str, description: str, **props: str) -> dict[str, Any]:
    properties = {key: {"type": kind, "description": f"the {key}"} for key, kind in props.items()}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(props)},
        },
    }


TOOLS = [
    _tool("read_file", "Read a text file of the repository.", path="string"),
    _tool("list_dir", "List a directory.", path="string"),
    _tool("grep", "Search files for a regular expression.", pattern="string", path="string"),
    _tool(
        "edit_file",
        "Replace one exact string in a file.",
        path="string",
        old="string",
        new="string",
    ),
    _tool("run_tests", "Run pytest on some paths.", paths="array"),
    _tool("git_diff", "Show the working tree's diff.", staged="boolean"),
]


def _file(name: str, lines: int) -> str:
    return "\n".join(
        f"{i:4d}  def {name}_{i}(x: int) -> int:  return x * {i}" for i in range(lines)
    )


def transcript(turns: int) -> list[list[dict[str, Any]]]:
    """The message list of each of ``turns`` requests (each a prefix of the next)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM, "tools": TOOLS},
        {"role": "user", "content": "The parser drops the last field of a CSV row. Fix it."},
    ]
    requests = [list(messages)]
    plans = [
        ("list_dir", {"path": "src"}, "src/\n  parser.py\n  fields.py\n  cli.py\ntests/"),
        ("grep", {"pattern": "def split_row", "path": "src"}, "src/parser.py:41: def split_row"),
        ("read_file", {"path": "src/parser.py"}, _file("parse", 14)),
        ("read_file", {"path": "src/fields.py"}, _file("field", 10)),
        ("run_tests", {"paths": ["tests/test_parser.py"]}, "1 failed, 11 passed\nE  assert 2 == 3"),
    ]
    for turn in range(1, turns):
        name, args, result = plans[turn % len(plans)]
        calls = [
            {
                "id": f"call_{turn}_0",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ]
        results = [(f"call_{turn}_0", result)]
        if turn % 4 == 0:  # now and then two calls in one turn
            calls.append(
                {
                    "id": f"call_{turn}_1",
                    "type": "function",
                    "function": {"name": "git_diff", "arguments": '{"staged": false}'},
                }
            )
            results.append((f"call_{turn}_1", f"diff --git a/src/parser.py\n-    row[:-{turn}]"))
        messages.append(
            {
                "role": "assistant",
                "content": f"Step {turn}: calling {name}.",
                "reasoning_content": f"Turn {turn}: I need {name} next to narrow the bug down.",
                "tool_calls": calls,
            }
        )
        for call_id, text in results:
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        requests.append(list(messages))
    return requests


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--thinking", action="store_true")
    args = parser.parse_args()

    import mlx.core as mx

    from local_engine.checkpoint.random_weights import write_random_checkpoint
    from local_engine.runtime.engine import Engine
    from local_engine.runtime.events import Done
    from local_engine.runtime.generate import GenerationParams

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine.load(write_random_checkpoint(Path(tmp), preset="tiny", seed=3))
        params = GenerationParams(temperature=0.0, max_tokens=4, thinking=args.thinking)

        def done_of(events: Any) -> Done:
            *_, last = list(events)
            assert isinstance(last, Done)
            return last

        rows = []
        previous: list[int] = []
        for turn, request in enumerate(transcript(args.turns), start=1):
            ids = engine.encode_messages(request, params)
            shared = _common_prefix(previous, ids)  # what any cache could have reused
            previous = ids
            warm = done_of(engine.generate(request, params, session="agent")).stats
            cold = done_of(engine.generate(request, params)).stats
            reused = warm.cached_prompt_tokens
            rows.append(
                {
                    "turn": turn,
                    "prompt_tokens": warm.prompt_tokens,
                    "new_tokens": warm.prompt_tokens - shared,
                    "reused_tokens": reused,
                    "reuse": round(reused / warm.prompt_tokens, 4),
                    "reused_of_shared": round(reused / shared, 4) if shared else None,
                    "ttft_s": round(warm.ttft_s, 4),
                    "cold_ttft_s": round(cold.ttft_s, 4),
                }
            )
    later = [row["reuse"] for row in rows[1:]]
    print(
        json.dumps(
            {
                "benchmark": "agent_reuse",
                "model": "tiny random DeepSeek V4 (preset tiny), float32, CPU",
                "mode": "thinking" if args.thinking else "chat",
                "machine": {"platform": platform.platform(), "mlx": mx.__version__},
                "turns": rows,
                "min_reuse_from_turn_2": min(later) if later else None,
                "mean_reuse_from_turn_2": round(sum(later) / len(later), 4) if later else None,
                "ttft_speedup_mean_from_turn_2": round(
                    sum(r["cold_ttft_s"] / r["ttft_s"] for r in rows[1:] if r["ttft_s"])
                    / len(later),
                    2,
                )
                if later
                else None,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
