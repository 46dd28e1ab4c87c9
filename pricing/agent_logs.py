"""Coding agents' own usage logs, read as requests: Claude Code and Codex sessions.

What the formats hold (learned from public tools that read them; no real data here):

* **Claude Code** writes one JSON object a line to ``~/.claude/projects/<dir>/<session>.jsonl``.
  An answer is ``{"type": "assistant", "timestamp", "requestId", "cwd", "message": {"id",
  "model", "usage": {...}}}`` in Anthropic's usage convention (``input_tokens`` without the
  cache reads and writes, ``cache_creation`` split into 5-minute and 1-hour writes). A
  streamed answer is written as **one line per content block**, each repeating the same
  message id and usage: such lines are one request (kept once, its largest counts).
  ``<synthetic>`` messages were never sent to a model and are skipped.
* **Codex** writes ``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``: ``{"timestamp", "type",
  "payload"}`` lines. ``turn_context`` names the model; ``event_msg`` lines whose payload is
  a ``token_count`` carry ``info.last_token_usage`` (the last call) and
  ``info.total_token_usage`` (the session so far) in OpenAI's convention (input includes
  ``cached_input_tokens``). The same event is often written more than once: a call is a
  change of the running total, so repeats add nothing. Whether ``output_tokens`` includes
  ``reasoning_output_tokens`` is read off ``total_tokens`` (input + output, or + reasoning).

Lines that are not JSON, or not one of these records, are skipped and counted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricing.errors import PricingError
from pricing.usage import TokenUsage

CLAUDE_CODE = "claude-code"
CODEX = "codex"
DEFAULT_DIRS: dict[str, str] = {CLAUDE_CODE: "~/.claude/projects", CODEX: "~/.codex/sessions"}


@dataclass(frozen=True)
class LoggedRequest:
    """One model call an agent made: when, on which model, its tokens."""

    origin: str
    origin_id: str
    time: dt.datetime
    model: str
    usage: TokenUsage
    project: str | None = None


@dataclass(frozen=True)
class AgentLog:
    """What reading an agent's logs found."""

    origin: str
    root: Path
    files: int
    requests: tuple[LoggedRequest, ...]
    duplicates: int  # streamed lines or repeated events folded into a request
    skipped: int  # lines that were not a usage record

    def month(self, month: str) -> tuple[LoggedRequest, ...]:
        return tuple(r for r in self.requests if r.time.strftime("%Y-%m") == month)

    def months(self) -> list[str]:
        return sorted({r.time.strftime("%Y-%m") for r in self.requests})


def read_agent_log(origin: str, root: Path | str | None = None) -> AgentLog:
    """Read ``origin``'s (``claude-code`` or ``codex``) logs under ``root`` (default: the
    agent's own directory)."""
    if origin not in DEFAULT_DIRS:
        raise PricingError(f"unknown agent {origin!r}; use {', '.join(DEFAULT_DIRS)}")
    path = Path(root if root else DEFAULT_DIRS[origin]).expanduser()
    if not path.exists():
        raise PricingError(f"{path}: no such directory; give the {origin} log directory")
    pattern = "**/*.jsonl" if origin == CLAUDE_CODE else "**/rollout-*.jsonl"
    files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    reader = _claude_code_file if origin == CLAUDE_CODE else _codex_file
    requests: list[LoggedRequest] = []
    duplicates = skipped = 0
    seen: set[str] = set()
    for file in files:
        found, dup, skip = reader(file)
        for request in found:
            # A session resumed into a new file repeats earlier lines: count each once.
            if request.origin_id in seen:
                dup += 1
                continue
            seen.add(request.origin_id)
            requests.append(request)
        duplicates += dup
        skipped += skip
    requests.sort(key=lambda r: (r.time, r.origin_id))
    return AgentLog(origin, path, len(files), tuple(requests), duplicates, skipped)


def _records(path: Path) -> Iterator[dict[str, Any] | None]:
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PricingError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield None
                continue
            yield record if isinstance(record, dict) else None


def _claude_code_file(path: Path) -> tuple[list[LoggedRequest], int, int]:
    by_id: dict[str, LoggedRequest] = {}
    duplicates = skipped = 0
    for record in _records(path):
        message = record.get("message") if record else None
        usage = message.get("usage") if isinstance(message, dict) else None
        model = message.get("model") if isinstance(message, dict) else None
        when = _time(record.get("timestamp")) if record else None
        if (
            record is None
            or record.get("type") != "assistant"
            or not isinstance(usage, dict)
            or not isinstance(model, str)
            or model.startswith("<")
            or when is None
        ):
            skipped += 1
            continue
        assert isinstance(message, dict)  # usage was read from it
        key = f"{message.get('id') or ''}:{record.get('requestId') or ''}"
        if key == ":":
            key = str(record.get("uuid") or f"{path.name}:{len(by_id)}")
        try:
            tokens = TokenUsage.from_anthropic(usage)
        except PricingError:
            skipped += 1
            continue
        cwd = record.get("cwd")
        found = LoggedRequest(
            CLAUDE_CODE, key, when, model, tokens, Path(cwd).name if isinstance(cwd, str) else None
        )
        earlier = by_id.get(key)
        if earlier is not None:
            duplicates += 1
            if _size(earlier.usage) >= _size(tokens):
                continue
            found = LoggedRequest(CLAUDE_CODE, key, earlier.time, model, tokens, found.project)
        by_id[key] = found
    return list(by_id.values()), duplicates, skipped


