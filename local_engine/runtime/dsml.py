"""DSML, DeepSeek V4's tool-calling markup: the values (tool calls) and how they are written.

The official encoder (``encoding_dsv4.py`` of the DeepSeek-V4-Flash release, see
``local_engine.runtime.chat``) writes three things with it, reproduced here byte for byte:

- the "## Tools" section appended to a system or developer message: fixed instructions, then
  each tool's OpenAI ``function`` object as one JSON line (``json.dumps`` defaults,
  non-ASCII kept);
- the "## Response Format" section for ``response_format`` (its JSON on one line);
- an assistant turn's calls: ``\\n\\n<｜DSML｜tool_calls>`` then one ``invoke`` per call with one
  ``parameter`` per top-level argument -- strings raw with ``string="true"``, any other JSON
  value as JSON with ``string="false"`` -- one tag a line.

Arguments that are not a JSON object are written as the official encoder does when
``json.loads`` fails: the raw text as one string parameter named ``arguments``. A JSON value
that parses but is not an object (a list, a number) cannot be written as parameters at all,
so it is refused. Parsing the model's DSML back is ``local_engine.runtime.dsml_parser``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local_engine.errors import EngineError
from local_engine.runtime.tokenizer import THINK_END, THINK_START

DSML = "｜DSML｜"  # one added token (id 128825 in the V4 vocabulary)
BLOCK = "tool_calls"
BLOCK_OPEN = f"<{DSML}{BLOCK}>"
BLOCK_CLOSE = f"</{DSML}{BLOCK}>"
INVOKE_OPEN = f"<{DSML}invoke name="
INVOKE_CLOSE = f"</{DSML}invoke>"
PARAM_OPEN = f"<{DSML}parameter name="
PARAM_CLOSE = f"</{DSML}parameter>"
CALLS_SEPARATOR = "\n\n"  # between an assistant turn's text and its tool-call block

_TOOLS_SECTION = """## Tools

You have access to a set of tools to help answer the user's question. \
You can invoke tools by writing a "<{D}tool_calls>" block like the following:

<{D}tool_calls>
<{D}invoke name="$TOOL_NAME">
<{D}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{D}parameter>
...
</{D}invoke>
<{D}invoke name="$TOOL_NAME2">
...
</{D}invoke>
</{D}tool_calls>

String parameters should be specified as is and set `string="true"`. \
For all other types (numbers, booleans, arrays, objects), pass the value in JSON format \
and set `string="false"`.

If thinking_mode is enabled (triggered by {S}), you MUST output your complete reasoning \
inside {S}...{E} BEFORE any tool calls or final response.

Otherwise, output directly after {E} with tool calls or final response.

### Available Tool Schemas

{schemas}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""
_RESPONSE_FORMAT_SECTION = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
)


class ToolCallFormatError(EngineError):
    """A tool definition or an assistant tool call cannot be written as DSML."""


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool: its name and its arguments as JSON text (OpenAI's shape)."""

    name: str
    arguments: str
    id: str = ""

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict (Anthropic's ``input``); ``{}`` for empty text."""
        if not self.arguments.strip():
            return {}
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ToolCallFormatError(f"tool call {self.name!r}: arguments are not a JSON object")
        return value


def to_json(value: Any) -> str:
    """JSON as the official encoder writes it: ``json.dumps`` defaults, non-ASCII kept."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ToolCallFormatError(f"value is not JSON-serialisable: {exc}") from exc


def _field(item: Any, key: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(key)
    return getattr(item, key, None)


def tool_function(tool: Any, where: str) -> Mapping[str, Any]:
    """The OpenAI ``function`` object of a tool definition (``{"type": "function",
    "function": {...}}``); a bare function object (with ``name``) is accepted as is."""
    function = _field(tool, "function")
    if function is None and _field(tool, "name") is not None:
        function = tool
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ToolCallFormatError(
            f"{where}: a tool needs a 'function' object with a string 'name' "
            '(OpenAI shape: {"type": "function", "function": {"name": ..., "parameters": ...}})'
        )
    return function


def tools_section(tools: Sequence[Any], where: str) -> str:
    """The "## Tools" section for these tool definitions."""
    schemas = "\n".join(to_json(dict(tool_function(tool, where))) for tool in tools)
    return _TOOLS_SECTION.format(D=DSML, S=THINK_START, E=THINK_END, schemas=schemas)


def response_format_section(response_format: Any) -> str:
    return _RESPONSE_FORMAT_SECTION + to_json(response_format)


def tool_call_of(call: Any, where: str) -> ToolCall:
    """A ``ToolCall`` from an OpenAI tool call (``{"id", "function": {"name", "arguments"}}``)
    or anything with ``name`` and ``arguments``; dict arguments are taken as parsed JSON."""
    if isinstance(call, ToolCall):
        return call
    function = _field(call, "function") or call
    name = _field(function, "name")
    arguments = _field(function, "arguments")
    if not isinstance(name, str) or not name:
        raise ToolCallFormatError(f"{where}: a tool call needs a function name")
    if isinstance(arguments, Mapping):
        arguments = to_json(dict(arguments))
    elif arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        raise ToolCallFormatError(f"{where}: tool call {name!r}: arguments must be JSON text")
    return ToolCall(name, arguments, str(_field(call, "id") or ""))


def _parameters(call: ToolCall, where: str) -> str:
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = {"arguments": call.arguments}  # what the official encoder does
    if not isinstance(arguments, dict):
        raise ToolCallFormatError(
            f"{where}: tool call {call.name!r}: arguments must be a JSON object, "
            f"got {type(arguments).__name__}"
        )
    lines = []
    for key, value in arguments.items():
        is_string = isinstance(value, str)
        text = value if is_string else to_json(value)
        flag = "true" if is_string else "false"
        lines.append(f'{PARAM_OPEN}"{key}" string="{flag}">{text}{PARAM_CLOSE}')
    return "\n".join(lines)


def render_tool_calls(calls: Sequence[ToolCall], where: str = "tool calls") -> str:
    """An assistant turn's tool-call block, with the blank line that separates it from the
    turn's text (empty for no calls)."""
    if not calls:
        return ""
    invokes = "\n".join(
        f'{INVOKE_OPEN}"{call.name}">\n{_parameters(call, where)}\n{INVOKE_CLOSE}' for call in calls
    )
    return f"{CALLS_SEPARATOR}{BLOCK_OPEN}\n{invokes}\n{BLOCK_CLOSE}"
