"""On Linux, MLX's CPU matmuls run on the machine's optimized BLAS (see local_engine/cpu_blas.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from local_engine.cpu_blas import CANDIDATES

PROBE = """
import json, sys
import local_engine
from local_engine.cpu_blas import loaded_blas
import mlx.core as mx
a = mx.array([[float(i * 7 % 11) for i in range(64)] for _ in range(48)])
b = mx.array([[float(i * 5 % 13 - 6) for i in range(32)] for _ in range(64)])
print(json.dumps({"blas": loaded_blas(), "product": (a @ b).tolist()}))
"""


def probe(blas: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DS4ROUTER_BLAS"}
    if blas is not None:
        env["DS4ROUTER_BLAS"] = blas
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def expected_product() -> list[list[float]]:
    """The probe's product computed in Python (small integers: exact in float32)."""
    a = [[float(i * 7 % 11) for i in range(64)] for _ in range(48)]
    b = [[float(i * 5 % 13 - 6) for i in range(32)] for _ in range(64)]
    return [[sum(row[k] * b[k][j] for k in range(64)) for j in range(32)] for row in a]


def test_mlx_uses_an_installed_optimized_blas_and_else_its_bundled_one() -> None:
    """The fast path where OpenBLAS is installed (CI installs it: .ci/run), the fallback on a
    fresh machine without it (the README's commands install no system package); both give
    the exact product."""
    assert sys.platform.startswith("linux")
    present = [p for p in CANDIDATES if os.path.isfile(p)]
    auto = probe(None)
    assert auto["blas"] == (present[0] if present else None)
    reference = probe("off")
    assert reference["blas"] is None
    assert auto["product"] == reference["product"] == expected_product()


def test_a_missing_library_leaves_the_bundled_one() -> None:
    assert probe("/nonexistent/libblas.so.3")["blas"] is None
