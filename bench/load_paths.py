"""Loading a float checkpoint: ``mx.load`` (the reader's fast path) vs the raw numpy reader.

Writes a random ``small`` checkpoint with every matrix in bf16 (``quantized=False``, the
dtypes ``mx.load`` reads as themselves), then loads it with ``build_model`` fed by
``read_shard`` (mx.load: lazy arrays read once from the file) and by ``iter_tensors``
(the raw reader: an mmap copy to numpy, then a copy into MLX), each in its own fresh
process so peak memory is the load's own, alternating rounds. Prints one JSON line:
median seconds and peak RSS of each path, and their ratios.

    python bench/load_paths.py [--rounds 3] [--preset small]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
import local_engine  # before mlx: it points MLX at the machine's BLAS
import mlx.core as mx
from pathlib import Path
from local_engine.checkpoint.loader import build_model
from local_engine.checkpoint.safetensors import iter_tensors, list_shards, read_header, read_shard
from local_engine.checkpoint.convert import peak_rss_bytes
from local_engine.model.config import load_config

model_dir, path = Path(sys.argv[1]), sys.argv[2]
cfg = load_config(model_dir)
shards = list_shards(model_dir)
headers = {s: read_header(s)[0] for s in shards}
infos = [i for h in headers.values() for i in h.values()]
read = (lambda s: read_shard(s, headers[s])) if path == "mx.load" else iter_tensors
t0 = time.perf_counter()
model = build_model(cfg, infos, (read(s) for s in shards), dtype=mx.bfloat16, compile=False)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak_rss_bytes()}))
"""


def run(model_dir: Path, path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), path],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from local_engine.checkpoint.random_weights import write_random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = write_random_checkpoint(Path(tmp), preset=args.preset, seed=0, quantized=False)
        file_bytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        results: dict[str, list[dict[str, float]]] = {"mx.load": [], "raw": []}
        for _ in range(args.rounds):
            for path in ("mx.load", "raw"):
                results[path].append(run(model, path))
    med = {
        path: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_rss_bytes")}
        for path, rs in results.items()
    }
    print(
        json.dumps(
            {
                "preset": args.preset,
                "checkpoint_bytes": file_bytes,
                "rounds": args.rounds,
                "mx_load_s": round(med["mx.load"]["seconds"], 3),
                "raw_s": round(med["raw"]["seconds"], 3),
                "raw_over_mx_load_time": round(
                    med["raw"]["seconds"] / med["mx.load"]["seconds"], 2
                ),
                "mx_load_peak_rss_bytes": int(med["mx.load"]["peak_rss_bytes"]),
                "raw_peak_rss_bytes": int(med["raw"]["peak_rss_bytes"]),
                "raw_over_mx_load_peak_rss": round(
                    med["raw"]["peak_rss_bytes"] / med["mx.load"]["peak_rss_bytes"], 2
                ),
                "machine": sys.platform,
            }
        )
    )


if __name__ == "__main__":
    main()
