"""How far a converted model's next-token distributions are from a reference's.

``compare_models(A, B)`` runs both checkpoints on the same token sequences
and reports, position by position, the KL divergence ``KL(P_A || P_B)`` (in
nats: what B loses against A) and whether both put their top-1 on the same
token. Models are loaded one after the other -- A's log-probabilities are kept
on the host, then A is dropped before B is loaded -- so comparing the full
model against its 2-bit conversion needs the memory of the larger one only.

Prompts are text, tokenized with A's tokenizer; the built-in ones mix code and
prose. Random-weight test models are nearly uniform over 129280 tokens, so
their top-1 agreement is a coin toss among near ties; KL is the figure to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.errors import EngineError

DEFAULT_PROMPTS: tuple[str, ...] = (
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1)"
    " + fibonacci(n - 2)\n",
    "The quick brown fox jumps over the lazy dog. Meanwhile, the invoice service retries each"
    " failed payment three times before it gives up and writes the error to the ledger.",
    "SELECT customer_id, SUM(amount) AS total FROM payments WHERE created_at >= '2026-01-01'"
    " GROUP BY customer_id ORDER BY total DESC LIMIT 10;",
    "Explain why a binary search runs in logarithmic time, then show an iterative version in"
    " Rust that returns the index of the first element not less than the target.",
)
DEFAULT_MAX_TOKENS = 128


@dataclass(frozen=True)
class CompareResult:
    """Per-position KL(A || B) in nats and top-1 agreement, over every prompt."""

    model_a: str
    model_b: str
    kl: tuple[float, ...]
    top1_agree: tuple[bool, ...]
    prompt_lengths: tuple[int, ...]

    @property
    def positions(self) -> int:
        return len(self.kl)

    @property
    def mean_kl(self) -> float:
        return float(np.mean(self.kl)) if self.kl else 0.0

    @property
    def max_kl(self) -> float:
        return float(np.max(self.kl)) if self.kl else 0.0

    def kl_quantile(self, q: float) -> float:
        return float(np.quantile(self.kl, q)) if self.kl else 0.0

    @property
    def top1_agreement(self) -> float:
        return float(np.mean(self.top1_agree)) if self.top1_agree else 0.0

    def to_dict(self, *, per_position: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "prompts": len(self.prompt_lengths),
            "positions": self.positions,
            "mean_kl": self.mean_kl,
            "median_kl": self.kl_quantile(0.5),
            "p95_kl": self.kl_quantile(0.95),
            "max_kl": self.max_kl,
            "top1_agreement": self.top1_agreement,
        }
        if per_position:
            out["per_position"] = {
                "prompt_lengths": list(self.prompt_lengths),
                "kl": [round(k, 6) for k in self.kl],
                "top1_agree": list(self.top1_agree),
            }
        return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


def kl_and_top1(logp_a: np.ndarray, logp_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row KL(A || B) (nats) and top-1 agreement of two ``[T, V]`` log-prob arrays."""
    if logp_a.shape != logp_b.shape:
        raise EngineError(
            f"the models disagree on shapes {list(logp_a.shape)} vs {list(logp_b.shape)}:"
            " compare two conversions of the same model"
        )
    pa = np.exp(logp_a.astype(np.float64))
    kl = (pa * (logp_a.astype(np.float64) - logp_b.astype(np.float64))).sum(axis=-1)
    agree = logp_a.argmax(axis=-1) == logp_b.argmax(axis=-1)
    return np.maximum(kl, 0.0), agree


def model_logprobs(model: Any, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Log-probabilities ``[T, V]`` (float32, on the host) of each token sequence."""
    import mlx.core as mx

    out = []
    for ids in sequences:
        logits = model(mx.array([list(ids)], dtype=mx.int32))[0].astype(mx.float32)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        out.append(np.array(logp))
    return out


def tokenize_prompts(
    model_dir: str | Path, prompts: Sequence[str], max_tokens: int
) -> list[list[int]]:
    from local_engine.runtime.tokenizer import Tokenizer

    tok = Tokenizer.load(model_dir)
    seqs = []
    for text in prompts:
        ids = tok.encode(text)[:max_tokens]
        if ids:
            seqs.append(ids)
    if not seqs:
        raise EngineError("no prompt has any tokens; give at least one non-empty prompt")
    return seqs


def _load(path: str | Path) -> Any:
    from local_engine.checkpoint.loader import load_model
    from local_engine.model.config import load_config
    from local_engine.model.graph_options import GraphOptions

    cfg = load_config(path)
    # The graph the engine would run: official round-trips for real weights only.
    graph = GraphOptions() if cfg.is_random else GraphOptions.official()
    return load_model(path, graph=graph)


def compare_models(
    path_a: str | Path,
    path_b: str | Path,
    prompts: Sequence[str] | None = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> CompareResult:
    """KL(A || B) and top-1 agreement of two checkpoints of one model on the same tokens."""
    import gc

    import mlx.core as mx

    from local_engine.model.config import load_config

    cfg_a, cfg_b = load_config(path_a), load_config(path_b)
    if cfg_a.vocab_size != cfg_b.vocab_size:
        raise EngineError(
            f"{path_a} has {cfg_a.vocab_size} tokens, {path_b} has {cfg_b.vocab_size}: compare"
            " two versions of the same model"
        )
    seqs = tokenize_prompts(path_a, list(prompts or DEFAULT_PROMPTS), max_tokens)
    model = _load(path_a)
    ref = model_logprobs(model, seqs)
    del model
    gc.collect()
    mx.clear_cache()
    model = _load(path_b)
    kls: list[float] = []
    agree: list[bool] = []
    for ids, logp_a in zip(seqs, ref, strict=True):
        (logp_b,) = model_logprobs(model, [ids])
        kl, same = kl_and_top1(logp_a, logp_b)
        kls.extend(float(k) for k in kl)
        agree.extend(bool(s) for s in same)
    return CompareResult(
        str(Path(path_a)), str(Path(path_b)), tuple(kls), tuple(agree), tuple(len(s) for s in seqs)
    )


def read_prompts_file(path: str | Path) -> list[str]:
    """Prompts from a file: one per line, or blocks separated by blank lines when any line
    is blank-separated (multi-line code prompts)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"cannot read prompts file {path}: {exc}") from None
    blocks = [b.strip("\n") for b in text.split("\n\n")]
    prompts = [b for b in blocks if b.strip()]
    if len(prompts) == 1:
        prompts = [line for line in prompts[0].splitlines() if line.strip()]
    if not prompts:
        raise EngineError(f"prompts file {path} is empty; put one prompt per line")
    return prompts
