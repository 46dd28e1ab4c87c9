"""Fitting a conversation into a model's context window.

A chat sends its whole history with every turn; a long one outgrows the model's
window, and the provider refuses it (or the local engine prefills an unbounded
prompt). :func:`fit_messages` is the pure rule a session applies before each
attempt: keep the system prompt and the newest user message, then as many of the
most recent earlier turns as fit ``window - reserve - margin``; drop the oldest
whole turns (a user message with its replies) first. When the newest message
alone does not fit, it raises :class:`ContextTooLong`: a user's text is never cut.

Counts come from :func:`conservative_tokens`, which leans high on purpose (see
its docstring for how far, measured against real tokenizers): dropping one turn
too many costs a little context, one too few costs the whole request. A target that
can be counted exactly (the local engine: its own tokenizer and chat template, see
:mod:`ds4router.sessions.local_tokens`) passes an :class:`ExactCounter` instead; the kept
prompt is then measured whole, so it fits with no margin beyond the answer's reserve.

The lookups at the bottom say what a target's window is: a cloud model's from its
``cloud.models`` entry (``context_window``, ``max_output_tokens``) first, then from
LiteLLM's bundled model map through the price catalog
(:meth:`pricing.catalog.PriceCatalog.context_limits`); the local engine's from its
checkpoint's ``config.json``. None means unknown, and the caller sends the
conversation as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ds4router.errors import Ds4RouterError

if TYPE_CHECKING:
    from ds4router.config.schema import CloudModel
    from pricing.catalog import PriceCatalog

TokenCounter = Callable[[str], int]
ChatMessage = Mapping[str, Any]

# Role markers and separators a chat template adds around each message (OpenAI's is 3-4
# tokens, DeepSeek's 2-3): counted per message, rounded up.
MESSAGE_OVERHEAD_TOKENS = 8
# Kept for the answer when a model states no output limit (as local.engine.max_tokens).
DEFAULT_ANSWER_RESERVE = 4096
# Never reserve more than this share of a window for the answer: many map entries give
# the whole window as the output limit, which would leave no room for any prompt.
MAX_RESERVE_SHARE = 0.5
# Tokens left unused when the count is exact: none. The prompt is measured as the engine
# encodes it, and the engine only needs prompt + answer <= window (it refuses a prompt
# that reaches the window and stops the answer at it), which the reserve already keeps.
EXACT_MARGIN = 0


class ExactCounter(Protocol):
    """Counts tokens as the target itself will (its tokenizer and chat template)."""

    def message_tokens(self, message: ChatMessage) -> int:
        """What ``message`` adds to a prompt, its template tokens included."""
        ...

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The whole prompt ``messages`` make, exactly."""
        ...


# --- counting -------------------------------------------------------------------------------

