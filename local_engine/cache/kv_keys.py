"""Keys of KV cache entries: a hash chain over 128-token blocks of the token ids.

``h[0] = H(fingerprint)``, ``h[j + 1] = H(h[j] | ids[128 j : 128 (j + 1)])``. An
entry of ``n`` tokens is anchored at ``h[n // 128]``; its key is that anchor, or
``H(anchor | tail)`` for the ``n % 128`` tokens past it. See
:mod:`local_engine.cache.kv_store` for how a lookup walks the anchors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

BLOCK = 128


def _ids_bytes(ids: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(ids, dtype="<i4").tobytes()


def chain(fingerprint: str, ids: Sequence[int] | np.ndarray) -> list[str]:
    """Anchors ``h[0..len(ids) // 128]`` of the hash chain over ``ids``."""
    raw = _ids_bytes(ids)
    h = hashlib.sha256(b"ds4kv-chain-v1\n" + fingerprint.encode()).digest()
    out = [h.hex()]
    step = BLOCK * 4
    for j in range(len(raw) // step):
        h = hashlib.sha256(h + raw[j * step : (j + 1) * step]).digest()
        out.append(h.hex())
    return out


def entry_key(anchor: str, tail: Sequence[int] | np.ndarray) -> str:
    """The key of a prefix: its 128-boundary anchor, plus the tokens past it if any."""
    if len(tail) == 0:
        return anchor
    return hashlib.sha256(bytes.fromhex(anchor) + b"tail" + _ids_bytes(tail)).hexdigest()


def prefix_key(fingerprint: str, ids: Sequence[int] | np.ndarray) -> tuple[str, str]:
    """(key, anchor) of the whole of ``ids``."""
    anchors = chain(fingerprint, ids)
    j = len(ids) // BLOCK
    return entry_key(anchors[j], ids[j * BLOCK :]), anchors[j]
