"""Tool calls out of a generated answer, as it streams: DSML text in, text and call events out.

``ToolCallParser.feed`` takes the answer text piece by piece (any split: a tag may arrive in
several pieces) and returns what is decided so far: answer text (``str``), and for each call
``ToolCallStart`` (name, id), ``ToolCallDelta`` pieces of its arguments as JSON text, and
``ToolCallEnd`` with the finished ``ToolCall``. The deltas of one call concatenate to exactly
its final ``arguments`` text, so a server forwards them as they come: OpenAI
``choices[].delta.tool_calls[{index, function.arguments}]`` chunks, Anthropic
``input_json_delta.partial_json`` events of a ``tool_use`` block. String parameters stream
character by character (JSON-escaped as they go); other values are held until their closing tag
and checked to be JSON, because a half-written number is not yet a value.

The arguments text is what the official ``decode_dsml_to_arguments`` builds --
``{"key": value, ...}`` with ``json.dumps`` separators -- so rendering calls with
``local_engine.runtime.dsml`` and parsing them back gives the same text. Whitespace between
tags is tolerated (a model may not write the newlines exactly); anything else unexpected
ends the block with one ``ToolCallError`` that says what was expected and carries the raw
text, and the rest of the stream is passed on as answer text: malformed or truncated output
never raises. Hand-written (a small state machine over a buffer) because no library parses
DSML, and a regex over the whole text cannot stream.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from dataclasses import dataclass, field

from local_engine.runtime.dsml import (
    BLOCK_CLOSE,
    BLOCK_OPEN,
    CALLS_SEPARATOR,
    INVOKE_CLOSE,
    INVOKE_OPEN,
    PARAM_CLOSE,
    PARAM_OPEN,
    ToolCall,
)

_MAX_HEAD = 512  # a tool or parameter name longer than this is not a name but runaway text
_PARAM_HEAD = re.compile(r'"([^"<>\n]*)" string="(true|false)">')
_INVOKE_HEAD = re.compile(r'"([^"<>\n]+)">')


@dataclass(frozen=True)
class ToolCallStart:
    """A call began: its position among this answer's calls, the tool's name, a fresh id."""

    index: int
    name: str
    id: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of call ``index``'s arguments (JSON text); pieces concatenate to the whole."""

    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallEnd:
    """Call ``index`` is complete."""

    index: int
    call: ToolCall


@dataclass(frozen=True)
class ToolCallError:
    """The DSML could not be read: what went wrong, the call that was open (if any), and the
    raw text of the block from its opening tag to where reading stopped."""

    message: str
    index: int | None
    text: str


ToolEvent = ToolCallStart | ToolCallDelta | ToolCallEnd | ToolCallError
Parsed = str | ToolEvent


class _State(enum.Enum):
    TEXT = "text"  # answer text, watching for the block's opening tag
    BETWEEN = "between"  # inside the block, expecting an invoke or the block's end
    INVOKE = "invoke"  # after <invoke name=, expecting "NAME">
    PARAMS = "params"  # inside an invoke, expecting a parameter or the invoke's end
    PARAM_HEAD = "param_head"  # after <parameter name=, expecting "K" string="true|false">
    VALUE = "value"  # a parameter's value, up to </parameter>
    RAW = "raw"  # after an error: everything is answer text


