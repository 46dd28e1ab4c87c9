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
from typing import Any

from ds4router.sessions.context_window import (
    MESSAGE_OVERHEAD_TOKENS,
    conservative_tokens,
    content_text,
)


@dataclass(frozen=True)
class TokenCount:
    """``tokens`` of a prompt; ``exact`` when the target's own tokenizer counted them;
    ``method`` says which counter did (``local tokenizer``, ``litellm``, ``estimate``)."""

    tokens: int
    exact: bool
    method: str


def is_local(target: str) -> bool:
    return target == "local" or target.startswith("local:") or target.startswith("local/")


def count(
    target: str, messages: Sequence[Any], *, local_model_path: str | Path | None = None
) -> TokenCount:
    """Tokens of the prompt ``messages`` make for ``target`` (``local``, ``local:...`` or a
    cloud model name such as ``cloud:openai/gpt-5``)."""
    if is_local(target):
        from ds4router.sessions.local_tokens import LocalTokenizerUnavailable, local_counter

        try:
            counter = local_counter(local_model_path)
        except LocalTokenizerUnavailable:
            return estimate(messages)
        return TokenCount(counter.prompt_tokens(messages), True, "local tokenizer")
    from ds4router.backends.cloud_tokens import count_cloud

    counted = count_cloud(target, messages)
    if counted is None:
        return estimate(messages)
    return TokenCount(counted, True, "litellm")


def count_text(target: str, text: str, *, local_model_path: str | Path | None = None) -> TokenCount:
    """Tokens of ``text`` alone (a generated answer), for ``target``; no template tokens."""
    if not text:
        return TokenCount(0, True, "empty")
    if is_local(target):
        from ds4router.sessions.local_tokens import LocalTokenizerUnavailable, local_counter

        try:
            return TokenCount(
                local_counter(local_model_path).text_tokens(text), True, "local tokenizer"
            )
        except LocalTokenizerUnavailable:
            return TokenCount(conservative_tokens(text), False, "estimate")
    from ds4router.backends.cloud_tokens import count_cloud

    counted = count_cloud(target, text=text)
    if counted is None:
        return TokenCount(conservative_tokens(text), False, "estimate")
    return TokenCount(counted, True, "litellm")


def estimate(messages: Sequence[Any]) -> TokenCount:
    """The conservative estimate (errs high), clearly not exact."""
    tokens = sum(
        conservative_tokens(content_text(_get(m, "content"))) + MESSAGE_OVERHEAD_TOKENS
        for m in messages
    )
    return TokenCount(tokens, False, "estimate")


def _get(message: Any, key: str) -> Any:
    return message.get(key) if hasattr(message, "get") else getattr(message, key, None)


def prompt_count(
    route: str, model: str, messages: Sequence[Any], local_model_path: str | None
) -> int:
    """The prompt an attempt sends, counted for where it goes (``route`` local or cloud):
    what the ledger records when no usage comes back."""
    target = "local" if route == "local" else model
    return count(target, messages, local_model_path=local_model_path).tokens


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
    return count("local", messages, local_model_path=config.local.engine.model_path).tokens
