"""Config: official and transformers spellings agree; RoPE frequencies match the reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import DeepseekV4Config
from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4RotaryEmbedding

from local_engine.checkpoint.random_weights import official_config
from local_engine.errors import CheckpointError
from local_engine.model.config import CSA, HCA, SLIDING, config_from_dict, load_config
from local_engine.model.rope import default_inv_freq, yarn_inv_freq


def test_official_and_transformers_spellings_give_the_same_config() -> None:
    official = official_config("full-layer", num_layers=43)
    ours = config_from_dict(official)
    # Flash's schedule: 2 sliding, then CSA on even and HCA on odd layers; 3 hash layers.
    assert ours.layer_types[:4] == (SLIDING, SLIDING, CSA, HCA)
    assert ours.layer_types.count(CSA) == 21 and ours.layer_types.count(HCA) == 20
    assert ours.mlp_layer_types[:4] == ("hash_moe",) * 3 + ("moe",)
    assert len(official["compress_ratios"]) == 44  # the MTP entry is ignored
    hf = DeepseekV4Config(
        **{k: v for k, v in official.items() if k not in ("rope_scaling",)},
        rope_parameters=dict(official["rope_scaling"], rope_type="yarn"),
    )
    assert hf.layer_types == list(ours.layer_types)
    theirs = config_from_dict(hf.to_dict())
    assert theirs == ours


def test_rope_frequencies_match_the_reference() -> None:
    hf = DeepseekV4Config(
        **{k: v for k, v in official_config("full-layer").items() if k != "rope_scaling"},
        rope_parameters={
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 65536,
            "beta_fast": 32,
            "beta_slow": 1,
        },
    )
    rotary = DeepseekV4RotaryEmbedding(hf)
    ours = config_from_dict(hf.to_dict())
    assert ours.compress_yarn is not None and ours.compress_yarn.attention_factor == 1.0
    np.testing.assert_allclose(
        yarn_inv_freq(ours), rotary.compress_inv_freq.numpy(), rtol=1e-6, atol=0
    )
    np.testing.assert_allclose(
        default_inv_freq(ours.rope_theta, ours.qk_rope_head_dim),
        rotary.main_inv_freq.numpy(),
        rtol=1e-6,
        atol=0,
    )
    assert rotary.compress_attention_scaling == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llama"}, "model_type is 'llama'"),
        ({"compress_ratios": [0, 3, 0]}, r"compress_ratios\[1\] is 3"),
        ({"scoring_func": "relu"}, "scoring_func 'relu'"),
        ({"num_attention_heads": 5}, "not divisible by o_groups"),
        ({"hidden_size": "big"}, "'hidden_size' must be an integer"),
        ({"rope_scaling": {"type": "longrope", "factor": 2}}, "rope type 'longrope'"),
    ],
)
def test_invalid_configs_say_what_is_wrong(change: dict, message: str) -> None:
    raw = official_config("tiny", num_layers=2)
    raw.update(change)
    with pytest.raises(CheckpointError, match=message):
        config_from_dict(raw)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path / "config.json")):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(official_config("tiny")))
    cfg = load_config(tmp_path)
    assert cfg.is_random and cfg.random_weights is not None
    assert cfg.random_weights["preset"] == "tiny"
    assert cfg.vocab_size == 129280