@dataclass
class _Call:
    index: int
    name: str
    id: str
    arguments: list[str] = field(default_factory=list)
    params: set[str] = field(default_factory=set)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def _escaped(text: str) -> str:
    """``text`` as the inside of a JSON string (escaping is per character, so pieces escape
    to pieces of the whole)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


class ToolCallParser:
    """Incremental DSML reader for one generated answer (see the module docstring)."""

    def __init__(self, id_prefix: str | None = None) -> None:
        self._prefix = id_prefix if id_prefix is not None else uuid.uuid4().hex[:12]
        self._buf = ""
        self._raw: list[str] = []  # the current block's text so far, for error reports
        self._state = _State.TEXT
        self._calls = 0
        self._call: _Call | None = None
        self._param_is_string = False
        self._out: list[Parsed] = []

    @property
    def calls(self) -> int:
        """Number of calls started so far."""
        return self._calls

    def feed(self, text: str) -> list[Parsed]:
        self._buf += text
        while self._step(final=False):
            pass
        return self._drain()

    def close(self) -> list[Parsed]:
        """The end of the answer: flushes held text; an unfinished block is an error."""
        while self._step(final=True):
            pass
        if self._state not in (_State.TEXT, _State.RAW):
            self._consume(len(self._buf))
            self._fail(
                f"the tool-call block was cut off before {BLOCK_CLOSE} "
                "(generation ended early: raise max_tokens or check the stop strings)"
            )
        if self._buf:
            self._out.append(self._buf)
            self._buf = ""
        return self._drain()

    # -- the state machine ---------------------------------------------------------------

    def _drain(self) -> list[Parsed]:
        out, self._out = self._out, []
        return out

    def _consume(self, size: int) -> str:
        taken, self._buf = self._buf[:size], self._buf[size:]
        self._raw.append(taken)
        return taken

    def _fail(self, message: str) -> None:
        """Ends the block with an error. Text not yet read is passed on as answer text by
        the RAW state (at the stream's end ``close`` has already moved it into the block)."""
        index = self._call.index if self._call is not None else None
        self._out.append(ToolCallError(message, index, "".join(self._raw)))
        self._raw, self._call = [], None
        self._state = _State.RAW

    def _step(self, final: bool) -> bool:
        """One move of the machine; False when it must wait for more text."""
        match self._state:
            case _State.TEXT:
                return self._text(final)
            case _State.RAW:
                if self._buf:
                    self._out.append(self._buf)
                    self._buf = ""
                return False
            case _State.BETWEEN:
                return self._expect_tag({INVOKE_OPEN: self._open_invoke, BLOCK_CLOSE: self._end})
            case _State.PARAMS:
                return self._expect_tag({PARAM_OPEN: self._open_param, INVOKE_CLOSE: self._close})
            case _State.INVOKE:
                return self._head(_INVOKE_HEAD, self._start_call, "a quoted tool name")
            case _State.PARAM_HEAD:
                return self._head(_PARAM_HEAD, self._start_param, '"NAME" string="true|false">')
            case _State.VALUE:
                return self._value()

    def _text(self, final: bool) -> bool:
        at = self._buf.find(BLOCK_OPEN)
        if at >= 0:
            before = self._buf[:at]
            if before.endswith(CALLS_SEPARATOR):
                before = before[: -len(CALLS_SEPARATOR)]
            if before:
                self._out.append(before)
            self._buf = self._buf[at:]
            self._raw = []
            self._consume(len(BLOCK_OPEN))
            self._state = _State.BETWEEN
            return True
        hold = 0
        if not final:
            hold = _partial_suffix(self._buf, BLOCK_OPEN)
            # The blank line before a block is not answer text: hold trailing newlines too.
            rest = self._buf[: len(self._buf) - hold]
            hold += min(len(CALLS_SEPARATOR), len(rest) - len(rest.rstrip("\n")))
        emit = self._buf[: len(self._buf) - hold]
        if emit:
            self._out.append(emit)
        self._buf = self._buf[len(self._buf) - hold :]
        return False

    def _expect_tag(self, tags: dict[str, object]) -> bool:
        skip = len(self._buf) - len(self._buf.lstrip())
        if skip:
            self._consume(skip)
        if not self._buf:
            return False
        for tag, action in tags.items():
            if self._buf.startswith(tag):
                self._consume(len(tag))
                action()  # type: ignore[operator]
                return True
        if any(tag.startswith(self._buf) for tag in tags):
            return False  # a tag still arriving
        self._fail(f"expected {' or '.join(tags)} in the tool-call block, got {self._buf[:40]!r}")
        return True

    def _head(self, pattern: re.Pattern[str], action: object, what: str) -> bool:
        found = pattern.match(self._buf)
        if found is not None:
            self._consume(found.end())
            action(*found.groups())  # type: ignore[operator]
            return True
        if ">" in self._buf or len(self._buf) > _MAX_HEAD or not '"'.startswith(self._buf[:1]):
            self._fail(f"expected {what} in the tool-call block, got {self._buf[:40]!r}")
            return True
        return False

    def _value(self) -> bool:
        call = self._call
        assert call is not None
        at = self._buf.find(PARAM_CLOSE)
        if at < 0:
            if self._param_is_string:
                safe = len(self._buf) - _partial_suffix(self._buf, PARAM_CLOSE)
                if safe:
                    self._delta(_escaped(self._consume(safe)))
            return False
        value = self._consume(at)
        self._consume(len(PARAM_CLOSE))
        if self._param_is_string:
            self._delta(_escaped(value) + '"')
        else:
            try:
                json.loads(value)
            except ValueError:
                self._fail(f"parameter value {value[:40]!r} of {call.name!r} is not JSON")
                return True
            self._delta(value)
        self._state = _State.PARAMS
        return True

    # -- actions -------------------------------------------------------------------------

    def _delta(self, text: str) -> None:
        call = self._call
        assert call is not None
        call.arguments.append(text)
        self._out.append(ToolCallDelta(call.index, text))

    def _open_invoke(self) -> None:
        self._state = _State.INVOKE

    def _end(self) -> None:
        self._raw = []
        self._state = _State.TEXT

    def _start_call(self, name: str) -> None:
        self._call = _Call(self._calls, name, f"call_{self._prefix}_{self._calls}")
        self._calls += 1
        self._out.append(ToolCallStart(self._call.index, name, self._call.id))
        self._state = _State.PARAMS

    def _open_param(self) -> None:
        self._state = _State.PARAM_HEAD

    def _start_param(self, name: str, string: str) -> None:
        call = self._call
        assert call is not None
        if name in call.params:
            self._fail(f"tool call {call.name!r} repeats parameter {name!r}")
            return
        call.params.add(name)
        lead = "{" if len(call.params) == 1 else ", "
        self._param_is_string = string == "true"
        quote = '"' if self._param_is_string else ""
        self._delta(f"{lead}{json.dumps(name, ensure_ascii=False)}: {quote}")
        self._state = _State.VALUE

    def _close(self) -> None:
        call = self._call
        assert call is not None
        self._delta("}" if call.params else "{}")
        finished = ToolCall(call.name, "".join(call.arguments), call.id)
        self._out.append(ToolCallEnd(call.index, finished))
        self._call = None
        self._state = _State.BETWEEN


@dataclass(frozen=True)
class ParsedAnswer:
    """A whole answer read at once: its text, its calls, and the error if the DSML was bad."""

    text: str
    calls: tuple[ToolCall, ...]
    error: ToolCallError | None = None


def collect(items: list[Parsed]) -> ParsedAnswer:
    """Folds parser output into a ``ParsedAnswer``."""
    text: list[str] = []
    calls: list[ToolCall] = []
    error = None
    for item in items:
        match item:
            case str():
                text.append(item)
            case ToolCallEnd(call=call):
                calls.append(call)
            case ToolCallError():
                error = error or item
            case _:
                pass
    return ParsedAnswer("".join(text), tuple(calls), error)


def parse_answer(text: str, id_prefix: str | None = None) -> ParsedAnswer:
    """The text and tool calls of a complete answer."""
    parser = ToolCallParser(id_prefix)
    return collect([*parser.feed(text), *parser.close()])