def _codex_file(path: Path) -> tuple[list[LoggedRequest], int, int]:
    out: list[LoggedRequest] = []
    duplicates = skipped = 0
    model: str | None = None
    project: str | None = None
    last_total: tuple[int, ...] | None = None
    for record in _records(path):
        payload = record.get("payload") if record else None
        if record is None or not isinstance(payload, dict):
            skipped += 1
            continue
        kind = record.get("type")
        if kind == "session_meta" and isinstance(payload.get("cwd"), str):
            project = Path(payload["cwd"]).name
        if kind == "turn_context" and isinstance(payload.get("model"), str):
            model = payload["model"]
        info = payload.get("info")
        if kind != "event_msg" or payload.get("type") != "token_count" or not info:
            continue
        total = info.get("total_token_usage") if isinstance(info, dict) else None
        last = info.get("last_token_usage") if isinstance(info, dict) else None
        when = _time(record.get("timestamp"))
        if not isinstance(total, dict) or when is None:
            skipped += 1
            continue
        running = tuple(_int(total.get(k)) for k in _CODEX_KEYS)
        if running == last_total:
            duplicates += 1
            continue
        if not isinstance(last, dict):  # older logs: the difference of the totals
            before = last_total or (0,) * len(_CODEX_KEYS)
            last = {k: a - b for k, a, b in zip(_CODEX_KEYS, running, before, strict=True)}
        last_total = running
        if model is None:
            skipped += 1  # a session without its model cannot be priced
            continue
        out.append(
            LoggedRequest(
                CODEX, f"{path.stem}:{running[-1]}", when, model, _codex_usage(last), project
            )
        )
    return out, duplicates, skipped


_CODEX_KEYS = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
)


def _codex_usage(last: Mapping[str, Any]) -> TokenUsage:
    inp, cached, out, reasoning, total = (_int(last.get(k)) for k in _CODEX_KEYS)
    if reasoning and total == inp + out + reasoning:
        out += reasoning  # counted apart from the output: add it in (our convention)
    return TokenUsage(
        input_tokens=max(inp, cached),
        cached_input_tokens=cached,
        output_tokens=max(out, reasoning),
        reasoning_tokens=reasoning,
    )


def _size(usage: TokenUsage) -> int:
    return usage.input_tokens + usage.output_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class LoggedMonth:
    """One UTC month of an agent's requests, as the estimator re-prices it."""

    log: AgentLog
    month: str
    requests: tuple[LoggedRequest, ...]

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for request in self.requests:
            total = total + request.usage
        return total

    @property
    def timed(self) -> list[tuple[dt.datetime, TokenUsage]]:
        return [(r.time, r.usage) for r in self.requests]

    def models(self) -> list[str]:
        counts: dict[str, int] = {}
        for request in self.requests:
            counts[request.model] = counts.get(request.model, 0) + 1
        return sorted(counts, key=lambda m: (-counts[m], m))

    def describe(self) -> str:
        log = self.log
        used = ", ".join(self.models()[:3]) or "no model"
        return (
            f"{log.origin} logs {log.root} ({log.files} files), {self.month}: "
            f"{len(self.requests):,} requests on {used}; "
            f"{log.duplicates:,} streamed or repeated entries folded, {log.skipped:,} other lines"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.log.origin,
            "root": str(self.log.root),
            "files": self.log.files,
            "month": self.month,
            "requests": len(self.requests),
            "models": self.models(),
            "duplicates_folded": self.log.duplicates,
            "other_lines": self.log.skipped,
        }


def logged_month(log: AgentLog, month: str | None) -> LoggedMonth:
    """``month`` (``YYYY-MM``) of ``log``; None: the latest month it has."""
    months = log.months()
    if not months:
        raise PricingError(
            f"{log.root}: no {log.origin} usage found ({log.files} files, "
            f"{log.skipped} lines without usage)"
        )
    chosen = month or months[-1]
    requests = log.month(chosen)
    if not requests:
        raise PricingError(
            f"{log.root}: no {log.origin} usage in {chosen}; the logs have {', '.join(months)}"
        )
    return LoggedMonth(log, chosen, requests)
