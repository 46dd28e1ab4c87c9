"""Shared pieces of the GPU benchmarks: recipe models, copy bandwidth, decode and prefill timing.

* :func:`build_weights` -- random weights in a recipe's exact layout (or the older
  mxfp4/mxfp8 mix), generated on the device (``local_engine.checkpoint.random_device``);
* :func:`copy_bandwidth` -- the card's bandwidth counted the way the hardware moves
  bytes: a large device-to-device copy, bytes read plus bytes written, timed with
  CUDA events (torch ``copy_``, which the machine has); MLX's own elementwise pass is
  reported beside it (``a * 1``, also read + write), because it runs slower;
* :func:`synthetic_cache` -- a decode state at ``tokens`` tokens filled with random
  rows through the cache's public snapshot/restore, so decode at 32k context is
  measured without a 32k prefill (decode reads the same rows whatever their values);
* :func:`time_decode` / :func:`time_prefill` -- greedy decode steps queued without host
  syncs (``async_eval``), and chunked prefill, each after a warm-up.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_weights(cfg: Any, recipe: str | None, dense: str, experts: str, seed: int = 0) -> Any:
    import mlx.core as mx

    from local_engine.checkpoint.random_device import random_weights
    from local_engine.checkpoint.recipes import load_recipe

    rec = load_recipe(recipe) if recipe else None
    return random_weights(
        cfg, seed, dtype=mx.bfloat16, dense_format=dense, expert_format=experts, recipe=rec
    )


def sub_model(cfg: Any, weights: Any, layers: int, **model_kw: Any) -> Any:
    """A model over the first ``layers`` layers of ``weights`` (the arrays are shared)."""
    import mlx.core as mx

    from local_engine.model.transformer import Model, ModelWeights

    sub_cfg = cfg.with_overrides(
        num_hidden_layers=layers,
        layer_types=cfg.layer_types[:layers],
        mlp_layer_types=cfg.mlp_layer_types[:layers],
    )
    sub = ModelWeights(
        weights.embed, weights.head, weights.norm, weights.hc_head, weights.layers[:layers]
    )
    return Model(sub_cfg, sub, dtype=mx.bfloat16, **model_kw)


def copy_bandwidth(nbytes: int = 4 << 30, reps: int = 10) -> dict[str, Any]:
    """Device copy bandwidth in bytes/s, read + write counted: torch (events) and MLX."""
    import mlx.core as mx

    out: dict[str, Any] = {"bytes_copied": nbytes, "counted": "read + write"}
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
            b = torch.empty_like(a)
            b.copy_(a)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(reps):
                start.record()
                b.copy_(a)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            out["torch_copy_Bps"] = 2 * nbytes / statistics.median(times)
            del a, b
            torch.cuda.empty_cache()
    except ImportError:
        pass
    x = mx.random.normal((nbytes // 2 // 4096, 4096)).astype(mx.bfloat16)  # int32 sizes
    mx.eval(x)
    times = []
    for _ in range(reps + 1):
        mx.synchronize()
        t0 = time.perf_counter()
        y = x * 1
        mx.eval(y)
        mx.synchronize()
        times.append(time.perf_counter() - t0)
        del y
    out["mlx_elementwise_Bps"] = 2 * nbytes / statistics.median(times[1:])
    out["bound_Bps"] = out.get("torch_copy_Bps", out["mlx_elementwise_Bps"])
    return out


def synthetic_cache(model: Any, tokens: int, seed: int = 0) -> Any:
    """A decode state at ``tokens`` (a multiple of 128) holding random rows."""
    import mlx.core as mx

    if tokens % 128:
        raise SystemExit(f"synthetic contexts must be multiples of 128, got {tokens}")
    cache = model.make_cache()
    snap = cache.snapshot()
    key = mx.random.key(seed)
    for i, layer in enumerate(cache):
        p = f"layers.{i}"
        snap[f"{p}.tokens"] = tokens
        key, k = mx.random.split(key)
        rows = min(tokens, layer.window_size - 1)
        snap[f"{p}.window"] = _normal((rows, layer.head_dim), k, model.dtype)
        for part, state in (("compressor", layer.compressor), ("indexer", layer.indexer)):
            if state is None:
                continue
            s = state.shape
            count = tokens // s.ratio
            key, k1, k2, k3 = mx.random.split(key, 4)
            snap[f"{p}.{part}.count"] = count
            snap[f"{p}.{part}.rows"] = _normal((count, s.row_width), k1, model.dtype)
            over = s.ratio if s.overlap and count else 0
            snap[f"{p}.{part}.overlap_kv"] = _normal((over, s.row_width), k2, model.dtype)
            snap[f"{p}.{part}.overlap_gate"] = _normal((over, s.row_width), k3, model.dtype)
    snap["tokens"] = tokens
    cache.restore(snap)
    mx.eval(*cache.arrays())
    return cache


def _normal(shape: tuple[int, int], key: Any, dtype: Any) -> Any:
    import mlx.core as mx

    return mx.random.normal(shape, key=key).astype(dtype)


def time_decode(model: Any, cache: Any, steps: int, rounds: int, warmup: int = 3) -> list[float]:
    """Seconds per token of ``rounds`` rounds of ``steps`` greedy steps (no host syncs inside)."""
    import mlx.core as mx

    token = mx.array([[1234]], dtype=mx.int32)

    def run(n: int) -> tuple[float, Any]:
        nonlocal token
        out = []
        mx.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            logits = model(token, cache=cache)
            token = mx.argmax(logits[:, -1, :], axis=-1)[:, None].astype(mx.int32)
            mx.async_eval(token, *cache.arrays())
            out.append(token)
        mx.eval(out)
        mx.synchronize()
        return (time.perf_counter() - t0) / n, out

    run(warmup)
    return [run(steps)[0] for _ in range(rounds)]


def time_prefill(model: Any, prompt: Sequence[int], chunk: int, cache: Any = None) -> float:
    """Seconds to prefill ``prompt`` in ``chunk``-token calls (into ``cache`` or a fresh one)."""
    import mlx.core as mx

    cache = cache if cache is not None else model.make_cache()
    mx.synchronize()
    t0 = time.perf_counter()
    last = model.prefill(mx.array([list(prompt)]), cache, chunk_size=chunk)
    mx.eval(last)
    mx.synchronize()
    return time.perf_counter() - t0


def prompt_of(n: int, vocab: int, seed: int = 0) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).integers(1000, vocab, n).tolist()
