"""Live sessions: the decode states of recent conversations kept in RAM between turns.

An agent (or a chat) resends its whole conversation every turn, and several run at once.
``LiveSessions`` keeps, per session id, the last few snapshots the generation loop saved
(the prompt's end, the turn's end, long-prefill checkpoints) as in-memory arrays; the next
turn of that session restores the longest one that is a prefix of its prompt without
reading the disk. Sessions are kept least-recently-used first within a RAM budget (the
engine's ``kv_ram_gb``); a snapshot pushed out -- by the budget, or by newer snapshots of its
session -- is spilled to the SSD store (``PrefixCache``) when it is not there yet, so a
later turn still finds it there. ``flush`` spills everything (before the process exits).

``session(id)`` is the view the generation loop uses: the ``restore``/``save`` interface of
``PrefixCache``, looking in RAM first, then on disk.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from local_engine.cache.prefix_cache import PrefixCache, Restored

DEFAULT_SESSION_RAM_BYTES = 4 * 1024**3
SNAPSHOTS_PER_SESSION = 3  # prompt end, turn end, and one long-prefill checkpoint


@dataclass(frozen=True, eq=False)
class _Saved:
    """A snapshot in RAM: the state after exactly ``tokens``."""

    tokens: tuple[int, ...]
    snapshot: Mapping[str, Any]
    logits: mx.array
    nbytes: int


class _Frozen:
    """A saved snapshot dressed as a cache, so ``PrefixCache.save`` can spill it."""

    def __init__(self, saved: _Saved) -> None:
        self._saved = saved
        self.offset = len(saved.tokens)

    def snapshot(self) -> Mapping[str, Any]:
        return self._saved.snapshot


def _nbytes(snapshot: Mapping[str, Any]) -> int:
    return sum(int(v.nbytes) for v in snapshot.values() if isinstance(v, mx.array))


class LiveSessions:
    """Per-session decode states in RAM, least recently used out first, spilled to disk."""

    def __init__(self, ram_bytes: int, disk: PrefixCache | None = None) -> None:
        self.ram_bytes = ram_bytes
        self.disk = disk
        self._sessions: OrderedDict[str, list[_Saved]] = OrderedDict()
        self._lock = threading.Lock()
        self.spilled = 0  # snapshots written to disk when pushed out of RAM

    @property
    def snapshot_every(self) -> int:
        return self.disk.snapshot_every if self.disk is not None else 0

    @property
    def resident_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for states in self._sessions.values() for s in states)

    def sessions(self) -> list[str]:
        """Session ids in RAM, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def session(self, session_id: str) -> SessionView:
        return SessionView(self, session_id)

    def restore(
        self, session_id: str, prompt_ids: Sequence[int], make_cache: Callable[[], Any]
    ) -> Restored | None:
        """The longest state of this session that is a prefix of ``prompt_ids`` (RAM), else
        the longest cached prefix on disk, else None."""
        t0 = time.perf_counter()
        prompt = tuple(prompt_ids)
        with self._lock:
            states = self._sessions.get(session_id, [])
            fits = [s for s in states if len(s.tokens) <= len(prompt)]
            best = max(
                (s for s in fits if prompt[: len(s.tokens)] == s.tokens),
                key=lambda s: len(s.tokens),
                default=None,
            )
            if session_id in self._sessions:
                self._sessions.move_to_end(session_id)
        if best is not None:
            cache = make_cache()
            cache.restore(best.snapshot)
            elapsed = time.perf_counter() - t0
            return Restored(cache, len(best.tokens), best.logits, elapsed, best.nbytes)
        return None if self.disk is None else self.disk.restore(prompt_ids, make_cache)

    def save(self, session_id: str, cache: Any, token_ids: Sequence[int], logits: Any) -> bool:
        """Keep a snapshot of ``cache`` (which has seen exactly ``token_ids``) in RAM."""
        tokens = tuple(int(t) for t in token_ids)
        if not tokens or cache.offset != len(tokens):
            return False
        snapshot = cache.snapshot()
        logits = logits.astype(mx.float32)
        # Evaluated here, on the generation thread that owns the arrays.
        mx.eval(logits, *(v for v in snapshot.values() if isinstance(v, mx.array)))
        saved = _Saved(tokens, snapshot, logits, _nbytes(snapshot))
        with self._lock:
            states = [s for s in self._sessions.pop(session_id, []) if s.tokens != tokens]
            states.append(saved)
            self._sessions[session_id] = states
            out = states[:-SNAPSHOTS_PER_SESSION]
            del states[:-SNAPSHOTS_PER_SESSION]
            out += self._over_budget()
        self._spill(out)
        return True

    def _over_budget(self) -> list[_Saved]:
        """Pops least recently used snapshots until the rest fit (lock held)."""
        out: list[_Saved] = []
        total = sum(s.nbytes for states in self._sessions.values() for s in states)
        while total > self.ram_bytes and self._sessions:
            session_id, states = next(iter(self._sessions.items()))
            oldest = states.pop(0)
            total -= oldest.nbytes
            out.append(oldest)
            if not states:
                del self._sessions[session_id]
        return out

    def _spill(self, states: list[_Saved]) -> None:
        if self.disk is None:
            return
        for saved in states:
            if not self.disk.has(saved.tokens) and self.disk.save(
                _Frozen(saved),  # type: ignore[arg-type]
                saved.tokens,
                saved.logits,
            ):
                self.spilled += 1

    def forget(self, session_id: str, *, spill: bool = True) -> None:
        with self._lock:
            states = self._sessions.pop(session_id, [])
        if spill:
            self._spill(states)

    def flush(self) -> None:
        """Spill every session to disk (they stay in RAM too)."""
        with self._lock:
            states = [s for group in self._sessions.values() for s in group]
        self._spill(states)


@dataclass(frozen=True)
class SessionView:
    """One session's ``restore``/``save``: what ``generation_steps`` takes as a prefix cache."""

    sessions: LiveSessions
    session_id: str

    @property
    def snapshot_every(self) -> int:
        return self.sessions.snapshot_every

    def restore(self, prompt_ids: Sequence[int], make_cache: Callable[[], Any]) -> Restored | None:
        return self.sessions.restore(self.session_id, prompt_ids, make_cache)

    def save(self, cache: Any, token_ids: Sequence[int], logits: Any) -> bool:
        return self.sessions.save(self.session_id, cache, token_ids, logits)
