"""One token count: the local engine's tokenizer, LiteLLM's for cloud models it has, a
marked estimate otherwise; the router's token rules and the ledger's estimates use it."""

from __future__ import annotations

from ds4router.config import Config
from ds4router.routing.classify import classify
from ds4router.routing.request import Request, estimate_tokens
from ds4router.sessions.local_tokens import local_counter
from ds4router.targets import CloudModel, LocalEngine
from ds4router.token_count import count, count_text

CHINESE = "请把这个函数改写成异步的版本，并且为每一个分支补上单元测试。" * 20


def test_local_counts_are_the_engines_own() -> None:
    messages = [{"role": "user", "content": CHINESE}]
    counted = count(LocalEngine(), messages)
    assert counted.exact and counted.method == "local tokenizer"
    assert counted.tokens == local_counter(None).prompt_tokens(messages)
    # The old 3.6-characters rule reads far below the real count on Chinese.
    assert estimate_tokens(CHINESE) < 0.5 * counted.tokens


def test_openai_models_are_counted_with_their_own_encoding() -> None:
    # o200k splits "hello world" in two; the answer text has no chat template tokens.
    assert count_text(CloudModel("openai/gpt-5"), "hello world").tokens == 2
    assert count_text(CloudModel("openai/gpt-5"), "hello world").exact
    long = count(CloudModel("openai/gpt-4.1"), [{"role": "user", "content": "word " * 1000}])
    assert long.exact and long.method == "litellm" and 1000 <= long.tokens <= 1015


def test_a_model_without_a_known_tokenizer_gets_a_marked_estimate_that_errs_high() -> None:
    messages = [{"role": "user", "content": CHINESE}]
    guess = count(CloudModel("anthropic/claude-opus-4-7"), messages)
    assert not guess.exact and guess.method == "estimate"
    assert guess.tokens >= count(LocalEngine(), messages).tokens


def test_the_routers_token_rules_see_the_real_count() -> None:
    config = Config.model_validate(
        {"routes": [{"name": "long", "when": {"min_tokens": 300}, "to": "cloud:openai/gpt-4.1"}]}
    )
    classified = classify(Request(CHINESE), config)
    assert classified.tokens == count(LocalEngine(), [{"role": "user", "content": CHINESE}]).tokens
    assert classified.tokens >= 300 > estimate_tokens(CHINESE)
