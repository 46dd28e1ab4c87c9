"""Engines for models other than DeepSeek V4: mlx-lm's architectures, from MLX or GGUF files.

``local.engine.kind: mlx-lm`` serves any model directory mlx-lm can ``load`` (MLX-format
safetensors with a ``config.json`` and a Hugging Face tokenizer), or a llama GGUF file
(``gguf_llama``; the embedded demo model is one). ``MlxLmEngine`` has the surface the local
backend uses from ``Engine`` (``load``, ``info``, ``encode_messages``, ``generate_ids``,
``context_limit``, ``use_kv_cache``) and generates with the same ``stream_generate``, so
sampling, stop strings, cancellation and the stats are the DeepSeek engine's own.

There is no KV cache on disk for these models: ``use_kv_cache`` only accepts "off".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_engine.errors import CheckpointError, EngineError
from local_engine.runtime.engine import EngineInfo
from local_engine.runtime.generate import Event, GenerationParams, stream_generate
from local_engine.runtime.mlx_lm_files import check_model_path, find_gguf
from local_engine.runtime.tokenizer import SpecialTokens, Tokenizer

NO_TOKEN = -1  # a special id this vocabulary lacks (no <think>: never matches a token)

# A GGUF's 4/8-bit weights stay quantized (measured faster on this 2-core CPU than float32
# through BLAS; bench/demo_model.py measures both); DS4ROUTER_DEMO_DTYPE=float32 expands them.
DTYPE_ENV = "DS4ROUTER_DEMO_DTYPE"

_ENGINES: dict[Path, MlxLmEngine] = {}
_LOCK = threading.Lock()


def _dequantize() -> bool:
    return os.environ.get(DTYPE_ENV, "quantized").lower() in ("float32", "f32")


@dataclass(frozen=True)
class _Template:
    """A chat template: a Jinja string (GGUF) or a Hugging Face tokenizer that has one."""

    jinja: str = ""
    hf: Any = None
    bos: str = ""
    eos: str = ""

    def render(self, messages: list[dict[str, Any]]) -> str:
        if self.hf is not None:
            return str(
                self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise EngineError(f"the model's chat template refused the conversation: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.jinja).render(
            messages=messages, add_generation_prompt=True, bos_token=self.bos, eos_token=self.eos
        )


class MlxLmEngine:
    """A loaded mlx-lm model and its tokenizer. Get one with ``MlxLmEngine.load``."""

    def __init__(
        self,
        path: Path,
        model: Any,
        tokenizer: Tokenizer,
        template: _Template,
        *,
        context_limit: int,
        eos_ids: tuple[int, ...],
        model_type: str,
    ) -> None:
        self.path = path
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self._context_limit = context_limit
        self.eos_ids = eos_ids
        self.model_type = model_type
        self._generate_lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, **_ignored: Any) -> MlxLmEngine:
        """The engine for ``path``, loaded once per process and shared (other keywords of
        ``Engine.load``, e.g. ``progress``, do not apply: these models load in seconds)."""
        key = Path(path).expanduser().resolve()
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                problem = check_model_path(key)
                if problem is not None:
                    raise CheckpointError(problem)
                gguf = find_gguf(key)
                engine = _ENGINES[key] = _from_gguf(gguf) if gguf else _from_mlx_dir(key)
            return engine

    @staticmethod
    def loaded() -> list[Path]:
        with _LOCK:
            return list(_ENGINES)

    @property
    def context_limit(self) -> int:
        return self._context_limit

    def use_kv_cache(self, directory: Any, **_budgets: Any) -> None:
        """No disk cache for these models; every request prefills its prompt."""

    def info(self) -> EngineInfo:
        from mlx.utils import tree_flatten

        leaves: Any = tree_flatten(self.model.parameters())
        by_dtype: dict[str, int] = {}
        for _, leaf in leaves:
            name = str(leaf.dtype).removeprefix("mlx.core.")
            by_dtype[name] = by_dtype.get(name, 0) + int(leaf.nbytes)
        args = self.model.args
        return EngineInfo(
            path=str(self.path),
            model_type=self.model_type,
            parameters=_parameters(self.model),
            weight_bytes=sum(by_dtype.values()),
            bytes_by_dtype=by_dtype,
            layers=int(args.num_hidden_layers),
            context_limit=self.context_limit,
            vocab_size=int(args.vocab_size),
            hidden_size=int(args.hidden_size),
            routed_experts=0,
            experts_per_token=0,
            is_random=False,
            tokenizer_path=str(self.tokenizer.source),
        )

    def encode_messages(self, messages: Sequence[Any], params: GenerationParams) -> list[int]:
        """Prompt ids: the model's own chat template, ending with the assistant's turn."""
        if params.tools or any(m.get("tools") or m.get("tool_calls") for m in messages):
            from local_engine.runtime.chat import ChatEncodingError

            raise ChatEncodingError(
                f"{self.model_type} models run without tool calling here (only DeepSeek V4 "
                "renders and parses tools); route this request to a cloud model or drop the tools"
            )
        plain = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages]
        return self.tokenizer.encode(self.template.render(plain))

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
        on_prefill_progress: Any = None,
        session: str | None = None,  # no decode states are kept for these models
    ) -> Iterator[Event]:
        from mlx_lm.models.cache import make_prompt_cache

        params = params or GenerationParams()
        started = time.perf_counter()
        with self._generate_lock:
            yield from stream_generate(
                self.model,
                self.tokenizer,
                list(prompt_ids),
                params,
                eos_token_ids=self.eos_ids,
                context_limit=self.context_limit,
                cancel=cancel,
                on_prefill_progress=on_prefill_progress,
                started_at=started,
                make_cache=lambda: make_prompt_cache(self.model),
            )


def _text(content: Any) -> str:
    """A message's text: OpenAI-style content parts are joined (these models read text)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _parameters(model: Any) -> int:
    """Parameters as the model was trained (a packed 4-bit word holds 8 of them)."""
    from mlx.utils import tree_flatten

    leaves: Any = tree_flatten(model.parameters())
    total = sum(int(v.size) for k, v in leaves if not k.endswith((".scales", ".biases")))
    for _, module in model.named_modules():
        bits = getattr(module, "bits", None)
        weight = getattr(module, "weight", None)
        if bits and weight is not None:  # a quantized module: uint32 words, 32 // bits each
            total += int(weight.size) * (32 // bits - 1)
    return total


def _specials(backend: Any, eos: int, bos: int | None) -> SpecialTokens:
    return SpecialTokens(
        bos=NO_TOKEN if bos is None else bos,
        eos=eos,
        pad=eos,
        user=NO_TOKEN,
        assistant=NO_TOKEN,
        think_start=_id(backend, "<think>"),
        think_end=_id(backend, "</think>"),
    )


def _id(backend: Any, token: str) -> int:
    found = backend.token_to_id(token)
    return NO_TOKEN if found is None else int(found)


def _from_gguf(file: Path) -> MlxLmEngine:
    from local_engine.runtime.gguf_llama import gguf_tokenizer, load_gguf

    parts = load_gguf(file, dequantize=_dequantize())
    backend = gguf_tokenizer(parts)
    special = _specials(backend, parts.eos_id, parts.bos_id)
    tokenizer = Tokenizer(backend, file, special=special)
    if not parts.chat_template:
        raise CheckpointError(f"{file} has no chat template (tokenizer.chat_template)")
    bos = "" if parts.bos_id is None else parts.tokens[parts.bos_id]
    template = _Template(jinja=parts.chat_template, bos=bos, eos=parts.tokens[parts.eos_id])
    return MlxLmEngine(
        file,
        parts.model,
        tokenizer,
        template,
        context_limit=parts.context_length,
        eos_ids=(parts.eos_id,),
        model_type="llama (gguf)",
    )


def _from_mlx_dir(path: Path) -> MlxLmEngine:
    from mlx_lm.utils import load

    try:
        model, wrapper = load(str(path))
    except Exception as exc:  # mlx-lm raises ValueError/FileNotFoundError/KeyError
        raise CheckpointError(f"mlx-lm cannot load {path}: {exc}") from exc
    hf = wrapper._tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(f"{path}: only models with a fast (tokenizer.json) tokenizer")
    eos_ids = tuple(int(i) for i in wrapper.eos_token_ids)
    special = _specials(backend, eos_ids[0], getattr(hf, "bos_token_id", None))
    args = model.args
    limit = getattr(args, "max_position_embeddings", None) or 4096
    return MlxLmEngine(
        path,
        model,
        Tokenizer(backend, path / "tokenizer.json", special=special),
        _Template(hf=hf),
        context_limit=int(limit),
        eos_ids=eos_ids,
        model_type=str(getattr(args, "model_type", "mlx-lm")),
    )
