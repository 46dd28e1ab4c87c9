"""A llama-architecture GGUF file as an mlx-lm model, its tokenizer and its chat template.

MLX reads GGUF itself (``mx.load(path, return_metadata=True)``): Q4_0/Q4_1/Q8_0 tensors
come back as MLX affine-quantized triples (``weight``, ``scales``, ``biases``; group 32)
and the file's metadata as a dict. What is left is naming: GGUF's ``blk.N.attn_q`` is
mlx-lm's ``model.layers.N.self_attn.q_proj``. The model itself is mlx-lm's llama
(``mlx_lm.models.llama.Model``), built from the metadata's hyperparameters. llama.cpp's
converter stores Q and K permuted for interleaved rotary embeddings, so the model runs
with ``rope_traditional=True``.

The tokenizer is built with the ``tokenizers`` library from the metadata's vocabulary and
merges (byte-level BPE, ``tokenizer.ggml.model == "gpt2"``); the chat template is the
metadata's Jinja template, rendered with ``jinja2``. Only what the demo model needs is
supported: other architectures or tokenizer kinds raise ``CheckpointError`` naming what
was found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_engine.errors import CheckpointError

GROUP_SIZE = 32  # every GGUF block type MLX converts uses blocks of 32 values
TOKEN_TYPE_CONTROL = 3  # llama.cpp's token type of special (control) tokens

# GGUF tensor names inside a block -> mlx-lm's llama module paths.
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class GgufModel:
    """What a GGUF file holds, ready to run: the model and the tokenizer's parts."""

    model: Any  # mlx_lm.models.llama.Model
    tokens: tuple[str, ...]
    merges: tuple[str, ...]
    special_ids: tuple[int, ...]
    bos_id: int | None
    eos_id: int
    chat_template: str
    context_length: int
    name: str
    quantized: bool


def _scalar(meta: Mapping[str, Any], key: str) -> Any:
    value = meta.get(key)
    if value is None:
        raise CheckpointError(f"the GGUF file has no {key!r} in its metadata")
    return value.item() if hasattr(value, "item") else value


def mlx_name(gguf_name: str) -> str:
    """mlx-lm's parameter path of a GGUF tensor name (``blk.3.attn_q.scales`` ...)."""
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
    raise CheckpointError(f"unexpected tensor {gguf_name!r} in a llama GGUF file")


def _bits(weights: Mapping[str, Any], module: str) -> int:
    """Bits per value of a quantized module: packed uint32 words per group of 32."""
    packed = weights[f"{module}.weight"].shape[-1] * 32
    values = weights[f"{module}.scales"].shape[-1] * GROUP_SIZE
    return packed // values


def _model_args(meta: Mapping[str, Any], tied: bool) -> Any:
    from mlx_lm.models import llama

    def num(key: str) -> int:
        return int(_scalar(meta, f"llama.{key}"))

    heads = num("attention.head_count")
    hidden = num("embedding_length")
    base = meta.get("llama.rope.freq_base")
    return llama.ModelArgs(
        model_type="llama",
        hidden_size=hidden,
        num_hidden_layers=num("block_count"),
        intermediate_size=num("feed_forward_length"),
        num_attention_heads=heads,
        num_key_value_heads=num("attention.head_count_kv"),
        head_dim=hidden // heads,
        rms_norm_eps=float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon")),
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
        max_position_embeddings=num("context_length"),
        rope_theta=10000.0 if base is None else float(base.item()),
        # llama.cpp's converter permutes Q/K rows for interleaved (GPT-J style) rotation.
        rope_traditional=True,
        tie_word_embeddings=tied,
    )


def _dequantized(weights: dict[str, Any]) -> dict[str, Any]:
    """Every quantized triple as one float32 weight (see ``load_gguf``'s ``dequantize``)."""
    import mlx.core as mx

    out: dict[str, Any] = {}
    for key, value in weights.items():
        module, _, leaf = key.rpartition(".")
        if leaf in ("scales", "biases"):
            continue
        if leaf == "weight" and f"{module}.scales" in weights:
            value = mx.dequantize(
                value,
                weights[f"{module}.scales"],
                weights[f"{module}.biases"],
                group_size=GROUP_SIZE,
                bits=_bits(weights, module),
            )
        out[key] = value.astype(mx.float32)
    return out


def load_gguf(path: str | Path, *, dequantize: bool = False) -> GgufModel:
    """Read a llama GGUF file into an mlx-lm model (weights evaluated) and tokenizer parts.

    ``dequantize`` expands the 4/8-bit weights to float32 (4x the memory of the file,
    computed by BLAS instead of MLX's quantized kernels; ``bench/demo_model.py``
    measures which is faster on a machine).
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models import llama

    file = Path(path)
    try:
        raw, meta = mx.load(str(file), return_metadata=True)
    except Exception as exc:  # MLX raises a bare RuntimeError/ValueError on a bad file
        raise CheckpointError(f"cannot read GGUF file {file}: {exc}") from exc
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{file}: architecture {arch!r} is not supported (only llama)")
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise CheckpointError(
            f"{file}: tokenizer kind {meta.get('tokenizer.ggml.model')!r} is not supported "
            "(only byte-level BPE, 'gpt2')"
        )
    weights = {mlx_name(k): v for k, v in raw.items()}
    tied = "lm_head.weight" not in weights
    model = llama.Model(_model_args(meta, tied))
    quantized = any(k.endswith(".scales") for k in weights)
    if dequantize:
        weights = _dequantized(weights)
    elif quantized:
        nn.quantize(
            model,
            group_size=GROUP_SIZE,
            class_predicate=lambda p, _m: (
                f"{p}.scales" in weights and {"group_size": GROUP_SIZE, "bits": _bits(weights, p)}
            ),
        )
    try:
        model.load_weights(list(weights.items()))
    except ValueError as exc:
        raise CheckpointError(f"{file}: weights do not fit the llama model: {exc}") from exc
    mx.eval(model.parameters())
    model.eval()
    tokens = tuple(meta["tokenizer.ggml.tokens"])
    kinds = meta["tokenizer.ggml.token_type"].tolist()
    bos = meta.get("tokenizer.ggml.bos_token_id")
    return GgufModel(
        model=model,
        tokens=tokens,
        merges=tuple(meta.get("tokenizer.ggml.merges", ())),
        special_ids=tuple(i for i, kind in enumerate(kinds) if kind == TOKEN_TYPE_CONTROL),
        bos_id=None if bos is None else int(bos.item()),
        eos_id=int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
        chat_template=str(meta.get("tokenizer.chat_template", "")),
        context_length=int(_scalar(meta, "llama.context_length")),
        name=str(meta.get("general.name", file.stem)),
        quantized=quantized and not dequantize,
    )


def gguf_tokenizer(parts: GgufModel) -> Any:
    """A ``tokenizers.Tokenizer`` for a byte-level BPE vocabulary from GGUF metadata."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(parts.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in parts.merges]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([parts.tokens[i] for i in parts.special_ids])
    return backend
