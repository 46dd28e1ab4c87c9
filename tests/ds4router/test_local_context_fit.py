"""A long conversation with the real local engine stays inside its context window.

A tiny random checkpoint whose ``config.json`` allows 1,024 positions: four questions
of about 300 tokens each make a conversation the engine would refuse to prefill
(it fails with ``context_window`` at its limit). The session leaves the oldest turns
out, so every request is answered, and the engine's own count of each prompt (its
DeepSeek V4 tokenizer and chat template) stays within what the session allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ds4router.config.loader import load_config
from ds4router.events import Failed, Notice, Priced
from ds4router.sessions.context_window import prompt_budget
from ds4router.sessions.session import Session
from local_engine.checkpoint.random_weights import write_random_checkpoint

WINDOW = 1024
MAX_TOKENS = 8  # a random model never stops on its own: short answers


@pytest.fixture(scope="module")
def small_window_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(
        tmp_path_factory.mktemp("ds4-1k"), preset="tiny", seed=0, max_position_embeddings=WINDOW
    )


async def test_the_local_engine_gets_a_conversation_it_can_hold(
    tmp_path: Path, small_window_model: Path
) -> None:
    directory = tmp_path / "acme"
    directory.mkdir()
    config = {
        "project": "acme",
        "default": "local",
        "fallback": {"local_unavailable": None},
        "local": {
            "engine": {"model_path": str(small_window_model), "max_tokens": MAX_TOKENS},
            "power": {"source": "configured"},
        },
    }
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(config))
    session = Session(load_config(directory))
    budget = prompt_budget(WINDOW, MAX_TOKENS, margin=0)  # counted exactly: no margin
    cid: str | None = None
    trimmed: list[int] = []
    try:
        for i in range(4):
            question = f"question {i}: " + " ".join(["please explain the invoice"] * 75)
            events = [e async for e in session.send(question, conversation_id=cid)]
            cid = session.conversation_id
            failures = [e for e in events if isinstance(e, Failed)]
            assert not failures, failures[0].message
            trimmed += [
                e.dropped_turns
                for e in events
                if isinstance(e, Notice) and e.kind == "context_trimmed"
            ]
            priced = events[-1]
            assert isinstance(priced, Priced) and priced.status == "ok"
            assert priced.route == "local" and not priced.usage_estimated
            # The engine's own count of the prompt it prefilled.
            assert 0 < priced.input_tokens <= budget
    finally:
        session.close()
    # Without leaving turns out, the fourth prompt would be over 1,200 real tokens.
    assert trimmed and all(n >= 1 for n in trimmed)
