"""Use the machine's optimized BLAS for MLX's CPU backend on Linux.

The ``mlx-cpu`` wheel for Linux bundles the netlib reference BLAS: measured here,
its float32 matrix product runs at ~7 GFLOP/s against ~210 GFLOP/s for OpenBLAS
on the same two cores, which makes CPU prefill ~10x slower than PyTorch. Loading
an optimized ``libblas.so.3`` with ``RTLD_GLOBAL`` *before* ``mlx.core`` is first
imported makes the dynamic linker resolve MLX's ``sgemm_``/``sgemv_`` calls to it.

This only runs on Linux, only before mlx is imported, and only when such a library
is found. ``DS4ROUTER_BLAS=off`` disables it; ``DS4ROUTER_BLAS=/path/libblas.so``
chooses the library. macOS uses Accelerate (or Metal) and is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# Debian/Ubuntu's OpenBLAS packages (libopenblas0-pthread / -openmp), then the
# generic alternative, which points at whichever optimized BLAS is installed.
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)

_loaded: str | None = None


def prefer_fast_blas() -> str | None:
    """Load an optimized BLAS globally if possible; returns its path, or None."""
    global _loaded
    if _loaded is not None:
        return _loaded
    choice = os.environ.get("DS4ROUTER_BLAS", "")
    if choice.lower() in ("off", "0", "no", "none") or not sys.platform.startswith("linux"):
        return None
    if "mlx.core" in sys.modules:  # too late: MLX's symbols are already bound
        return None
    paths = [choice] if choice else list(CANDIDATES)
    for path in paths:
        if Path(path).is_file():
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            _loaded = path
            return path
    return None


def loaded_blas() -> str | None:
    """The library :func:`prefer_fast_blas` loaded, if any (for info and benchmarks)."""
    return _loaded
