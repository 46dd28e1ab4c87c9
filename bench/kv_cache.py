"""The KV cache on disk: time to first token, fresh prefill vs restore; prints one JSON object.

A mid-size random DeepSeek V4 config on this CPU in float32 (see ``CONFIG``: the tiny
preset's widths with Flash's 8-layer schedule -- 2 sliding, 3 CSA, 3 HCA layers -- and
wider attention, chosen so a 32k-token fresh prefill takes a few minutes here). For
prompts of 2k, 8k and 32k random token ids, through ``Engine.generate_ids`` (one sampled
token, temperature 0):

- ``fresh``: an empty cache directory; the prompt is prefilled (its snapshots are queued
  for the disk meanwhile -- their cost is in this TTFT, as a user would see it);
- ``restore_cold``: the same prompt again after the entry's pages were dropped from the
  page cache (``posix_fadvise(DONTNEED)`` on its file), so the read comes from the disk;
- ``restore_warm``: again, the file now in the page cache;
- ``restore_plus_128``: the prompt followed by 128 new tokens: restore, then prefill 128.

``resume_speedup_32k`` is fresh TTFT / cold-restore TTFT at 32k (the baseline, a plain
re-prefill, is measured in the same run). ``restore_gbps`` is entry bytes / restore time
(lookup, read, checksums, rebuilding the state). Disk bytes per cached token are the
growth of the prompt-end entry from 2k to 32k tokens, next to the architecture's count
(``values_per_token`` x 4 bytes); the full-size V4 Flash figures use the same accounting
(``state_nbytes``) in bf16.

Run: ``python bench/kv_cache.py`` (about 5 minutes here); ``--sizes 2048,8192`` for less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Overrides of the `tiny` preset: Flash's 8-layer schedule, 128-wide heads and 64-wide
# index keys (the tiny preset's are 64 and 32), top-128 selection.
CONFIG: dict[str, Any] = {
    "preset": "tiny",
    "num_layers": 8,
    "compress_ratios": [0, 0, 4, 128, 4, 128, 4, 128, 0],
    "head_dim": 128,
    "qk_rope_head_dim": 32,
    "index_head_dim": 64,
    "index_topk": 128,
}


def machine() -> dict[str, Any]:
    import mlx.core as mx

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
    }


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,8192,32768")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import numpy as np

    from local_engine.cache.kv_cache import state_nbytes, values_per_token
    from local_engine.checkpoint.random_weights import official_config, write_random_checkpoint
    from local_engine.model.config import config_from_dict
    from local_engine.runtime.engine import Engine
    from local_engine.runtime.generate import Done, GenerationParams

    work = Path(tempfile.mkdtemp(prefix="bench-kv-"))
    overrides = {k: v for k, v in CONFIG.items() if k not in ("preset", "num_layers")}
    model_dir = write_random_checkpoint(
        work / "model",
        preset=CONFIG["preset"],
        num_layers=CONFIG["num_layers"],
        seed=args.seed,
        **overrides,
    )
    engine = Engine.load(model_dir)
    cfg = engine.model.config
    kv = work / "kv"
    engine.use_kv_cache(kv)
    store = engine.prefix_cache.store if engine.prefix_cache else None
    assert store is not None
    params = GenerationParams(temperature=0.0, max_tokens=1)
    rng = np.random.default_rng(args.seed)

    def ttft(prompt: list[int]) -> tuple[float, Done]:
        done = list(engine.generate_ids(prompt, params))[-1]
        assert isinstance(done, Done)
        engine.flush_kv_cache()
        return done.stats.ttft_s, done

    runs: dict[str, Any] = {}
    entry_bytes: dict[int, int] = {}
    for n in sizes:
        prompt = rng.integers(2, 128000, size=n).astype(int).tolist()
        fresh_s, fresh = ttft(prompt)
        (entry,) = [e for e in store.entries() if e.tokens == n]
        entry_bytes[n] = entry.nbytes
        drop_from_page_cache(kv / entry.file)
        cold_s, cold = ttft(prompt)
        warm_s, warm = ttft(prompt)
        assert cold.stats.cached_prompt_tokens == warm.stats.cached_prompt_tokens == n
        assert cold.token_ids == warm.token_ids == fresh.token_ids
        extra = rng.integers(2, 128000, size=128).astype(int).tolist()
        plus_s, plus = ttft(prompt + extra)
        assert plus.stats.cached_prompt_tokens == n
        runs[str(n)] = {
            "ttft_fresh_s": round(fresh_s, 4),
            "fresh_prefill_tok_s": round(fresh.stats.prefill_tok_s, 1),
            "ttft_restore_cold_s": round(cold_s, 5),
            "ttft_restore_warm_s": round(warm_s, 5),
            "ttft_restore_plus_128_s": round(plus_s, 4),
            "kv_restore_cold_s": round(cold.stats.kv_restore_s, 5),
            "kv_restore_warm_s": round(warm.stats.kv_restore_s, 5),
            "entry_bytes": entry.nbytes,
            "state_bytes": state_nbytes(cfg, n, 4),
            "restore_gbps_cold": round(entry.nbytes / cold.stats.kv_restore_s / 1e9, 3),
            "restore_gbps_warm": round(entry.nbytes / warm.stats.kv_restore_s / 1e9, 3),
            "speedup_cold": round(fresh_s / cold_s, 1),
            "speedup_plus_128": round(fresh_s / plus_s, 1),
        }

    lo, hi = min(sizes), max(sizes)
    arch_per_token = values_per_token(cfg) * 4
    measured_per_token = (
        (entry_bytes[hi] - entry_bytes[lo]) / (hi - lo) if hi > lo else float("nan")
    )
    flash = config_from_dict(official_config("full-layer", num_layers=43))
    result: dict[str, Any] = {
        "bench": "kv_cache",
        "machine": machine(),
        "config": {
            **CONFIG,
            "hidden_size": cfg.hidden_size,
            "num_attention_heads": cfg.num_attention_heads,
            "index_n_heads": cfg.index_n_heads,
            "n_routed_experts": cfg.n_routed_experts,
            "layer_types": list(cfg.layer_types),
            "dtype": "float32",
        },
        "runs": runs,
        "resume_speedup_32k": runs.get("32768", {}).get("speedup_cold"),
        "disk_bytes_per_cached_token": round(measured_per_token, 2),
        "arch_bytes_per_token": arch_per_token,
        "disk_vs_arch_per_token": round(measured_per_token / arch_per_token, 4),
        # An entry also keeps the prefix's token ids (int32): 4 bytes a token beyond the state.
        "token_id_bytes_per_token": 4,
        "entry_overhead_bytes": entry_bytes[hi] - state_nbytes(cfg, hi, 4),
        "restore_gbps_32k_cold": runs.get("32768", {}).get("restore_gbps_cold"),
        "flash_full_size": {
            "values_per_token": values_per_token(flash),
            "bf16_bytes_per_token": values_per_token(flash) * 2,
            "kv_bytes_128k_bf16": state_nbytes(flash, 128 * 1024, 2),
            "kv_bytes_1m_bf16": state_nbytes(flash, 1024 * 1024, 2),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
