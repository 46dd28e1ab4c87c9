"""Agent logs written in the formats Claude Code and Codex use (made-up sessions, no real
user data), for the importer's and the estimator's tests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

MONTH = "2026-11"


def _ts(day: int, hour: int, minute: int = 0) -> str:
    return (
        dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC)
        .isoformat()
        .replace("+00:00", ".000Z")
    )


def claude_line(
    day: int,
    hour: int,
    message_id: str,
    request_id: str,
    *,
    model: str = "claude-sonnet-4-5-20250929",
    input_tokens: int = 1_000,
    read: int = 0,
    write_5m: int = 0,
    write_1h: int = 0,
    output: int = 200,
    block: str = "text",
) -> dict[str, Any]:
    return {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/dev/webshop",
        "sessionId": "6f1c0f1e-0000-4000-8000-000000000001",
        "version": "2.0.31",
        "type": "assistant",
        "uuid": f"{message_id}-{block}",
        "timestamp": _ts(day, hour),
        "requestId": request_id,
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": block, "text": "(made-up)"}],
            "stop_reason": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": write_5m + write_1h,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": write_5m,
                    "ephemeral_1h_input_tokens": write_1h,
                },
                "output_tokens": output,
                "service_tier": "standard",
            },
        },
    }


def write_claude_code(root: Path) -> Path:
    """Three requests in November (one streamed as three lines, one with a 300k prompt),
    a synthetic message, a user line, one garbled line, and one October request."""
    project = root / "-home-dev-webshop"
    project.mkdir(parents=True)
    lines = [
        {"type": "user", "timestamp": _ts(2, 9), "message": {"role": "user", "content": "hi"}},
        # One answer streamed as thinking, text and tool_use blocks: one request.
        claude_line(2, 9, "msg_01", "req_01", read=20_000, write_5m=2_000, block="thinking"),
        claude_line(2, 9, "msg_01", "req_01", read=20_000, write_5m=2_000, block="text"),
        claude_line(2, 9, "msg_01", "req_01", read=20_000, write_5m=2_000, block="tool_use"),
        claude_line(3, 20, "msg_02", "req_02", input_tokens=300_000, output=4_000),
        claude_line(4, 12, "msg_03", "req_03", write_1h=10_000, output=1_000),
        claude_line(4, 12, "msg_04", "req_04", model="<synthetic>", input_tokens=0, output=0),
    ]
    october = claude_line(2, 9, "msg_00", "req_00")
    october["timestamp"] = "2026-10-30T10:00:00.000Z"
    session = project / "6f1c0f1e-0000-4000-8000-000000000001.jsonl"
    text = "\n".join(json.dumps(line) for line in [october, *lines])
    session.write_text(text + "\n{not json\n")
    return root


def _codex_event(when: str, total: dict[str, int], last: dict[str, int] | None) -> dict[str, Any]:
    info = {"total_token_usage": total, "model_context_window": 272_000}
    if last is not None:
        info["last_token_usage"] = last
    return {
        "timestamp": when,
        "type": "event_msg",
        "payload": {"type": "token_count", "info": info},
    }


def _usage(inp: int, cached: int, out: int, reasoning: int) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "output_tokens": out,
        "reasoning_output_tokens": reasoning,
        "total_tokens": inp + out,
    }


def write_codex(root: Path) -> Path:
    """One session of two model calls, the second call's event written twice."""
    day = root / "2026" / "11" / "05"
    day.mkdir(parents=True)
    first, second = _usage(8_000, 2_000, 600, 400), _usage(12_000, 8_000, 900, 500)
    total_2 = {k: first[k] + second[k] for k in first}
    lines = [
        {
            "timestamp": _ts(5, 14),
            "type": "session_meta",
            "payload": {"id": "0199", "cwd": "/home/dev/webshop", "cli_version": "0.58.0"},
        },
        {"timestamp": _ts(5, 14), "type": "turn_context", "payload": {"model": "gpt-5-codex"}},
        {
            "timestamp": _ts(5, 14),
            "type": "event_msg",
            "payload": {"type": "token_count", "info": None},
        },
        _codex_event(_ts(5, 14, 1), first, first),
        _codex_event(_ts(5, 14, 2), total_2, second),
        _codex_event(_ts(5, 14, 2), total_2, second),
    ]
    path = day / "rollout-2026-11-05T14-00-00-0199.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root
