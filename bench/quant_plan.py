"""Check ``engine plan`` against a real conversion of full-size layers; prints one JSON object.

Writes a random checkpoint in the official layout with DeepSeek V4 Flash's real
dimensions (hidden 4096, 256 experts of 2048, 64 heads x 512, vocabulary
129280) and one layer of each kind the 43-layer model has: sliding + hash MoE,
CSA + hash MoE, CSA + scored MoE, HCA + scored MoE. Experts are FP4 (random
codes, power-of-two scales), projections FP8, the rest bf16/f32, generated and
written a shard at a time (never a whole layer of bf16 experts in memory).

Then ``ds4router engine convert`` (a subprocess, so its peak memory is its own)
converts it to the recipe, and the bench reads the bytes it wrote, per
component and per layer, from the shard headers and the files:

* ``measured_vs_plan``: the converted tensor bytes against ``memory_plan`` for
  the same 4-layer config;
* ``full_model``: the measured layers scaled to Flash's schedule (2 sliding-hash,
  1 CSA-hash, 20 CSA, 20 HCA) plus the measured embedding/head/..., against the
  plan for ``deepseek-v4-flash``;
* optionally (``--load``) the converted model loaded at bf16: resident bytes
  and bytes read per token against the plan, and one 4-token forward pass
  (the loader peaks near 15 GB of RAM here).

Needs ~27 GB of disk (16 GB source, 10 GB converted) and ~6 minutes on 2 cores.
Run: ``python bench/quant_plan.py [--recipe q2] [--workdir DIR] [--keep] [--load]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from local_engine.checkpoint.names import parse_name  # noqa: E402
from local_engine.checkpoint.random_weights import official_config  # noqa: E402
from local_engine.checkpoint.recipes import component_of, load_recipe  # noqa: E402
from local_engine.checkpoint.safetensors import list_shards, read_header, write_safetensors  # noqa: E402
from local_engine.model.config import CSA, HASH_MOE, HCA, ModelConfig, config_from_dict  # noqa: E402

# Flash's per-layer variants: (compress ratio, hash MoE) -> layers of that kind in the model.
FLASH_COUNTS = {(0, True): 2, (4, True): 1, (4, False): 20, (128, False): 20}
RATIOS = [0, 4, 4, 128]  # one layer of each variant, hash MoE on the first two
SHARD_BYTES = 1 << 30


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }


def _bf16(a: np.ndarray) -> np.ndarray:
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _tensors(cfg: ModelConfig, seed: int) -> Iterator[tuple[str, str, np.ndarray]]:
    """Official names and encodings, with random codes (fast) instead of encoded normals."""
    rng = np.random.default_rng(seed)
    d, hd, h = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads
    inter, hc = cfg.moe_intermediate_size, cfg.hc_mult
    mix = (2 + hc) * hc

    def normal_bf16(shape: tuple[int, ...], std: float, center: float) -> np.ndarray:
        """bf16 bits of N(center, std), generated in 16M-value slices (bounded memory)."""
        out = np.empty(shape, dtype=np.uint16)
        flat = out.reshape(-1)
        step = 1 << 24
        for s in range(0, flat.size, step):
            n = min(step, flat.size - s)
            flat[s : s + n] = _bf16(center + rng.standard_normal(n, dtype=np.float32) * std)
        return out

    def bf16(name: str, shape: tuple[int, ...], std: float, center: float = 0.0):
        return name, "BF16", normal_bf16(shape, std, center)

    def f32(name: str, shape: tuple[int, ...], std: float, center: float = 0.0):
        values = center + rng.standard_normal(shape, dtype=np.float32) * std
        return name, "F32", values.astype(np.float32)

    def e8m0(shape: tuple[int, ...], target: float, code_rms: float) -> np.ndarray:
        exp = int(math.floor(math.log2(target / code_rms)))
        return np.full(shape, 127 + exp, dtype=np.uint8)

    def fp8(name: str, out: int, inp: int):
        codes = rng.integers(0, 256, (out, inp), dtype=np.uint8)
        codes[(codes & 0x7F) == 0x7F] ^= 1  # e4m3 NaN codes
        yield name + ".weight", "F8_E4M3", codes
        bo, bi = -(-out // 128), -(-inp // 128)
        yield name + ".scale", "F8_E8M0", e8m0((bo, bi), 1 / math.sqrt(inp), 150.0)

    def fp4(name: str, out: int, inp: int):
        yield name + ".weight", "I8", rng.integers(-128, 128, (out, inp // 2), dtype=np.int8)
        yield name + ".scale", "F8_E8M0", e8m0((out, inp // 32), 1 / math.sqrt(inp), 2.93)

    yield bf16("embed.weight", (cfg.vocab_size, d), 1.0)
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        yield bf16(p + "attn_norm.weight", (d,), 0.1, 1.0)
        yield bf16(p + "ffn_norm.weight", (d,), 0.1, 1.0)
        for site in ("attn", "ffn"):
            yield f32(p + f"hc_{site}_fn", (mix, hc * d), 0.05)
            yield f32(p + f"hc_{site}_base", (mix,), 0.5)
            yield f32(p + f"hc_{site}_scale", (3,), 0.1, 1.0)
        yield from fp8(p + "attn.wq_a", cfg.q_lora_rank, d)
        yield bf16(p + "attn.q_norm.weight", (cfg.q_lora_rank,), 0.1, 1.0)
        yield from fp8(p + "attn.wq_b", h * hd, cfg.q_lora_rank)
        yield from fp8(p + "attn.wkv", hd, d)
        yield bf16(p + "attn.kv_norm.weight", (hd,), 0.1, 1.0)
        yield from fp8(p + "attn.wo_a", cfg.o_groups * cfg.o_lora_rank, h * hd // cfg.o_groups)
        yield from fp8(p + "attn.wo_b", d, cfg.o_groups * cfg.o_lora_rank)
        yield f32(p + "attn.attn_sink", (h,), 1.0)
        kind = cfg.layer_types[i]
        if kind in (CSA, HCA):
            width = hd * (2 if kind == CSA else 1)
            c = p + "attn.compressor."
            yield bf16(c + "wkv.weight", (width, d), d**-0.5)
            yield bf16(c + "wgate.weight", (width, d), d**-0.5)
            yield f32(c + "ape", (cfg.compress_ratio(i), width), 0.5)
            yield bf16(c + "norm.weight", (hd,), 0.1, 1.0)
        if kind == CSA:
            ihd, x = cfg.index_head_dim, p + "attn.indexer."
            yield from fp8(x + "wq_b", cfg.index_n_heads * ihd, cfg.q_lora_rank)
            yield bf16(x + "weights_proj.weight", (cfg.index_n_heads, d), d**-0.5)
            yield bf16(x + "compressor.wkv.weight", (2 * ihd, d), d**-0.5)
            yield bf16(x + "compressor.wgate.weight", (2 * ihd, d), d**-0.5)
            yield f32(x + "compressor.ape", (cfg.csa_ratio, 2 * ihd), 0.5)
            yield bf16(x + "compressor.norm.weight", (ihd,), 0.1, 1.0)
        f = p + "ffn."
        yield bf16(f + "gate.weight", (cfg.n_routed_experts, d), d**-0.5)
        if cfg.mlp_layer_types[i] == HASH_MOE:
            e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
            base = rng.integers(0, e, (cfg.vocab_size, 1))
            yield f + "gate.tid2eid", "I32", ((base + np.arange(k)) % e).astype(np.int32)
        else:
            yield f32(f + "gate.bias", (cfg.n_routed_experts,), 0.1)
        for ex in range(cfg.n_routed_experts):
            yield from fp4(f + f"experts.{ex}.w1", inter, d)
            yield from fp4(f + f"experts.{ex}.w2", d, inter)
            yield from fp4(f + f"experts.{ex}.w3", inter, d)
        yield from fp8(f + "shared_experts.w1", inter, d)
        yield from fp8(f + "shared_experts.w2", d, inter)
        yield from fp8(f + "shared_experts.w3", inter, d)
    yield bf16("norm.weight", (d,), 0.1, 1.0)
    yield f32("hc_head_fn", (hc, hc * d), 0.05)
    yield f32("hc_head_base", (hc,), 0.5)
    yield f32("hc_head_scale", (1,), 0.1, 1.0)
    yield bf16("head.weight", (cfg.vocab_size, d), d**-0.5)


def write_source(out: Path, seed: int) -> tuple[ModelConfig, int]:
    """The 4-layer full-size source, streamed into ~1 GB shards; returns (config, bytes)."""
    raw = official_config("full-layer", num_layers=len(RATIOS), seed=seed)
    raw["compress_ratios"] = RATIOS + [0]
    raw["num_hash_layers"] = 2
    cfg = config_from_dict(raw)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    shard: dict[str, tuple[str, np.ndarray]] = {}
    size = total = count = 0

    def flush() -> None:
        nonlocal shard, size, count
        count += 1
        write_safetensors(out / f"model-{count:05d}.safetensors", shard, {"format": "pt"})
        shard, size = {}, 0

    for name, dtype, arr in _tensors(cfg, seed):
        if shard and size + arr.nbytes > SHARD_BYTES:
            flush()
        shard[name] = (dtype, arr)
        size += arr.nbytes
        total += arr.nbytes
    flush()
    return cfg, total


def measured_bytes(model_dir: Path) -> dict[str, Any]:
    """Tensor bytes by component and by layer, from the converted shards' headers."""
    by_component: dict[str, int] = {}
    by_layer: dict[str, int] = {}
    by_layer_component: dict[str, dict[str, int]] = {}
    tensor_bytes = 0
    for shard in list_shards(model_dir):
        for name, info in read_header(shard)[0].items():
            parsed = parse_name(name)
            assert parsed is not None
            n = info.end - info.start
            component = component_of(parsed.path)
            tensor_bytes += n
            by_component[component] = by_component.get(component, 0) + n
            where = str(parsed.layer) if parsed.layer is not None else "top"
            by_layer[where] = by_layer.get(where, 0) + n
            per = by_layer_component.setdefault(where, {})
            per[component] = per.get(component, 0) + n
    files = sum(p.stat().st_size for p in list_shards(model_dir))
    return {
        "tensor_bytes": tensor_bytes,
        "file_bytes": files,
        "by_component": by_component,
        "by_layer": by_layer,
        "by_layer_component": by_layer_component,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="q2")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the checkpoints.")
    parser.add_argument("--load", action="store_true", help="Also load the converted model.")
    args = parser.parse_args()

    from local_engine.checkpoint.plan import memory_plan, preset_model_config

    work = args.workdir or Path(tempfile.mkdtemp(prefix="quant_plan_"))
    src, dst = work / "src", work / f"dst-{args.recipe}"
    result: dict[str, Any] = {"bench": "quant_plan", "recipe": args.recipe, "machine": machine()}
    try:
        t0 = time.perf_counter()
        cfg, source_bytes = write_source(src, args.seed)
        result["source"] = {
            "layers": [
                f"{t}/{m}" for t, m in zip(cfg.layer_types, cfg.mlp_layer_types, strict=True)
            ],
            "bytes": source_bytes,
            "write_s": round(time.perf_counter() - t0, 1),
        }
        t0 = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from ds4router import cli;"
                " cli.SUBCOMMANDS.setdefault('engine', ('ds4router.commands.engine_cmd', ''));"
                " cli.main(sys.argv[1:])",
                "engine",
                "convert",
                str(src),
                str(dst),
                "--recipe",
                args.recipe,
                "--json",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if done.returncode != 0:
            raise SystemExit(f"convert failed: {done.stderr.strip()}")
        result["convert"] = json.loads(done.stdout)
        result["convert"]["wall_s"] = round(time.perf_counter() - t0, 1)
        recipe = load_recipe(args.recipe)
        measured = measured_bytes(dst)
        plan = memory_plan(cfg, recipe, preset="4 full-size layers")
        plan_by_component = {c.component: c.stored_bytes for c in plan.components}
        result["measured_vs_plan"] = {
            "measured_tensor_bytes": measured["tensor_bytes"],
            "measured_file_bytes": measured["file_bytes"],
            "plan_total_weight_bytes": plan.total_weight_bytes,
            "ratio_tensor": measured["tensor_bytes"] / plan.total_weight_bytes,
            "ratio_file": measured["file_bytes"] / plan.total_weight_bytes,
            "by_component": {
                c: {"measured": measured["by_component"].get(c, 0), "plan": b}
                for c, b in plan_by_component.items()
            },
        }
        # Scale the measured layers to Flash's 43-layer schedule.
        variants = {
            (cfg.compress_ratio(i), cfg.mlp_layer_types[i] == HASH_MOE): str(i)
            for i in range(cfg.num_hidden_layers)
        }
        full = measured["by_layer"]["top"] + sum(
            n * measured["by_layer"][variants[key]] for key, n in FLASH_COUNTS.items()
        )
        flash = preset_model_config("deepseek-v4-flash")
        flash_plan = memory_plan(flash, recipe, preset="deepseek-v4-flash")
        result["full_model"] = {
            "measured_extrapolated_weight_bytes": full,
            "plan_total_weight_bytes": flash_plan.total_weight_bytes,
            "ratio": full / flash_plan.total_weight_bytes,
            "plan_bytes_read_per_token": flash_plan.bytes_read_per_token,
            "plan_resident_weight_bytes": flash_plan.resident_weight_bytes,
            "plan_fits_128gb": flash_plan.fits,
        }
        if args.load:
            import mlx.core as mx

            from local_engine.checkpoint.loader import load_model

            t0 = time.perf_counter()
            model = load_model(dst, dtype=mx.bfloat16)
            resident = sum(model.weight_bytes_by_dtype().values())
            result["loaded"] = {
                "load_s": round(time.perf_counter() - t0, 1),
                "resident_weight_bytes": resident,
                "plan_resident_weight_bytes": plan.resident_weight_bytes,
                "ratio_resident": resident / plan.resident_weight_bytes,
                "bytes_read_per_token": model.weight_bytes_per_token(),
                "plan_bytes_read_per_token": plan.bytes_read_per_token,
                "ratio_per_token": model.weight_bytes_per_token() / plan.bytes_read_per_token,
            }
            t0 = time.perf_counter()
            logits = model(mx.array([[0, 1, 2, 3]], dtype=mx.int32))
            mx.eval(logits)
            result["loaded"]["forward_4_tokens_s"] = round(time.perf_counter() - t0, 2)
            result["loaded"]["logits_finite"] = bool(mx.isfinite(logits).all().item())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
