"""Decode speed of the demo model (SmolLM2-135M-Instruct GGUF) on this CPU: one JSON line.

Each weight format runs in its own process (the format is chosen at load, once per
process): ``quantized`` keeps the file's 4-bit/8-bit weights for MLX's quantized kernels,
``float32`` expands them for BLAS. Each process answers a fixed chat prompt greedily for
``--tokens`` tokens (end-of-sentence ignored, so every run decodes the same count), ``--runs``
times after one warm-up; the median decode tok/s is reported, with the BLAS MLX used and
the machine's load average (the figure is only as good as the CPU was idle).

Needs the demo model: ``ds4router models pull demo`` (or ``--model PATH.gguf``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def measure(model: str, tokens: int, runs: int) -> dict[str, object]:
    import local_engine  # before mlx: the machine's OpenBLAS, where there is one
    from local_engine.cpu_blas import loaded_blas
    from local_engine.runtime.generate import Done, GenerationParams
    from local_engine.runtime.mlx_lm_engine import MlxLmEngine

    del local_engine
    engine = MlxLmEngine.load(model)
    # A stop id no token has: every run decodes exactly `tokens` tokens.
    params = GenerationParams(max_tokens=tokens, temperature=0.0)
    ids = engine.encode_messages(PROMPT, params)
    engine.eos_ids = ()
    engine.tokenizer.special = replace(engine.tokenizer.special, eos=-1)
    rates, prefill = [], []
    for i in range(runs + 1):
        done = [e for e in engine.generate_ids(ids, params) if isinstance(e, Done)][0]
        if i:  # the first run warms up
            rates.append(done.stats.decode_tok_s)
            prefill.append(done.stats.prefill_tok_s)
    return {
        "decode_tok_s": round(statistics.median(rates), 2),
        "decode_tok_s_runs": [round(r, 2) for r in rates],
        "prefill_tok_s": round(statistics.median(prefill), 1),
        "prompt_tokens": len(ids),
        "weight_bytes": engine.info().weight_bytes,
        "blas": loaded_blas() or "mlx bundled reference",
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the GGUF (default: the pulled demo)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.tokens, args.runs)))
        return
    model = args.model
    if model is None:
        from ds4router.demo_model import installed_demo

        found = installed_demo()
        if found is None:
            sys.exit("no demo model: run `ds4router models pull demo` first (or --model)")
        model = str(found)
    out: dict[str, object] = {
        "model": Path(model).name,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
    }
    for dtype in ("quantized", "float32"):
        env = {**os.environ, "DS4ROUTER_DEMO_DTYPE": dtype}
        argv = [sys.executable, __file__, "--child", dtype, "--model", model,
                "--tokens", str(args.tokens), "--runs", str(args.runs)]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        out[dtype] = json.loads(done.stdout.strip().splitlines()[-1])
    rates = {k: out[k]["decode_tok_s"] for k in ("quantized", "float32")}  # type: ignore[index]
    out["faster"] = max(rates, key=lambda k: rates[k])
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
