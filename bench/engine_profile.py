"""Where a decode step's time goes, piece by piece, at full-size layer dimensions.

Builds a few random full-size layers (one of each type: sliding, CSA, HCA) on the
device, prefills a prompt, then times each piece of one decode step per layer —
mHC + norm before attention, the attention projections, the attention core (cache
update, compressors, indexer, softmax), the output projection + mHC, and the MoE +
mHC — with a device sync between pieces, so each figure includes one launch
boundary. Also the whole step unsynchronised, for comparison. Where the device
runs the fused mHC kernel (local_engine/model/hyper_connections.py), everything is
measured twice in the same run, with and without it. Prints one JSON line.

    python bench/engine_profile.py --device gpu --recipe q2   # on the GPU machine
    python bench/engine_profile.py --device cpu --preset tiny   # a dry run here

Runs from any directory (it puts the repository on ``sys.path`` itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--preset", default="full-layer")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--recipe", default=None, help="q2 | q4: the recipe's exact layout")
    p.add_argument("--expert-format", default="mxfp4", choices=["mxfp4", "mxfp8", "float"])
    p.add_argument("--dense-format", default="mxfp8", choices=["mxfp8", "float"])
    p.add_argument(
        "--no-hc-kernel",
        dest="hc_kernel",
        action="store_false",
        help="skip the run with the fused mHC kernel (it runs where the device supports it)",
    )
    args = p.parse_args()

    import mlx.core as mx

    from bench.gpu_bench import build_weights
    from local_engine.checkpoint.random_weights import preset_config
    from local_engine.model.hyper_connections import fused_kernel_ready, fused_weights, mix_weights
    from local_engine.model.transformer import Model

    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    cfg = preset_config(args.preset, num_layers=args.layers)
    weights = build_weights(cfg, args.recipe, args.dense_format, args.expert_format)
    variants = [False] + ([True] if args.hc_kernel and fused_kernel_ready(**hc_kw(cfg)) else [])
    runs = {}
    last_logits = {}
    for fused in variants:
        model = Model(cfg, weights, dtype=mx.bfloat16, compile=True, fused_hc=fused)
        runs["fused_hc" if fused else "mlx_ops_hc"], last_logits[fused] = profile(model, cfg, args)
    result: dict[str, Any] = {
        "bench": "engine_profile",
        "device": args.device,
        "device_name": str(mx.default_device()),
        "preset": args.preset,
        "layers": args.layers,
        "layer_types": list(cfg.layer_types),
        "recipe": args.recipe,
        "expert_format": None if args.recipe else args.expert_format,
        "dense_format": args.dense_format,
        "prompt_tokens": args.prompt,
        "runs": runs,
    }
    if True in last_logits:
        mix = mx.random.normal((args.prompt, (2 + cfg.hc_mult) * cfg.hc_mult), key=mx.random.key(3))
        lw = weights.layers[0].hc_attn
        pairs = zip(
            mix_weights(mix, lw.base, lw.scale, **hc_kw(cfg)),
            fused_weights(mix, lw.base, lw.scale, **hc_kw(cfg)),
            strict=True,
        )
        result["fused_vs_ops_mhc_weights_max_abs_delta"] = max(
            float(mx.abs(a - b).max()) for a, b in pairs
        )
        # bf16 activations: rounding differences grow through the layers.
        result["fused_vs_ops_last_logits_max_abs_delta_bf16"] = float(
            mx.abs(last_logits[True] - last_logits[False]).max()
        )
        result["fused_decode_speedup"] = (
            runs["mlx_ops_hc"]["decode_step_ms_median"] / runs["fused_hc"]["decode_step_ms_median"]
        )
    print(json.dumps(result))


def hc_kw(cfg: Any) -> dict[str, Any]:
    return {"hc": cfg.hc_mult, "sinkhorn_iters": cfg.hc_sinkhorn_iters, "hc_eps": cfg.hc_eps}


def profile(model: Any, cfg: Any, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Whole decode steps, then synced pieces per layer; and the prefill's last logits."""
    import mlx.core as mx

    from local_engine.model.attention import attention_core

    cache = model.make_cache()
    prompt = mx.array([list(range(1000, 1000 + args.prompt))])
    last = model.prefill(prompt, cache, chunk_size=args.prompt)
    mx.eval(last)
    token = mx.array([[1234]], dtype=mx.int32)

    def step_unsynced() -> float:
        t0 = time.perf_counter()
        logits = model(token, cache=cache)
        mx.eval(logits, *cache.arrays())
        return time.perf_counter() - t0

    for _ in range(3):
        step_unsynced()
    whole = [step_unsynced() for _ in range(args.steps)]

    pieces = ["pre_attn", "attn_in", "attn_core", "attn_out_pre_ffn", "ffn_post"]
    times: dict[int, dict[str, list[float]]] = {
        i: {k: [] for k in pieces} for i in range(args.layers)
    }

    def timed(bucket: list[float], fn: Any, *a: Any) -> Any:
        mx.synchronize()
        t0 = time.perf_counter()
        out = fn(*a)
        mx.eval(out)
        mx.synchronize()
        bucket.append(time.perf_counter() - t0)
        return out

    ids = token.reshape(-1)
    for step in range(args.steps + 3):
        h = model._embed(ids)
        streams = mx.broadcast_to(h[:, None, :], (1, cfg.hc_mult, cfg.hidden_size))
        for i, lw in enumerate(model.weights.layers):
            prog = model._programs[i]
            layer_cache = cache[i]
            offset = mx.array(layer_cache.tokens, dtype=mx.int32)
            t = times[i] if step >= 3 else {k: [] for k in pieces}
            post, comb, x = timed(t["pre_attn"], prog.pre_attn, streams)
            q_res, q, kv = timed(t["attn_in"], prog.attn_in, x, offset)
            out = timed(
                t["attn_core"],
                lambda x=x, q_res=q_res, q=q, kv=kv, lw=lw, lc=layer_cache, prog=prog: (
                    attention_core(
                        x, q_res, q, kv, lw.attn, lc, prog.rope, model._shape, model.graph, None
                    )
                ),
            )
            streams, post, comb, x = timed(
                t["attn_out_pre_ffn"], prog.attn_out_pre_ffn, streams, out, offset, post, comb
            )
            streams = timed(t["ffn_post"], prog.ffn_post, streams, x, ids, post, comb)
        mx.eval(*cache.arrays())

    per_layer = {
        f"{i}:{cfg.layer_types[i]}": {k: round(statistics.median(v) * 1e3, 4) for k, v in t.items()}
        for i, t in times.items()
    }
    for row in per_layer.values():
        row["sum_ms"] = round(sum(row.values()), 4)
    return {
        "fused_hc": model.fused_hc,
        "decode_step_ms_median": round(statistics.median(whole) * 1e3, 4),
        "decode_step_ms_per_layer": round(statistics.median(whole) * 1e3 / args.layers, 4),
        "synced_pieces_ms_per_layer": per_layer,
    }, last[0, -1].astype(mx.float32)


if __name__ == "__main__":
    main()
