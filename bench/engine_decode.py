"""Decode and prefill speed of the MLX engine; prints one JSON object.

CPU (default): a mid-size DeepSeek V4 config (hidden 1024, 8 layers, 64
experts, ff 512, the full 129280 vocabulary) in float32. The transformers
reference is built with random weights (zeros randomized), the same weights go
into the MLX engine, and both prefill the same prompt and decode the same
tokens greedily with their caches. Reports tok/s of each, their ratio
(``decode_speedup_vs_reference``), the logits' agreement after prefill, and the
weight bytes one decoded token reads.

GPU (``--device gpu``, on the device machine with mlx-cuda; ``gpu-dry`` runs the
same path on this CPU): Flash's real layer sizes with random weights generated
on the GPU in a recipe's exact layout (``--recipe q2|q4``; without it the older
mxfp4 experts / mxfp8 projections mix), decode and prefill per ``--context``,
the bound from the card's copy bandwidth, and ``--ab`` variants: see
``bench/gpu_decode.py``.

Run: ``python bench/engine_decode.py`` (CPU) or
``python bench/engine_decode.py --device gpu --recipe q2 --layers 43``.

The reference runs in its own process (``--reference-worker``, driven over a pipe),
and the two engines' rounds alternate with idle gaps, never overlapping: in one
process, the spinning BLAS threads of one library slowed the other (reference
decode fell from ~12.3 to ~3.1 tok/s when MLX used OpenBLAS). The JSON also gives
the host's read bandwidth and ``bandwidth_bound_max_speedup``: decode reads every
active weight once per token, so that ratio is the most any engine could gain
over this reference on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_decode import add_gpu_arguments, run_gpu  # noqa: E402


def machine() -> dict[str, Any]:
    import mlx.core as mx

    from local_engine.cpu_blas import loaded_blas

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
        "cpu_blas": loaded_blas() or "bundled with mlx",
    }
    try:
        info["device_info"] = {
            k: v for k, v in mx.device_info().items() if isinstance(v, int | float | str)
        }
    except Exception:  # noqa: BLE001 - device_info is optional across mlx versions
        pass
    return info


def mid_size_spec(args: argparse.Namespace) -> dict[str, Any]:
    sliding, csa, hca = (
        "sliding_attention",
        "compressed_sparse_attention",
        "heavily_compressed_attention",
    )
    n = args.layers
    layer_types = [sliding if i < 2 else (csa if i % 2 == 0 else hca) for i in range(n)]
    return {
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "moe_intermediate_size": args.ff,
        "num_hidden_layers": n,
        "num_attention_heads": args.heads,
        "head_dim": 512,
        "partial_rotary_factor": 64 / 512,
        "q_lora_rank": args.hidden // 2,
        "o_groups": 4,
        "o_lora_rank": args.hidden // 4,
        "n_routed_experts": args.experts,
        "num_experts_per_tok": 6,
        "layer_types": layer_types,
        "mlp_layer_types": ["hash_moe" if i < 3 else "moe" for i in range(n)],
        "index_n_heads": 16,
        "index_head_dim": 128,
        "index_topk": 512,
        "sliding_window": 128,
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 65536,
            "beta_fast": 32,
            "beta_slow": 1,
        },
        "initializer_range": 0.05,
    }


def reference_model(args: argparse.Namespace) -> Any:
    """The transformers reference with seeded random weights (zeros randomized).

    Deterministic: the reference worker process builds the very same weights from
    ``args.seed`` (checked by the logits and tokens both sides report).
    """
    import torch
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    spec = mid_size_spec(args)
    torch.manual_seed(args.seed)
    ref = DeepseekV4ForCausalLM(DeepseekV4Config(**spec)).float().eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for name, p in list(ref.named_parameters()) + list(ref.named_buffers()):
            if name.endswith("tid2eid"):
                p.copy_(torch.argsort(torch.rand(p.shape[0], args.experts, generator=g), -1)[:, :6])
            elif name.endswith(("sinks", "position_bias", "e_score_correction_bias", "hc.base")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return ref


def engine_from_reference(ref: Any) -> Any:
    """The MLX engine on the reference's weights (copied tensor by tensor)."""
    import mlx.core as mx
    import torch

    from local_engine.checkpoint.loader import build_model
    from local_engine.checkpoint.safetensors import TensorInfo
    from local_engine.model.config import config_from_dict

    cfg = config_from_dict({"model_type": "deepseek_v4", **ref.config.to_dict()})
    state = ref.state_dict()
    names = [k for k in state if "inv_freq" not in k]

    def info(name: str) -> TensorInfo:
        t = state[name]
        dt = "F32" if t.dtype == torch.float32 else "I64"
        return TensorInfo(name, Path("<memory>"), dt, tuple(t.shape), 0, 0)

    def stream() -> Any:
        for name in names:
            yield info(name), state[name].numpy()

    return build_model(cfg, [info(n) for n in names], [stream()], dtype=mx.float32)