_PIECE = re.compile(
    # Random-looking runs (keys, hashes, base64) tokenize at 1.4-1.7 characters a token.
    r"(?P<blob>(?=[A-Za-z0-9+/=_\-]*[0-9])(?=[A-Za-z0-9+/=_\-]*[A-Za-z])[A-Za-z0-9+/=_\-]{20,})"
    r"|(?P<word>[A-Za-z]+)|(?P<num>[0-9]+)|(?P<space>[ \t]+)|(?P<newline>[\r\n]+)"
    r"|(?P<wide>[^\x00-\x7f])|(?P<other>.)",
    re.DOTALL,
)
_CASE_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def conservative_tokens(text: str) -> int:
    """A token count that errs high, for any of today's BPE tokenizers.

    Pieces are counted the way BPE vocabularies split text: a word part (split at
    case changes) is one token per 6 letters, digits go in threes, a random-looking
    run of letters and digits costs a token per 1.3 characters, each punctuation
    mark and line break one, a non-ASCII character 1 to 3 by its UTF-8 length.

    Measured against cl100k, o200k, DeepSeek's and Claude's (older) tokenizers, the
    count is 1.07x to 1.31x the highest real count on code, prose, YAML, JSON,
    base64, hex, Chinese and emoji (the 3.6-characters-a-token rule of
    :func:`ds4router.routing.request.estimate_tokens` reads 0.27x to 1.07x on the same).
    """
    tenths = 0  # in tenths of a token, so CJK and emoji can weigh 1.2 and 3
    for match in _PIECE.finditer(text):
        kind, piece = match.lastgroup, match.group()
        if kind == "word":
            tenths += 10 * sum(1 + (len(part) - 1) // 6 for part in _CASE_PART.findall(piece))
        elif kind == "blob":
            tenths += -(-len(piece) * 100 // 13)
        elif kind == "num":
            tenths += 10 * -(-len(piece) // 3)
        elif kind == "space":
            tenths += 0 if piece == " " else 10  # one space joins the next word's token
        elif kind == "wide":
            tenths += {2: 15, 3: 12}.get(len(piece.encode("utf-8")), 30)
        else:
            tenths += 10
    return -(-tenths // 10)


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:  # an image or another part: counted by its serialized size, erring high
                texts.append(json.dumps(part, default=str))
        return "\n".join(texts)
    return str(content)


def message_tokens(message: ChatMessage, count: TokenCounter = conservative_tokens) -> int:
    return count(content_text(message.get("content"))) + MESSAGE_OVERHEAD_TOKENS


# --- fitting --------------------------------------------------------------------------------


def safety_margin(window: int) -> int:
    """Tokens left unused on top of the reserve: 1 % of the window, at least 256."""
    return max(256, window // 100)


def prompt_budget(window: int, reserve: int, margin: int | None = None) -> int:
    """Tokens a prompt may take in ``window`` when ``reserve`` are kept for the answer."""
    return window - reserve - (safety_margin(window) if margin is None else margin)


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit_messages` kept: ``messages`` (system prompt, the most recent earlier
    turns, the newest user message), how many earlier turns it dropped, the kept total
    (by the counter it was given) and the budget it fit into."""

    messages: tuple[ChatMessage, ...]
    dropped_turns: int
    kept_turns: int
    tokens: int
    budget: int


class ContextTooLong(Ds4RouterError):
    """The system prompt and the newest user message alone exceed the prompt budget."""

    def __init__(self, tokens: int, window: int, reserve: int, budget: int) -> None:
        self.tokens, self.window, self.reserve, self.budget = tokens, window, reserve, budget
        super().__init__(self.describe("the model"))

    def describe(self, model: str) -> str:
        return (
            f"nothing was sent: your message is about {self.tokens:,} tokens, but {model}'s "
            f"context window is {self.window:,} tokens with {self.reserve:,} kept for the "
            f"answer, which leaves about {max(self.budget, 0):,} for the prompt; shorten the "
            "message or attach less, or use a model with a larger context window"
        )


def split_turns(
    messages: Sequence[ChatMessage],
) -> tuple[list[ChatMessage], list[list[ChatMessage]]]:
    """(leading system messages, turns): a turn starts at a user message and holds the
    replies after it; messages before the first user message form a turn of their own.
    The last turn is the one that holds the newest user message."""
    index = 0
    while index < len(messages) and messages[index].get("role") == "system":
        index += 1
    system = list(messages[:index])
    turns: list[list[ChatMessage]] = []
    for message in messages[index:]:
        if message.get("role") == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return system, turns


def fit_messages(
    messages: Sequence[ChatMessage],
    window: int,
    reserve: int,
    count: TokenCounter = conservative_tokens,
    *,
    margin: int | None = None,
    exact: ExactCounter | None = None,
) -> Fitted:
    """Keep what fits ``window`` minus ``reserve`` (the answer) minus ``margin``.

    Always kept: the leading system messages and the last turn (the newest user
    message and anything after it). Then earlier turns, newest first, while the next
    one fits; the first that does not ends it, so what is kept is always the most
    recent run of turns, in order. Raises :class:`ContextTooLong` when the always-kept
    part alone exceeds the budget, and ``ValueError`` without a user message.

    With ``exact`` (``count`` is then unused, and ``margin`` defaults to
    :data:`EXACT_MARGIN`), turns are chosen by its per-message counts and the kept
    prompt is then measured whole; while it is over the budget (messages merged by the
    template can count differently together), the oldest kept turn goes too.
    ``Fitted.tokens`` is that whole count.
    """
    system, turns = split_turns(messages)
    if not turns or not any(m.get("role") == "user" for m in turns[-1]):
        raise ValueError("fit_messages needs a user message to answer")
    if exact is not None and margin is None:
        margin = EXACT_MARGIN
    budget = prompt_budget(window, reserve, margin)
    newest = turns[-1]

    def cost_of(message: ChatMessage) -> int:
        if exact is not None:
            return exact.message_tokens(message)
        return message_tokens(message, count)

    if exact is not None:
        used = exact.prompt_tokens([*system, *newest])
    else:
        used = sum(cost_of(m) for m in (*system, *newest))
    if used > budget:
        raise ContextTooLong(used, window, reserve, budget)
    kept: list[list[ChatMessage]] = []
    for turn in reversed(turns[:-1]):
        cost = sum(cost_of(m) for m in turn)
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    if exact is not None:
        used = exact.prompt_tokens([*system, *(m for t in kept for m in t), *newest])
        while used > budget and kept:
            kept.pop(0)
            used = exact.prompt_tokens([*system, *(m for t in kept for m in t), *newest])
    earlier = len(turns) - 1
    return Fitted(
        messages=(*system, *(m for turn in kept for m in turn), *newest),
        dropped_turns=earlier - len(kept),
        kept_turns=len(kept),
        tokens=used,
        budget=budget,
    )


# --- what a target's window is ------------------------------------------------------------


@dataclass(frozen=True)
class ContextLimits:
    """A target's context window, the tokens kept for its answer, and where they came from.

    ``counter`` counts exactly as the target does (None: :func:`conservative_tokens`);
    ``estimated`` says why a target that is normally counted exactly is not (e.g. its
    tokenizer cannot be read), for the user's notice.
    """

    model: str
    window: int
    reserve: int
    source: str
    counter: ExactCounter | None = None
    estimated: str | None = None
    # Tokens kept unused on top of the reserve; None: none for an exact counter, else
    # the safety margin. A cloud model counted by its tokenizer keeps the margin: the
    # provider's own template and tool schemas add tokens no local count sees.
    margin_tokens: int | None = None

    @property
    def margin(self) -> int:
        if self.margin_tokens is not None:
            return self.margin_tokens
        return EXACT_MARGIN if self.counter is not None else safety_margin(self.window)

    @property
    def budget(self) -> int:
        return prompt_budget(self.window, self.reserve, self.margin)


def answer_reserve(window: int, max_output: int | None) -> int:
    """Tokens kept for the answer: the model's output limit (or the default), capped."""
    wanted = max_output if max_output and max_output > 0 else DEFAULT_ANSWER_RESERVE
    return min(wanted, int(window * MAX_RESERVE_SHARE))


MAP_SOURCE = "LiteLLM model map"
CONFIG_SOURCE = "config cloud.models"


def cloud_limits(
    model: str,
    catalog: PriceCatalog | None = None,
    configured: Sequence[CloudModel] = (),
) -> ContextLimits | None:
    """A cloud model's window: its ``cloud.models`` entry's ``context_window`` and
    ``max_output_tokens`` first (the entry whose ``name`` is ``model``, as the backend
    matches it), each missing one from LiteLLM's map, looked up through ``catalog``'s
    names (aliases, provider spellings; without a catalog, the name as written).
    None when neither says what the window is."""
    name = model.strip()
    if name.lower().startswith("cloud:"):
        name = name[len("cloud:") :]
    entry = next((m for m in configured if m.name == name), None)
    window = entry.context_window if entry is not None else None
    output = entry.max_output_tokens if entry is not None else None
    source = CONFIG_SOURCE
    if window is None or output is None:
        mapped = _map_limits(name, catalog)
        if mapped is not None:
            if window is None:
                window, source = mapped[0], MAP_SOURCE
            if output is None:
                output = mapped[1]
    if window is None:
        return None
    from ds4router.backends.cloud_tokens import cloud_counter

    # LiteLLM's tokenizer of the model where it has one: counted exactly, fitted closer.
    counter = cloud_counter(name)
    return ContextLimits(
        model,
        window,
        answer_reserve(window, output),
        source,
        counter=counter,
        margin_tokens=safety_margin(window),
    )


def _map_limits(name: str, catalog: PriceCatalog | None) -> tuple[int, int | None] | None:
    if catalog is None:
        from pricing.catalog import PriceCatalog

        catalog = PriceCatalog({})  # no prices: only the map's own names resolve
    return catalog.context_limits(name)


def local_limits(
    model: str, model_path: str | Path | None, max_tokens: int, *, exact: bool = True
) -> ContextLimits | None:
    """The local engine's window: ``max_position_embeddings`` of the checkpoint's
    ``config.json`` (what the engine enforces), with ``local.engine.max_tokens`` kept for
    the answer. None when no model is configured or its config cannot be read.

    With ``exact`` the limits carry the engine's own token counter (its tokenizer is
    loaded once per process, never the weights); when that cannot be read, the count is
    conservative and ``estimated`` says why."""
    if not model_path:
        return None
    from ds4router.backends.engine_port import load_config

    directory = Path(model_path).expanduser()
    try:
        window = int(load_config(directory).max_position_embeddings)
    except Exception:  # a missing or broken checkpoint is the engine's to report
        return None
    if window <= 0:
        return None
    counter: ExactCounter | None = None
    estimated: str | None = None
    if exact:
        from ds4router.sessions.local_tokens import LocalTokenizerUnavailable, local_counter

        try:
            counter = local_counter(directory)
        except LocalTokenizerUnavailable as exc:
            estimated = f"the local tokenizer cannot be read ({exc})"
    return ContextLimits(
        model,
        window,
        answer_reserve(window, max_tokens),
        f"{directory / 'config.json'}",
        counter=counter,
        estimated=estimated,
    )


__all__ = [
    "ContextLimits",
    "ContextTooLong",
    "EXACT_MARGIN",
    "ExactCounter",
    "Fitted",
    "answer_reserve",
    "cloud_limits",
    "conservative_tokens",
    "fit_messages",
    "local_limits",
    "message_tokens",
    "prompt_budget",
    "safety_margin",
    "split_turns",
]
