"""GPU correctness: float32 logits on the GPU against the CPU engine, same weights.

The CPU engine matches the transformers reference to ~5e-6 (tests/local_engine/
test_parity.py); CI has no GPU, so this script is that check for the GPU path,
run on the device machine. A tiny random model (4 layers: sliding, CSA, HCA)
prefills 250 tokens and decodes 50, on the CPU, on the GPU with the plain MLX ops
(compiled, GPU layout) and on the GPU with the fused mHC kernels; prints one JSON
line with the largest |delta| of each pair and per-position medians.

    NVIDIA_TF32_OVERRIDE=0 python bench/gpu_parity.py   # exact float32 matmuls on CUDA
    python bench/gpu_parity.py --q2                     # the q2 check (own process)

Without the override, MLX's CUDA float32 matmuls run as TF32 (~3e-4 relative,
measured here by ``fp32_matmul_gpu_vs_cpu_rel``), and routing decisions can flip.

``q2``: the same tiny config in the q2 recipe's exact layout (affine 2-bit experts,
mxfp8 attention and shared expert, affine 8-bit head; random_device.py), bf16, run
on the GPU and on the CPU from the same arrays: the share of positions whose top-1
token agrees, and the largest |delta| against the logits' scale. bf16 rounding
differs between the backends' kernels, so these are not zero; a broken quantized
kernel shows as agreement far under 1 and deltas of the logits' own size.

The mHC kernels' self-check (``hc_self_check``) is printed too: the kernels' and the
MLX ops' relative differences from a float64 host reference, at float32 and bf16.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import mlx.core as mx
    import numpy as np

    from local_engine.checkpoint.random_device import random_weights
    from local_engine.checkpoint.random_weights import preset_config
    from local_engine.model.transformer import Model

    cfg = preset_config("tiny", num_layers=4)
    ids = mx.array([list(range(100, 400))])
    mx.set_default_device(mx.cpu)
    weights = random_weights(cfg, 0, dtype=mx.float32, dense_format="float", expert_format="float")

    def logits(device: Any, fused: bool | None) -> tuple[np.ndarray, bool]:
        mx.set_default_device(device)
        model = Model(cfg, weights, dtype=mx.float32, compile=True, fused_hc=fused, layout="gpu")
        cache = model.make_cache()
        steps = [model(ids[:, :250], cache=cache)]
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(250, 300)]
        return np.array(mx.concatenate(steps, axis=1))[0], model.fused_hc

    if "--q2" in sys.argv[1:]:
        # Its own process: a CUDA fault there must not take the float32 check with it.
        print(json.dumps({"bench": "gpu_parity", "q2_bf16_gpu_vs_cpu": q2_check(cfg, ids)}))
        return
    cpu, _ = logits(mx.cpu, False)
    plain, _ = logits(mx.gpu, False)
    fused, fused_on = logits(mx.gpu, None)
    x = mx.random.normal((256, 256), key=mx.random.key(0))
    mx.set_default_device(mx.cpu)
    on_cpu = np.array(x @ x.T)
    mx.set_default_device(mx.gpu)
    on_gpu = np.array(x @ x.T)

    def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        per_position = np.abs(a - b).max(axis=-1)
        return {
            "max_abs_delta": float(per_position.max()),
            "median": float(np.median(per_position)),
        }

    print(
        json.dumps(
            {
                "bench": "gpu_parity",
                "device": str(mx.default_device()),
                "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE"),
                "fused_hc_ready": fused_on,
                "positions": int(cpu.shape[0]),
                "logit_scale": float(np.abs(cpu).max()),
                "gpu_plain_vs_cpu": compare(plain, cpu),
                "gpu_fused_vs_cpu": compare(fused, cpu),
                "gpu_fused_vs_gpu_plain": compare(fused, plain),
                "fp32_matmul_gpu_vs_cpu_rel": float(
                    np.abs(on_gpu - on_cpu).max() / np.abs(on_cpu).max()
                ),
                "hc_self_check": hc_reports(),
            }
        )
    )


def q2_check(cfg: Any, ids: Any) -> dict[str, float]:
    """bf16 logits of a q2-layout model on the GPU against the same model on the CPU."""
    import mlx.core as mx
    import numpy as np

    from local_engine.checkpoint.random_device import random_weights
    from local_engine.checkpoint.recipes import load_recipe
    from local_engine.model.transformer import Model

    mx.set_default_device(mx.cpu)
    weights = random_weights(cfg, 5, dtype=mx.bfloat16, recipe=load_recipe("q2"))
    out = {}
    # The CPU runs the same codes and scales in float32 (bf16 -> fp32 is exact): the
    # reference, and ~10x faster there than bf16 activations.
    for name, device, dt in (("cpu", mx.cpu, mx.float32), ("gpu", mx.gpu, mx.bfloat16)):
        mx.set_default_device(device)
        w = weights if dt == mx.bfloat16 else as_float32(weights)
        model = Model(cfg, w, dtype=dt)  # CPU: decode steps compiled only
        cache = model.make_cache()
        steps = [model(ids[:, :250], cache=cache)]
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(250, 300)]
        out[name] = np.array(mx.concatenate(steps, axis=1).astype(mx.float32))[0]
    gpu, cpu = out["gpu"], out["cpu"]
    return {
        "positions": int(cpu.shape[0]),
        "cpu_dtype": "float32 (same codes and scales)",
        "top1_agreement": float((gpu.argmax(-1) == cpu.argmax(-1)).mean()),
        "max_abs_delta": float(np.abs(gpu - cpu).max()),
        "median_abs_delta": float(np.median(np.abs(gpu - cpu).max(axis=-1))),
        "logit_scale": float(np.abs(cpu).max()),
    }


def as_float32(obj: Any) -> Any:
    """The same weights with every bf16 array (scales and biases included) in float32."""
    from dataclasses import fields, is_dataclass, replace

    import mlx.core as mx

    if isinstance(obj, mx.array):
        return obj.astype(mx.float32) if obj.dtype == mx.bfloat16 else obj
    if isinstance(obj, tuple):
        return tuple(as_float32(v) for v in obj)
    if is_dataclass(obj):
        return replace(obj, **{f.name: as_float32(getattr(obj, f.name)) for f in fields(obj)})
    return obj


def hc_reports() -> dict[str, Any]:
    import mlx.core as mx

    from local_engine.model.hyper_connections import gpu_backend, self_check_report

    mx.set_default_device(mx.gpu)
    if gpu_backend() is None:
        return {"skipped": "no CUDA or Metal default device"}
    return {str(dt): self_check_report(4, 20, 1e-6, 4096, dt) for dt in (mx.float32, mx.bfloat16)}


if __name__ == "__main__":
    main()