class MlxRunner:
    """Prefill once, then decode greedily in timed rounds (continuing the same cache)."""

    def __init__(self, model: Any, prompt: list[int]) -> None:
        import mlx.core as mx

        self.model = model
        self.cache = model.make_cache()
        t0 = time.perf_counter()
        logits = model.prefill(mx.array([prompt]), self.cache, chunk_size=len(prompt))
        mx.eval(logits)
        self.prefill_s = time.perf_counter() - t0
        self.prefill_logits = logits[0, -1]
        self.token = mx.argmax(logits[:, -1, :], axis=-1)[:, None].astype(mx.int32)
        self.tokens: list[int] = []

    def decode(self, steps: int) -> float:
        import mlx.core as mx

        out = []
        token = self.token
        t0 = time.perf_counter()
        for _ in range(steps):
            logits = self.model(token, cache=self.cache)
            token = mx.argmax(logits[:, -1, :], axis=-1)[:, None].astype(mx.int32)
            mx.async_eval(token, *self.cache.arrays())
            out.append(token)
        mx.eval(out)
        dt = time.perf_counter() - t0
        self.token = token
        self.tokens += [int(t.item()) for t in out]
        return dt / steps


class ReferenceRunner:
    """The transformers reference with its cache, same protocol as :class:`MlxRunner`."""

    def __init__(self, ref: Any, prompt: list[int]) -> None:
        import torch

        self.ref = ref
        with torch.no_grad():
            t0 = time.perf_counter()
            out = ref(torch.tensor([prompt]), use_cache=True)
            self.prefill_s = time.perf_counter() - t0
        self.prefill_logits = out.logits[0, -1].numpy()
        self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self.token = out.logits[:, -1, :].argmax(-1, keepdim=True)
        self.tokens: list[int] = []

    def decode(self, steps: int) -> float:
        import torch

        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(steps):
                out = self.ref(self.token, cache=self.cache, use_cache=True)
                self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
                self.token = out.logits[:, -1, :].argmax(-1, keepdim=True)
                self.tokens.append(int(self.token))
            return (time.perf_counter() - t0) / steps


SETTLE_S = 0.5  # idle time between rounds: lets either side's spinning BLAS threads sleep


