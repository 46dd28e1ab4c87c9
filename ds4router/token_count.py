"""One token count for every part that needs one: :func:`count` ``(target, messages)``.

* the **local** engine: its own tokenizer and chat template
  (:mod:`ds4router.sessions.local_tokens`), exact;
* a **cloud** model LiteLLM has the tokenizer of (:mod:`ds4router.backends.cloud_tokens`:
  OpenAI's, DeepSeek's, Cohere's, Llama's), exact;
* anything else: :func:`ds4router.sessions.context_window.conservative_tokens`, an
  estimate that errs high (1.07x-1.31x of real counts where the old 3.6-characters rule
  read 0.27x-1.07x), marked ``exact=False`` so that nobody mistakes it for a count.

The router's ``min_tokens``/``max_tokens`` rules count the request for the local engine
(the target is what they decide, so no cloud tokenizer can be asked first), the ledger's
estimated usage and the context fitting count for the target that ran. A cloud count is
always the prompt as that model's tokenizer sees it; what the provider bills may still
add a few template tokens, which is why a reported usage always wins over a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

from ds4router.sessions.context_window import (
    MESSAGE_OVERHEAD_TOKENS,
    conservative_tokens,
    content_text,
)
from ds4router.targets import CloudModel, LocalEngine, LocalServer, Refuse, Target


@dataclass(frozen=True)
class TokenCount:
    """``tokens`` of a prompt; ``exact`` when the target's own tokenizer counted them;
    ``method`` says which counter did (``local tokenizer``, ``litellm``, ``estimate``)."""

    tokens: int
    exact: bool
    method: str


def count(
    target: Target, messages: Sequence[Any], *, local_model_path: str | Path | None = None
) -> TokenCount:
    """Tokens of the prompt ``messages`` make for ``target``."""
    match target:
        case LocalEngine():
            from ds4router.sessions.local_tokens import LocalTokenizerUnavailable, local_counter

            try:
                counter = local_counter(local_model_path)
            except LocalTokenizerUnavailable:
                return estimate(messages)
            return TokenCount(counter.prompt_tokens(messages), True, "local tokenizer")
        case CloudModel(model=model):
            from ds4router.backends.cloud_tokens import count_cloud

            counted = count_cloud(model, messages)
            return estimate(messages) if counted is None else TokenCount(counted, True, "litellm")
        case LocalServer() | Refuse():  # a server's model is its own; nothing is sent
            return estimate(messages)
        case _:
            assert_never(target)


def count_text(
    target: Target, text: str, *, local_model_path: str | Path | None = None
) -> TokenCount:
    """Tokens of ``text`` alone (a generated answer), for ``target``; no template tokens."""
    if not text:
        return TokenCount(0, True, "empty")
    match target:
        case LocalEngine():
            from ds4router.sessions.local_tokens import LocalTokenizerUnavailable, local_counter

            try:
                tokens = local_counter(local_model_path).text_tokens(text)
            except LocalTokenizerUnavailable:
                return TokenCount(conservative_tokens(text), False, "estimate")
            return TokenCount(tokens, True, "local tokenizer")
        case CloudModel(model=model):
            from ds4router.backends.cloud_tokens import count_cloud

            counted = count_cloud(model, text=text)
            if counted is None:
                return TokenCount(conservative_tokens(text), False, "estimate")
            return TokenCount(counted, True, "litellm")
        case LocalServer() | Refuse():
            return TokenCount(conservative_tokens(text), False, "estimate")
        case _:
            assert_never(target)


def estimate(messages: Sequence[Any]) -> TokenCount:
    """The conservative estimate (errs high), clearly not exact."""
    tokens = sum(
        conservative_tokens(content_text(_get(m, "content"))) + MESSAGE_OVERHEAD_TOKENS
        for m in messages
    )
    return TokenCount(tokens, False, "estimate")


def _get(message: Any, key: str) -> Any:
    return message.get(key) if hasattr(message, "get") else getattr(message, key, None)


def context_count(context: Sequence[Any], config: Any) -> int:
    """Earlier turns of a conversation (``prompt``, ``answer``) as the router's token rules
    count them: by the local engine's tokenizer (see :func:`count`)."""
    messages = [
        {"role": role, "content": text}
        for turn in context
        for role, text in (("user", turn.prompt), ("assistant", turn.answer))
        if text
    ]
    if not messages:
        return 0
    return count(LocalEngine(), messages, local_model_path=config.local.engine.model_path).tokens
