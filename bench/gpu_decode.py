"""GPU mode of ``bench/engine_decode.py``: the recipe's real layout at Flash's sizes.

``python bench/engine_decode.py --device gpu --recipe q2 [--layers 43]
[--context 512,8192,32768]`` builds random weights in the recipe's exact layout
on the device (``Model.weight_bytes_per_token`` is checked against ``engine
plan``'s bytes read a token, printed side by side), then per context:

* decode: greedy steps after a synthetic decode state of that many tokens
  (random rows restored through the cache's snapshot API), tok/s, ms/token and
  ms/token/layer;
* prefill: a real chunked prefill of a ``context``-token prompt from empty while
  ``context <= --prefill-max``; beyond that the tail ``--prefill-tail`` tokens on
  top of a synthetic state (``prefill_tail_tok_s``): the rate at that depth;
* peak memory of that context.

The bound is the card's copy bandwidth (read + write counted, see
``gpu_bench.copy_bandwidth``) over the bytes read a token. ``--ab`` adds A/B
variants, each a model over the first ``--ab-layers`` layers of the same
weights, measured in the same process (``fused_hc``, ``expert_prefill``,
``prefill_chunk``). Partial results are written to ``--out`` after each stage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.gpu_bench import (
    build_weights,
    copy_bandwidth,
    log,
    prompt_of,
    sub_model,
    synthetic_cache,
    time_decode,
    time_prefill,
)

AB_VARIANTS = ("fused_hc", "expert_prefill", "prefill_chunk")


def smoke_checks() -> dict[str, str]:
    """Try the kernels the recipes need on this device; 'ok' or the error."""
    import mlx.core as mx

    from local_engine.model.weights import quantize

    results: dict[str, str] = {}

    def check(name: str, fn: Any) -> None:
        try:
            mx.eval(fn())
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on without it
            results[name] = f"{type(exc).__name__}: {exc}"[:300]

    x = mx.random.normal((2, 256)).astype(mx.bfloat16)
    idx = mx.array([[1, 5]], dtype=mx.uint32)
    for mode, bits in (("mxfp4", 4), ("affine", 2), ("affine", 4)):
        w = quantize(mx.random.normal((8, 64, 256)).astype(mx.bfloat16), mode=mode, bits=bits)
        check(
            f"gather_qmm_{mode}" + (str(bits) if mode == "affine" else ""),
            lambda w=w: mx.gather_qmm(
                x[:1, None, None, :],
                w.weight,
                w.scales,
                w.biases,
                rhs_indices=idx,
                transpose=True,
                group_size=w.group_size,
                bits=w.bits,
                mode=w.mode,
            ),
        )
    q = mx.random.normal((1, 64, 1, 512)).astype(mx.bfloat16)
    k = mx.random.normal((1, 1, 300, 512)).astype(mx.bfloat16)
    check(
        "sdpa_sinks_hd512",
        lambda: mx.fast.scaled_dot_product_attention(
            q, k, k, scale=512**-0.5, sinks=mx.zeros((64,), dtype=mx.bfloat16)
        ),
    )
    return results


def measure_context(model: Any, ctx: int, args: argparse.Namespace) -> dict[str, Any]:
    """Decode and prefill figures of ``model`` at one context length."""
    import mlx.core as mx

    cfg = model.config
    n = cfg.num_hidden_layers
    mx.reset_peak_memory()
    row: dict[str, Any] = {"context": ctx}
    if ctx <= args.prefill_max:
        s = time_prefill(model, prompt_of(ctx, cfg.vocab_size), args.prefill_chunk)
        row |= {"prefill_tokens": ctx, "prefill_s": s, "prefill_tok_s": ctx / s}
    else:
        tail = args.prefill_tail
        cache = synthetic_cache(model, ctx - tail)
        s = time_prefill(model, prompt_of(tail, cfg.vocab_size), args.prefill_chunk, cache)
        row |= {"prefill_tail_tokens": tail, "prefill_s": s, "prefill_tail_tok_s": tail / s}
    rounds = time_decode(model, synthetic_cache(model, ctx), args.steps, args.rounds)
    best = min(rounds)
    row |= {
        "decode_tok_s": 1 / best,
        "decode_ms_per_token": best * 1e3,
        "decode_ms_per_token_per_layer": best * 1e3 / n,
        "decode_ms_per_token_rounds": [r * 1e3 for r in rounds],
        "peak_memory_GB": mx.get_peak_memory() / 1e9,
    }
    return row


def warm_up(model: Any, args: argparse.Namespace) -> float:
    """Compile the decode and prefill-chunk graphs (the first call of each shape)."""
    import time

    t0 = time.perf_counter()
    time_prefill(model, prompt_of(args.prefill_chunk, model.config.vocab_size), args.prefill_chunk)
    time_decode(model, synthetic_cache(model, 512), 2, 1, warmup=1)
    return time.perf_counter() - t0


def ab_models(cfg: Any, weights: Any, args: argparse.Namespace) -> list[tuple[str, Any, int]]:
    """(label, model, prefill chunk) for every requested A/B variant, baseline first."""
    from local_engine.model.moe import ExpertPrefill

    n = args.ab_layers
    chunk = args.prefill_chunk
    out = [("baseline", sub_model(cfg, weights, n), chunk)]
    for name in args.ab:
        match name:
            case "fused_hc":
                out.append(("fused_hc=off", sub_model(cfg, weights, n, fused_hc=False), chunk))
            case "expert_prefill":
                for mode in (ExpertPrefill.HOST_QMM, ExpertPrefill.HOST_DEQUANT):
                    m = sub_model(cfg, weights, n, expert_prefill=mode)
                    out.append((f"expert_prefill={mode.value}", m, chunk))
            case "prefill_chunk":
                for size in (2048, 8192):
                    out.append((f"prefill_chunk={size}", sub_model(cfg, weights, n), size))
            case _:
                raise SystemExit(f"--ab: unknown variant {name!r}; choose from {AB_VARIANTS}")
    return out


def run_ab(cfg: Any, weights: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each variant's decode (512-token state) and prefill (``--ab-prompt`` tokens) figures."""
    rows = []
    prompt = prompt_of(args.ab_prompt, cfg.vocab_size)
    for label, model, chunk in ab_models(cfg, weights, args):
        time_prefill(model, prompt, chunk)  # compiles this variant's shapes
        prefill = min(time_prefill(model, prompt, chunk) for _ in range(2))
        rounds = time_decode(model, synthetic_cache(model, 512), args.steps, args.rounds)
        row = {
            "variant": label,
            "layers": args.ab_layers,
            "fused_hc": model.fused_hc,
            "prefill_chunk": chunk,
            "prefill_tok_s": args.ab_prompt / prefill,
            "decode_ms_per_token": min(rounds) * 1e3,
            "decode_ms_per_token_per_layer": min(rounds) * 1e3 / args.ab_layers,
        }
        log(f"A/B {row}")
        rows.append(row)
    return rows


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    import mlx.core as mx

    from local_engine.checkpoint.plan import memory_plan
    from local_engine.checkpoint.random_weights import preset_config
    from local_engine.checkpoint.recipes import load_recipe

    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    result: dict[str, Any] = {"bench": "engine_decode", "device": args.device}
    result["smoke_checks"] = smoke_checks()
    result["bandwidth"] = copy_bandwidth(args.copy_bytes)
    log(f"bandwidth {result['bandwidth']}")
    cfg = preset_config(args.preset, num_layers=args.layers)
    weights = build_weights(cfg, args.recipe, args.dense_format, args.expert_format)
    model = sub_model(cfg, weights, args.layers)
    bytes_tok = model.weight_bytes_per_token()
    bound = result["bandwidth"]["bound_Bps"]
    result |= {
        "recipe": args.recipe,
        "formats": None if args.recipe else [args.dense_format, args.expert_format],
        "preset": args.preset,
        "layers": args.layers,
        "weight_bytes_per_token": bytes_tok,
        "plan_bytes_read_per_token": (
            memory_plan(cfg, load_recipe(args.recipe)).bytes_read_per_token if args.recipe else None
        ),
        "resident_weight_GB": sum(model.weight_bytes_by_dtype().values()) / 1e9,
        "bound_tok_s": bound / bytes_tok,
        "fused_hc": model.fused_hc,
        "prefill_chunk": args.prefill_chunk,
        "contexts": [],
    }
    log(
        f"built {args.layers} layers; {bytes_tok} B/token; peak {mx.get_peak_memory() / 1e9:.1f} GB"
    )
    result["first_compile_s"] = warm_up(model, args)
    log(f"warm-up (compile) {result['first_compile_s']:.1f}s")
    for ctx in args.context:
        row = measure_context(model, ctx, args)
        row["fraction_of_bound"] = row["decode_tok_s"] / result["bound_tok_s"]
        result["contexts"].append(row)
        log(f"context {row}")
        write(args, result)
    del model
    if args.ab:
        result["ab"] = run_ab(cfg, weights, args)
    return result


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.out:
        Path(args.out).write_text(json.dumps(result) + "\n")


def add_gpu_arguments(p: argparse.ArgumentParser) -> None:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v]

    def names(text: str) -> list[str]:
        return [v for v in text.split(",") if v]

    g = p.add_argument_group("GPU mode")
    g.add_argument("--recipe", default=None, help="q2 | q4 | a recipe YAML: its exact layout")
    g.add_argument("--context", type=ints, default=[512, 8192, 32768])
    g.add_argument("--prefill-max", type=int, default=8192, help="longest real prefill")
    g.add_argument("--prefill-tail", type=int, default=2048)
    g.add_argument("--prefill-chunk", type=int, default=512)
    g.add_argument("--ab", type=names, default=[], help=f"A/B variants: {','.join(AB_VARIANTS)}")
    g.add_argument("--ab-layers", type=int, default=8)
    g.add_argument("--ab-prompt", type=int, default=4096)
    g.add_argument("--copy-bytes", type=int, default=4 << 30)
