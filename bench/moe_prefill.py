"""CPU prefill of one MoE layer's routed experts: sorted gather_mm vs grouping per expert.

The mid-size bench shape (64 experts, hidden 1024, ff 512, 6 per token) at 256
tokens, float32 on this CPU: MLX ``gather_mm`` with sorted rows (what the GPU
path runs), the per-expert grouping the CPU prefill uses
(``moe.routed_experts(host_grouping=True)``), and PyTorch's expert loop (what
the transformers reference does) as the same run's baseline. Prints one JSON line.

    python bench/moe_prefill.py
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_ms(fn: Callable[[], Any], reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main() -> None:
    __import__("local_engine")  # before mlx: it points MLX at the machine's BLAS
    import mlx.core as mx
    import numpy as np
    import torch

    from local_engine.model.moe import routed_experts
    from local_engine.model.weights import ExpertWeights, dense_expert_stack

    experts, hidden, ff, tokens, k = 64, 1024, 512, 256, 6
    mx.set_default_device(mx.cpu)
    gate_up = mx.random.normal((experts, 2 * ff, hidden), key=mx.random.key(0)) * 0.02
    down = mx.random.normal((experts, hidden, ff), key=mx.random.key(1)) * 0.02
    ex = ExpertWeights(dense_expert_stack(gate_up), dense_expert_stack(down), experts, ff, hidden)
    rng = np.random.default_rng(0)
    picks = np.stack([rng.choice(experts, k, replace=False) for _ in range(tokens)])
    idx = mx.array(picks.astype(np.uint32))
    x = mx.random.normal((tokens, hidden), key=mx.random.key(2))
    w = mx.full((tokens, k), 1.0 / k)
    mx.eval(ex.gate_up, ex.down, x)

    gathered = best_ms(lambda: mx.eval(routed_experts(x, idx, w, ex, 7.0)))
    grouped = best_ms(lambda: mx.eval(routed_experts(x, idx, w, ex, 7.0, host_grouping=True)))
    a = routed_experts(x, idx, w, ex, 7.0)
    b = routed_experts(x, idx, w, ex, 7.0, host_grouping=True)
    delta = float(mx.abs(a - b).max())

    torch.set_num_threads(2)
    tg, td = torch.from_numpy(np.array(gate_up)), torch.from_numpy(np.array(down))
    tx, ti = torch.from_numpy(np.array(x)), torch.from_numpy(picks.astype(np.int64))

    def torch_loop() -> None:
        out = torch.zeros_like(tx)
        for e in range(experts):
            _, tok = torch.where((ti == e).T)
            if len(tok):
                g, u = torch.nn.functional.linear(tx[tok], tg[e]).chunk(2, -1)
                h = torch.nn.functional.silu(g) * u
                out.index_add_(0, tok, torch.nn.functional.linear(h, td[e]))

    reference = best_ms(torch_loop)
    print(
        json.dumps(
            {
                "bench": "moe_prefill",
                "tokens": tokens,
                "experts": experts,
                "gather_mm_sorted_ms": gathered,
                "host_grouped_ms": grouped,
                "torch_expert_loop_ms": reference,
                "grouped_speedup_vs_gather": gathered / grouped,
                "grouped_vs_torch": reference / grouped,
                "max_abs_delta": delta,
            }
        )
    )


if __name__ == "__main__":
    main()
