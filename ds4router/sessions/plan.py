"""Step one of the pipeline, pure: what to answer -> classified -> decided -> checked.

``plan(exchange, config, state)`` classifies an :class:`Exchange` (the newest
message and the conversation it continues), lets the router decide
(:func:`ds4router.routing.router.decide`) and enforces the privacy invariant once
more (:func:`enforce_privacy`: a cloud target or fallback above
``privacy.cloud_max_privacy`` becomes a refusal or is dropped, whatever the
router did). It sends nothing and reads no state: the routing state (budget,
health) is an argument (the one file it may read is the local tokenizer that the
token rules count with), so the same call serves the TUI's preview on every
keystroke and a live request. Gathering that state is the session's edge
(:meth:`ds4router.sessions.session.Session.plan`).

An ``Exchange`` carries a whole conversation, in either of two shapes:

* ``context``: earlier exchanges the app keeps (history), each with the privacy
  level stored with it: a follow-up to a secret answer is secret;
* ``messages``, ``system``, ``tools``: a conversation given whole, as a
  gateway receives it (OpenAI-shaped messages with roles ``system``, ``user``,
  ``assistant``, ``tool``; tool definitions). Every piece of it is scanned
  (:func:`ds4router.routing.scan.pieces.pieces_from_chat`) and sent as given,
  before the newest message; ``tools`` travel on ``Plan.tools`` to the backend
  request.

The whole conversation is classified, so leaving turns out later (to fit a
window, :mod:`ds4router.sessions.runner`) can never make it look less private.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ds4router.config.schema import Config
from ds4router.routing.classify import classify
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.privacy import Contribution, redaction_applies
from ds4router.routing.request import Attachment, Request, strip_tags
from ds4router.routing.router import Classified, Decision, RouterState, decide
from ds4router.routing.scan.pieces import pieces_from_chat
from ds4router.servers import may_send
from ds4router.sessions.conversation import ContextTurn, chat_messages, context_pieces
from ds4router.targets import CloudModel, LocalEngine, Refuse, Target
from ds4router.token_count import context_count, count

ChatMessage = Mapping[str, Any]


class Reasoning(enum.Enum):
    """How hard the client asked the model to think (OpenAI ``reasoning_effort``, Anthropic
    ``thinking``); each backend maps it to what it has (:func:`reasoning_options`)."""

    OFF = "off"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class Exchange:
    """What to answer: the newest user message and the conversation it continues.

    ``text`` is the message as typed (inline tags included), ``attachments`` its
    files (read already: :func:`ds4router.routing.classify.load_attachments`).
    ``model``: the target the user chose (None: the rules decide).
    """

    text: str
    attachments: tuple[Attachment, ...] = ()
    conversation_id: str = ""
    context: tuple[ContextTurn, ...] = ()
    messages: tuple[ChatMessage, ...] = ()
    system: str | None = None
    tools: tuple[ChatMessage, ...] = ()
    model: Target | None = None
    # What the client asked of the answer (None: the backend's default).
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    tool_choice: Any = None
    reasoning: Reasoning | None = None
    # The gateway's caller (a key name, the agent's User-Agent); the ledger row keeps it.
    client: str | None = None
    # When the newest message is not the user's (an agent's tool results), the text the
    # task classifier reads: the last user message of the conversation.
    task_text: str = ""


@dataclass(frozen=True)
class Plan:
    """An exchange, classified and decided: what the runner sends, or a refusal.

    ``prompt`` is the newest message as the model sees it (tags removed, files
    fenced); ``messages`` the whole conversation to send, newest last, before any
    target's window is fitted.
    """

    exchange: Exchange
    classified: Classified
    decision: Decision
    prompt: str
    messages: tuple[ChatMessage, ...]

    @property
    def refused(self) -> bool:
        return isinstance(self.decision.target, Refuse)

    @property
    def earlier(self) -> int:
        """How many earlier turns or messages go along (for the window notices)."""
        return len(self.exchange.context) + len(self.exchange.messages)

    @property
    def tools(self) -> tuple[ChatMessage, ...]:
        return self.exchange.tools


def plan(exchange: Exchange, config: Config, state: RouterState) -> Plan:
    """Classify -> decide -> enforce the privacy invariant. Pure but for reading the local
    tokenizer the token rules count with (:mod:`ds4router.token_count`)."""
    classified = classify_exchange(exchange, config)
    decision = enforce_privacy(decide(classified, config, state), classified, config)
    prompt = compose_prompt(exchange.text, exchange.attachments)
    return Plan(exchange, classified, decision, prompt, conversation_messages(exchange, prompt))


def classify_exchange(exchange: Exchange, config: Config) -> Classified:
    """The newest message classified with every earlier piece of the conversation; the
    levels stored with earlier turns count too (history keeps a redacted text, so the
    level it had is kept with it)."""
    pieces = context_pieces(exchange.context)
    if exchange.messages or exchange.system is not None or exchange.tools:
        pieces += pieces_from_chat(
            list(exchange.messages), tools=list(exchange.tools) or None, system=exchange.system
        )
    request = Request(exchange.text or exchange.task_text, exchange.attachments, exchange.model)
    classified = classify(request, config, pieces)
    privacy = classified.privacy
    level = max((t.privacy for t in exchange.context), default=None)
    if level is not None and level > config.privacy.default:
        privacy = replace(
            privacy,
            level=max(level, privacy.level),
            # An earlier turn's stored level may not come from findings: never redacted away.
            without_findings=max(level, privacy.floor),
            contributions=(
                *privacy.contributions,
                Contribution("earlier messages of this conversation", level),
            ),
        )
    tokens = context_count(exchange.context, config)
    if exchange.messages:
        tokens += count(
            LocalEngine(),
            list(exchange.messages),
            local_model_path=config.local.engine.model_path,
        ).tokens
    return replace(classified, privacy=privacy, tokens=classified.tokens + tokens)


def cloud_allowed(classified: Classified, decision: Decision, config: Config) -> bool:
    """Whether the request may leave the machine: its level is within the cloud ceiling, or,
    with ``privacy.on_detected: redact``, the level without the findings it will not see."""
    level = max(classified.privacy.level, decision.privacy)
    if decision.redact and redaction_applies(classified.privacy, config.privacy):
        level = classified.privacy.floor
    return level <= config.privacy.cloud_max_privacy


def request_level(classified: Classified, decision: Decision) -> PrivacyLevel:
    return max(classified.privacy.level, decision.privacy)


def target_allowed(
    target: Target, classified: Classified, decision: Decision, config: Config
) -> bool:
    """May ``target`` receive this request? A cloud model by :func:`cloud_allowed` (it gets
    the redacted text); any other target by ``servers.may_send`` on the full level (a
    server gets the text as it is: on loopback anything, elsewhere within its ceiling)."""
    if isinstance(target, CloudModel):
        return cloud_allowed(classified, decision, config)
    return may_send(target, request_level(classified, decision), config)


def enforce_privacy(decision: Decision, classified: Classified, config: Config) -> Decision:
    """The privacy invariant, again: a cloud target above the limit becomes a refusal and
    cloud fallbacks above it are dropped, so no bug in the router can leak."""
    if not target_allowed(decision.target, classified, decision, config):
        limit = config.privacy.cloud_max_privacy
        level = max(classified.privacy.level, decision.privacy)
        return replace(
            decision,
            target=Refuse(),
            model=None,
            rule="privacy",
            fallbacks=(),
            reasons=(
                *decision.reasons,
                f"privacy {level} is above cloud_max_privacy {limit}: refusing to send it "
                f"to {decision.model}",
            ),
            fix=decision.fix or "report this: the router chose a cloud target above the limit",
        )
    safe = tuple(t for t in decision.fallbacks if target_allowed(t, classified, decision, config))
    return decision if safe == decision.fallbacks else replace(decision, fallbacks=safe)


def compose_prompt(text: str, attachments: Sequence[Attachment]) -> str:
    """What the model is sent: the text without tags, then each attachment fenced, with its path."""
    parts = [strip_tags(text)] if strip_tags(text) else []
    for attachment in attachments:
        fence = "```"
        while fence in attachment.text:
            fence += "`"
        body = attachment.text.rstrip("\n")
        parts.append(f"File `{attachment.path}`:\n{fence}\n{body}\n{fence}")
    return "\n\n".join(parts)


def conversation_messages(exchange: Exchange, prompt: str) -> tuple[ChatMessage, ...]:
    """The chat to send: the system prompt, the earlier turns or messages, then ``prompt``."""
    head: list[ChatMessage] = []
    if exchange.system is not None:
        head.append({"role": "system", "content": exchange.system})
    head += [dict(m) for m in exchange.messages]
    if exchange.messages and not prompt:
        return tuple(head)  # the conversation ends with the agent's tool results
    return (*head, *chat_messages(exchange.context, prompt))


__all__ = [
    "ChatMessage",
    "Exchange",
    "Plan",
    "classify_exchange",
    "cloud_allowed",
    "request_level",
    "target_allowed",
    "compose_prompt",
    "conversation_messages",
    "enforce_privacy",
    "plan",
]
