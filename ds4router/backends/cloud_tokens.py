"""Prompt token counts for cloud models, by LiteLLM's counter where it has the model's
own tokenizer.

``litellm.token_counter`` counts with the tokenizer it bundles for a model family
(DeepSeek V3/V4, Cohere Command R, Llama 2/3: Hugging Face files shipped in the
package) and with tiktoken otherwise. Its tiktoken fallback is ``cl100k_base`` for every
model, which is not what GPT-4o and later models use, so for OpenAI's models we hand it
the model's own encoding (``o200k_base`` or ``cl100k_base``, both bundled with LiteLLM:
nothing is downloaded). Anthropic has published no tokenizer for its current models
(LiteLLM's is Claude 2's) and Google's need an API call, so those are not counted here:
:func:`count_cloud` returns None and the caller estimates, saying so.

LiteLLM is imported lazily (slow, and only the backends may import it); the first call
pays for it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from typing import Any

# Counted by LiteLLM's own bundled tokenizer for these families.
_BUNDLED_KINDS = frozenset({"deepseek", "cohere", "llama2", "llama3"})
_O200K = re.compile(r"^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)", re.I)
_CL100K = re.compile(r"^(gpt-4(?!o|\.)|gpt-3\.5)", re.I)
_LOCK = threading.Lock()
_ENCODINGS: dict[str, Any] = {}


def count_cloud(model: str, messages: Sequence[Any] = (), text: str | None = None) -> int | None:
    """Prompt tokens of ``messages`` (or of ``text`` alone, no message template) for
    ``model`` (``provider/name`` or bare), or None when LiteLLM has no tokenizer of that
    model's own (or is not installed)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    name = model.removeprefix("cloud:")
    bare = name.rsplit("/", 1)[-1]
    provider = name.split("/", 1)[0] if "/" in name else ""
    try:
        import litellm
        from litellm import utils as litellm_utils
    except ImportError:
        return None
    plain = None if text is not None else [dict(m) if hasattr(m, "items") else m for m in messages]
    if provider in ("", "openai", "azure") and (_O200K.match(bare) or _CL100K.match(bare)):
        encoding = _encoding("o200k_base" if _O200K.match(bare) else "cl100k_base")
        if encoding is None:
            return None
        custom = {"type": "openai_tokenizer", "tokenizer": encoding}
        return int(
            litellm.token_counter(model=bare, messages=plain, text=text, custom_tokenizer=custom)
        )
    kind_of = getattr(litellm_utils, "huggingface_tokenizer_kind", None)
    if kind_of is None or kind_of(bare) not in _BUNDLED_KINDS:
        return None
    try:
        return int(litellm.token_counter(model=bare, messages=plain, text=text))
    except Exception:  # a tokenizer file that would not load: the caller estimates
        return None


def _encoding(name: str) -> Any:
    with _LOCK:
        if name not in _ENCODINGS:
            try:
                from litellm.rust_bridge.tokenizer import get_encoding

                _ENCODINGS[name] = get_encoding(name)
            except Exception:  # an older or newer LiteLLM without this bridge
                _ENCODINGS[name] = None
        return _ENCODINGS[name]


class CloudTokenCounter:
    """Counts a conversation with LiteLLM's tokenizer of one cloud model (an
    :class:`ds4router.sessions.context_window.ExactCounter`)."""

    def __init__(self, model: str) -> None:
        self.model = model

    def message_tokens(self, message: Any) -> int:
        return count_cloud(self.model, [message]) or 0

    def prompt_tokens(self, messages: Sequence[Any]) -> int:
        return count_cloud(self.model, messages) or 0


def cloud_counter(model: str) -> CloudTokenCounter | None:
    """A counter for ``model`` when LiteLLM has its tokenizer, else None (estimate)."""
    probe = count_cloud(model, [{"role": "user", "content": "a"}])
    return None if probe is None else CloudTokenCounter(model)