def read_bandwidth(nbytes: int = 1 << 30, reps: int = 3) -> float:
    """Host memory read bandwidth (numpy sum over 1 GiB, best of ``reps``), bytes/s."""
    import numpy as np

    a = np.ones(nbytes // 4, dtype=np.float32)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best


class ReferenceProcess:
    """The reference in its own process, driven one round at a time over a pipe.

    Same machine, never at the same time as the MLX engine: in one process, the
    BLAS thread pools of the two libraries spin between calls and slowed whichever
    ran second (reference decode 12.3 -> 3.1 tok/s when MLX used OpenBLAS).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        import subprocess

        worker_args = [
            "--reference-worker",
            *("--seed", str(args.seed), "--layers", str(args.layers)),
            *("--hidden", str(args.hidden), "--experts", str(args.experts)),
            *("--ff", str(args.ff), "--heads", str(args.heads), "--vocab", str(args.vocab)),
            *("--prompt", str(args.prompt)),
        ]
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *worker_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self._reply()  # build, prefill: {"prefill_s", "prefill_logits", ...}

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"reference worker exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def decode(self, steps: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return float(self._reply()["s_per_token"])

    def close(self) -> list[int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("0\n")
        self.proc.stdin.flush()
        tokens = list(self._reply()["tokens"])
        self.proc.wait()
        return tokens


def reference_worker(args: argparse.Namespace) -> None:
    """The child side of :class:`ReferenceProcess`: one JSON line per request."""
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    prompt = np.random.default_rng(args.seed).integers(0, args.vocab, args.prompt).tolist()
    t0 = time.perf_counter()
    ref = reference_model(args)
    build_s = time.perf_counter() - t0
    runner = ReferenceRunner(ref, prompt)
    first = {
        "prefill_s": runner.prefill_s,
        "prefill_logits": runner.prefill_logits.tolist(),
        "build_s": build_s,
        "torch_threads": torch.get_num_threads(),
        "torch_blas": _torch_blas(),
    }
    print(json.dumps(first), flush=True)
    for line in sys.stdin:
        steps = int(line)
        if steps == 0:
            print(json.dumps({"tokens": runner.tokens}), flush=True)
            return
        print(json.dumps({"s_per_token": runner.decode(steps)}), flush=True)


def _torch_blas() -> str:
    import torch

    for part in torch.__config__.show().replace(",", "\n").splitlines():
        if "BLAS_INFO" in part:
            return part.split("=", 1)[-1].strip()
    return "unknown"


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    import statistics

    # local_engine before mlx: importing it points MLX at the machine's BLAS (cpu_blas).
    __import__("local_engine")
    import mlx.core as mx
    import numpy as np

    mx.set_default_device(mx.cpu)
    t0 = time.perf_counter()
    ref = reference_model(args)
    model = engine_from_reference(ref)
    del ref  # the worker process builds its own copy
    build_s = time.perf_counter() - t0
    prompt = np.random.default_rng(args.seed).integers(0, args.vocab, args.prompt).tolist()
    MlxRunner(model, prompt[:8]).decode(2)  # warm-up: allocator, first-call paths, decode JIT
    engine = MlxRunner(model, prompt)
    time.sleep(SETTLE_S)
    reference = ReferenceProcess(args)
    ref_logits = np.array(reference.ready["prefill_logits"], dtype=np.float32)
    delta = float(np.abs(np.array(engine.prefill_logits) - ref_logits).max())
    # Alternate the two engines' rounds: this shared machine's load changes over time.
    mlx_s, ref_s = [], []
    for _ in range(args.rounds):
        time.sleep(SETTLE_S)
        mlx_s.append(engine.decode(args.steps))
        time.sleep(SETTLE_S)
        ref_s.append(reference.decode(args.steps))
    ref_tokens = reference.close()
    ref_prefill_s = float(reference.ready["prefill_s"])
    bytes_tok = model.weight_bytes_per_token()
    bandwidth = read_bandwidth()
    best_mlx, best_ref = min(mlx_s), min(ref_s)
    med_mlx, med_ref = statistics.median(mlx_s), statistics.median(ref_s)
    return {
        "bench": "engine_decode",
        "device": "cpu",
        "dtype": "float32",
        "config": {k: v for k, v in mid_size_spec(args).items() if k != "rope_parameters"},
        "prompt_tokens": args.prompt,
        "decode_rounds": args.rounds,
        "decode_tokens_per_round": args.steps,
        "parameters": model.num_parameters(),
        "weight_bytes_by_dtype": model.weight_bytes_by_dtype(),
        "weight_bytes_per_decoded_token": bytes_tok,
        "mlx": {
            "prefill_s": engine.prefill_s,
            "prefill_tok_s": args.prompt / engine.prefill_s,
            "decode_tok_s_best": 1 / best_mlx,
            "decode_tok_s_median": 1 / med_mlx,
            "decode_s_per_token_rounds": mlx_s,
            "compile": model.compiled,
        },
        "reference_transformers": {
            "process": "separate",
            "prefill_s": ref_prefill_s,
            "prefill_tok_s": args.prompt / ref_prefill_s,
            "decode_tok_s_best": 1 / best_ref,
            "decode_tok_s_median": 1 / med_ref,
            "decode_s_per_token_rounds": ref_s,
            "torch_threads": reference.ready["torch_threads"],
            "torch_blas": reference.ready["torch_blas"],
        },
        "decode_speedup_vs_reference": best_ref / best_mlx,
        "decode_speedup_vs_reference_median": med_ref / med_mlx,
        "prefill_speedup_vs_reference": ref_prefill_s / engine.prefill_s,
        "prefill_last_logits_max_abs_delta": delta,
        "greedy_tokens_identical": engine.tokens == ref_tokens,
        "host_read_bandwidth_GBps": bandwidth / 1e9,
        "reference_weight_read_GBps": bytes_tok / best_ref / 1e9,
        "mlx_weight_read_GBps": bytes_tok / best_mlx / 1e9,
        # Decode reads every active weight once per token. Even at the full read
        # bandwidth measured here, no engine could beat this reference by more than:
        "bandwidth_bound_max_speedup": bandwidth * best_ref / bytes_tok,
        "build_s": build_s + float(reference.ready["build_s"]),
        "machine": machine(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "gpu", "gpu-dry"], default="cpu")
    p.add_argument("--preset", default="full-layer", help="GPU mode: random-weights preset")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--ff", type=int, default=512)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=129280)
    p.add_argument("--prompt", type=int, default=None, help="prompt tokens")
    p.add_argument("--steps", type=int, default=None, help="decoded tokens per round")
    p.add_argument("--rounds", type=int, default=4, help="timed decode rounds")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dense-format", default="mxfp8", choices=["mxfp8", "float"])
    p.add_argument("--expert-format", default="mxfp4", choices=["mxfp4", "mxfp8", "float"])
    p.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    add_gpu_arguments(p)
    args = p.parse_args()
    if args.reference_worker:
        args.layers = args.layers or 8
        args.prompt = args.prompt or 256
        reference_worker(args)
        return
    if args.device == "cpu":
        args.layers = args.layers or 8
        args.prompt = args.prompt or 256
        args.steps = args.steps or 8
        result = run_cpu(args)
    else:
        args.layers = args.layers or 43
        args.steps = args.steps or 32
        args.rounds = min(args.rounds, 3)
        result = run_gpu(args)
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
