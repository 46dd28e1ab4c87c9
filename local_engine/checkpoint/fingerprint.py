"""The model fingerprint that keys the on-disk KV cache.

A saved decode state is only valid for the exact computation that produced it:
the same architecture (``config.json``), the same weights, the same quantization
recipe (``config.json``'s quantization section), the same official-graph switches
(FP8 KV rows, FP4 indexer) and the same numerics (compute dtype, device, MLX
version, which calls are compiled, whether the fused mHC kernels run). Any
difference, however small, would make a restored state continue differently
from a fresh prefill, so all of it goes into one SHA-256.

Hashing every weight byte would cost minutes on an 80-160 GB checkpoint at every
start, so weights are covered by each shard's name, size and full safetensors
header (names, dtypes, shapes, offsets) plus evenly spaced 64 KiB samples of its
data (``SAMPLES`` per shard, first and last bytes included). A converter or a
different seed rewrites every tensor and changes the samples; an in-place edit of
a few bytes between samples would not be seen -- the price of a fingerprint that
takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from local_engine.checkpoint.safetensors import header_bytes

# Bump when the meaning of a saved state changes without the snapshot format changing
# (e.g. a fix in how the compressor computes its rows).
STATE_VERSION = 1
SAMPLES = 16
SAMPLE_BYTES = 64 * 1024


def _shard_digest(h: Any, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"shard {path.name} {size}\n".encode())
    # The header names every tensor with its dtype, shape and offsets.
    h.update(header_bytes(path))
    with path.open("rb") as fh:
        span = max(0, size - SAMPLE_BYTES)
        for i in range(SAMPLES):
            fh.seek(span * i // max(1, SAMPLES - 1))
            h.update(fh.read(SAMPLE_BYTES))


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 over ``config.json`` (canonical JSON) and a sampled digest of each shard."""
    root = Path(model_dir)
    h = hashlib.sha256(b"ds4router-weights-v1\n")
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    h.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for shard in sorted(root.glob("*.safetensors")):
        _shard_digest(h, shard)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def model_fingerprint(
    model_dir: str | Path,
    *,
    graph: Any,
    dtype: str,
    device: str,
    compiled: bool | str,
    extra: Iterable[tuple[str, Any]] = (),
) -> str:
    """The hex fingerprint of a loaded model: weights, recipe, graph switches, numerics."""
    import mlx.core as mx

    from local_engine.cache.kv_cache import SNAPSHOT_FORMAT

    parts = {
        "weights": weights_digest(model_dir),
        "graph": _plain(graph),
        "dtype": dtype,
        "device": device,
        "compiled": compiled,
        "mlx": getattr(mx, "__version__", "unknown"),
        "snapshot_format": SNAPSHOT_FORMAT,
        "state_version": STATE_VERSION,
        **{k: _plain(v) for k, v in extra},
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(b"ds4router-kv-fingerprint-v1\n" + blob).hexdigest()


def fingerprint_of(model: Any, model_dir: str | Path) -> str:
    """The fingerprint of ``model`` (a ``Model``) loaded from ``model_dir``."""
    import mlx.core as mx

    device = "cpu" if mx.default_device() == mx.cpu else "gpu"
    return model_fingerprint(
        model_dir,
        graph=getattr(model, "graph", None),
        dtype=str(getattr(model, "dtype", "")),
        device=device,
        compiled=getattr(model, "compiled", False),
        # The fused mHC kernels round differently from the MLX ops they replace.
        extra=[("fused_hc", bool(getattr(model, "fused_hc", False)))],
    )
