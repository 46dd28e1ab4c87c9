"""The KV cache on disk: saved decode states keyed by model fingerprint and token prefix.

An entry holds the exact token ids of a prefix, the full decode state after those
tokens (the flat arrays and ints of ``ModelCache.snapshot()``) and the logits of
the prefix's last position, so an identical prompt needs no model call at all.

Keys (:mod:`local_engine.cache.kv_keys`). Token ids are hashed as a chain over
128-token blocks; an entry is anchored at the block boundary at or before its end.
A lookup computes the chain of the incoming ids once and walks the anchors from the
longest down, so finding the longest cached prefix costs one hash per 128 tokens
whatever the number of entries. The stored token ids are compared too: a hash
collision can never restore a wrong state. An entry's file format and checks are
:mod:`local_engine.cache.kv_entry`'s.

Writes go to ``tmp/<pid>-...part``, are fsync-ed, renamed into ``entries/`` and the
directory fsync-ed: a reader sees a whole entry or none. The index
(``index.json``: key -> tokens, bytes, recency, hits) is rewritten the same way,
under an ``flock`` on ``index.lock``, so several processes can share a directory;
the lock dies with its process. Entries are the truth: ``verify`` rebuilds the
index from their headers, adopting orphans and dropping what is damaged.

Faults never reach the caller as wrong data or a crash: a truncated or altered
file, a header for another model, a full disk, a writer killed half-way -- each is
detected (sizes, checksums, fingerprint, token ids), the entry is skipped or
removed, and one line is logged at WARNING. The engine then prefills.

Eviction keeps the directory within its byte budget by removing the entries of
lowest ``(1 + hits) / (1 + age in hours) / sqrt(1 + MiB)``: recently used and
often hit entries stay; between two equally used ones the smaller stays, though
less than in proportion to size, since a long prefix also saves more prefill.

This module is numpy-only (no mlx): the engine converts arrays on its side.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.cache.kv_activity import KVActivity, activity, record_store, tally
from local_engine.cache.kv_entry import (
    EncodedEntry,
    EntryDamaged,
    EntryInfo,
    RawArray,
    StoredState,
    encode_entry,
    read_entry,
    read_header,
    tokens_from,
)
from local_engine.cache.kv_keys import BLOCK, chain, entry_key, prefix_key

log = logging.getLogger("local_engine.cache.kv_cache")

INDEX_FORMAT = 1
_WRITE_CHUNK = 16 * 1024**2
# A temp file this old is abandoned even if a process with its pid exists (pids recycle).
STALE_TEMP_S = 6 * 3600


@dataclass(frozen=True)
class StoreStats:
    root: str
    entries: int
    nbytes: int
    budget_bytes: int | None
    tokens: int
    hits: int
    models: int
    temp_files: int


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    ok: int
    removed: tuple[str, ...]  # "key: reason"
    adopted: int
    missing: int
    temp_removed: int


# -- the store --------------------------------------------------------------------------------


def private_dir(path: Path) -> None:
    """``path`` and missing parents created 0700; an existing one of ours narrowed to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def private_open(path: Path, mode: str = "wb") -> Any:
    """``path`` opened for writing, created 0600 (never readable by others, not even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    if "+" in mode:
        flags = (flags & ~os.O_WRONLY) | os.O_RDWR
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fh: Any, view: memoryview) -> None:
    """Write ``view`` to ``fh`` in chunks (a seam for fault-injection tests)."""
    for start in range(0, len(view), _WRITE_CHUNK):
        fh.write(view[start : start + _WRITE_CHUNK])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class KVStore:
    """A KV cache directory shared by processes, within ``budget_bytes`` (None: no limit)."""

    def __init__(self, root: str | Path, *, budget_bytes: int | None = None) -> None:
        self.root = Path(root).expanduser()
        self.budget_bytes = budget_bytes
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"
        self.index_path = self.root / "index.json"
        self.lock_path = self.root / "index.lock"
        try:
            # The entries hold a prompt's token ids and KV state: 0700 directories and
            # 0600 files (private_dir, private_open), readable by the user alone.
            for directory in (self.root, self.entries_dir, self.tmp_dir):
                private_dir(directory)
        except OSError as exc:
            from local_engine.errors import CacheError

            raise CacheError(
                f"cannot use {self.root} as the KV cache directory ({exc}); "
                "choose a writable directory (local.engine.kv_cache_dir)"
            ) from exc
        self._mem_lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], dict[str, EntryInfo]] | None = None
        self.remove_stale_temps()
        self._publish(self._index())

    # -- index ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes and threads (each call opens its own description)."""
        import fcntl

        with private_open(self.lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _index(self, *, locked: bool = False) -> dict[str, EntryInfo]:
        """The index as last written (re-read only when the file changed).

        ``locked``: the caller holds the index lock (a second flock from this process
        would wait for itself).
        """
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            return {}
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._mem_lock:
            if self._cached is not None and self._cached[0] == sig:
                return dict(self._cached[1])
        try:
            raw = json.loads(self.index_path.read_text(encoding="utf-8"))
            if raw.get("format") != INDEX_FORMAT:
                raise ValueError(f"index format {raw.get('format')!r}")
            entries = {k: EntryInfo(**v) for k, v in raw["entries"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning(
                "kv cache: index %s is unreadable (%s); rebuilding it from the entries",
                self.index_path,
                exc,
            )
            tally(faults=1)
            with contextlib.nullcontext() if locked else self._locked():
                entries = self._scan_entries()
                self._write_index(entries)
            return dict(entries)
        with self._mem_lock:
            self._cached = (sig, entries)
        return dict(entries)

    def _write_index(self, entries: Mapping[str, EntryInfo]) -> None:
        """Atomically replace the index (caller holds the lock)."""
        body = json.dumps(
            {"format": INDEX_FORMAT, "entries": {k: asdict(v) for k, v in entries.items()}},
            separators=(",", ":"),
        ).encode()
        tmp = self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.index.part"
        try:
            with private_open(tmp) as fh:
                _write_all(fh, memoryview(body))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.index_path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)
        self._publish(entries)

    def _publish(self, entries: Mapping[str, EntryInfo]) -> None:
        record_store(str(self.root), len(entries), sum(e.nbytes for e in entries.values()))

    def _update(self, change: Any) -> dict[str, EntryInfo]:
        """Read-modify-write the index under the lock; ``change`` edits the dict in place."""
        with self._locked():
            with self._mem_lock:
                self._cached = None
            entries = self._index(locked=True)
            change(entries)
            self._write_index(entries)
            return entries

    # -- lookup and read ----------------------------------------------------------------------
    def candidates(self, fingerprint: str, ids: Sequence[int] | np.ndarray) -> list[EntryInfo]:
        """Entries of this model whose tokens are a prefix of ``ids``, longest first.

        Only hashes are compared here; ``read`` compares the stored token ids.
        """
        index = self._index()
        if not index or len(ids) == 0:
            return []
        by_anchor: dict[str, list[EntryInfo]] = {}
        for info in index.values():
            if info.fingerprint == fingerprint and 0 < info.tokens <= len(ids):
                by_anchor.setdefault(info.anchor, []).append(info)
        if not by_anchor:
            return []
        anchors = chain(fingerprint, ids)
        found: list[EntryInfo] = []
        for j in range(len(anchors) - 1, -1, -1):
            for info in by_anchor.get(anchors[j], ()):
                if info.tokens // BLOCK != j:
                    continue
                if entry_key(anchors[j], ids[j * BLOCK : info.tokens]) == info.key:
                    found.append(info)
        return sorted(found, key=lambda e: -e.tokens)

    def has(self, fingerprint: str, ids: Sequence[int] | np.ndarray) -> bool:
        key, _ = prefix_key(fingerprint, ids)
        return key in self._index()

    def lookup(
        self, fingerprint: str, ids: Sequence[int] | np.ndarray, *, at_most: int | None = None
    ) -> StoredState | None:
        """The longest verified cached prefix of ``ids`` (at most ``at_most`` tokens), or None.

        A damaged candidate is removed with a warning and the next longest is tried.
        """
        tally(lookups=1)
        limit = len(ids) if at_most is None else min(at_most, len(ids))
        for info in self.candidates(fingerprint, ids):
            if info.tokens > limit:
                continue
            state = self.read(info, fingerprint, ids)
            if state is not None:
                self._touch(info.key)
                tally(hits=1, cached_tokens=info.tokens)
                return state
        return None

    def _touch(self, key: str) -> None:
        now = time.time()

        def change(entries: dict[str, EntryInfo]) -> None:
            info = entries.get(key)
            if info is not None:
                entries[key] = replace(info, hits=info.hits + 1, last_used=now)

        try:
            self._update(change)
        except OSError as exc:  # recency is a nicety; a read-only or full disk must not fail
            log.debug("kv cache: could not record a hit: %s", exc)

    def read(
        self, info: EntryInfo, fingerprint: str, ids: Sequence[int] | np.ndarray | None = None
    ) -> StoredState | None:
        """Read and verify one entry; damaged ones are removed (with a warning): None."""
        path = self.root / info.file
        started = time.perf_counter()
        try:
            state = read_entry(path, info, fingerprint)
            if ids is not None:
                want = np.asarray(ids[: info.tokens], dtype=np.int32)
                if not np.array_equal(state.token_ids, want):
                    raise EntryDamaged("its token ids are not the prefix its key says")
        except FileNotFoundError:
            # Evicted by another process since we read the index: not a fault.
            self._forget(info.key, delete=False)
            return None
        except EntryDamaged as exc:
            log.warning(
                "kv cache: entry %s (%d tokens) in %s is damaged (%s); removed it, "
                "prefilling instead",
                info.key[:12],
                info.tokens,
                self.root,
                exc,
            )
            tally(faults=1)
            self._forget(info.key, delete=True, path=path)
            return None
        except OSError as exc:
            log.warning(
                "kv cache: cannot read entry %s in %s (%s); prefilling instead",
                info.key[:12],
                self.root,
                exc,
            )
            tally(faults=1)
            return None
        return replace(state, read_s=time.perf_counter() - started)

    def remove(self, info: EntryInfo) -> None:
        """Delete one entry (file and index row)."""
        self._forget(info.key, delete=True, path=self.root / info.file)

    def _forget(self, key: str, *, delete: bool, path: Path | None = None) -> None:
        if delete and path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
        try:
            self._update(lambda entries: entries.pop(key, None))
        except OSError as exc:
            log.debug("kv cache: could not update the index: %s", exc)

    # -- write ------------------------------------------------------------------------------
    def put(
        self,
        fingerprint: str,
        ids: Sequence[int] | np.ndarray,
        arrays: Mapping[str, RawArray],
        ints: Mapping[str, int],
        logits: RawArray,
    ) -> EntryInfo | None:
        """Write one entry (blocking); None when it exists already, cannot fit, or failed."""
        token_ids = np.asarray(ids, dtype=np.int32)
        n = len(token_ids)
        if n == 0:
            return None
        key, anchor = prefix_key(fingerprint, token_ids)
        if key in self._index():
            return None
        entry = encode_entry(fingerprint, key, token_ids, arrays, ints, logits)
        total = entry.total
        if self.budget_bytes is not None and total > self.budget_bytes:
            log.info(
                "kv cache: a %d-token state (%d bytes) exceeds the cache budget; not saved",
                n,
                total,
            )
            return None
        rel = Path("entries") / key[:2] / f"{key}.kvc"
        final = self.root / rel
        try:
            self._write_entry(entry, final)
        except OSError as exc:
            reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            log.warning(
                "kv cache: could not save a %d-token state in %s (%s); continuing without it",
                n,
                self.root,
                reason,
            )
            tally(faults=1)
            return None
        now = time.time()
        info = EntryInfo(key, fingerprint, anchor, n, total, rel.as_posix(), now, now)

        def change(entries: dict[str, EntryInfo]) -> None:
            entries[key] = info
            self._evict(entries, keep=key)

        try:
            self._update(change)
        except OSError as exc:
            log.warning(
                "kv cache: could not update the index in %s (%s); the entry is not used",
                self.root,
                exc,
            )
            tally(faults=1)
            with contextlib.suppress(OSError):
                final.unlink()
            return None
        tally(writes=1, written_bytes=total)
        return info

    def _write_entry(self, entry: EncodedEntry, final: Path) -> None:
        """Write to a temp file, fsync, rename into place, fsync the directory."""
        tmp = self.tmp_dir / f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex}.part"
        try:
            private_dir(final.parent)
            with private_open(tmp) as fh:
                _write_all(fh, memoryview(entry.head))
                for view in entry.sections:
                    _write_all(fh, view)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def _evict(self, entries: dict[str, EntryInfo], keep: str | None = None) -> list[str]:
        """Remove lowest-score entries until the total fits the budget (lock held)."""
        if self.budget_bytes is None:
            return []
        total = sum(e.nbytes for e in entries.values())
        now = time.time()
        gone = []
        for info in sorted(entries.values(), key=lambda e: e.score(now)):
            if total <= self.budget_bytes:
                break
            if info.key == keep:
                continue
            with contextlib.suppress(OSError):
                (self.root / info.file).unlink()
            del entries[info.key]
            total -= info.nbytes
            gone.append(info.key)
        return gone

    # -- maintenance ------------------------------------------------------------------------
    def entries(self) -> list[EntryInfo]:
        """Every indexed entry, most recently used first."""
        return sorted(self._index().values(), key=lambda e: -e.last_used)

    def stats(self) -> StoreStats:
        entries = list(self._index().values())
        temps = sum(1 for _ in self.tmp_dir.glob("*.part")) if self.tmp_dir.is_dir() else 0
        return StoreStats(
            root=str(self.root),
            entries=len(entries),
            nbytes=sum(e.nbytes for e in entries),
            budget_bytes=self.budget_bytes,
            tokens=sum(e.tokens for e in entries),
            hits=sum(e.hits for e in entries),
            models=len({e.fingerprint for e in entries}),
            temp_files=temps,
        )

    def remove_stale_temps(self) -> int:
        """Delete temp files left by processes that died mid-write."""
        removed = 0
        now = time.time()
        for part in self.tmp_dir.glob("*.part"):
            try:
                pid = int(part.name.split("-", 1)[0])
                age = now - part.stat().st_mtime
            except (ValueError, OSError):
                continue
            if pid == os.getpid() and age < STALE_TEMP_S:
                continue  # one of our own writes in flight
            if not _pid_alive(pid) or age > STALE_TEMP_S:
                with contextlib.suppress(OSError):
                    part.unlink()
                    removed += 1
        return removed

    def _scan_entries(self) -> dict[str, EntryInfo]:
        """Entries from the files' headers (headers only; ``verify`` checks the data)."""
        found: dict[str, EntryInfo] = {}
        for path in sorted(self.entries_dir.glob("*/*.kvc")):
            try:
                header = read_header(path)
                st = path.stat()
            except (EntryDamaged, OSError):
                continue
            found[header["key"]] = self._info_from_header(path, header, st.st_size, st.st_mtime)
        return found

    def _info_from_header(
        self, path: Path, header: Mapping[str, Any], size: int, mtime: float
    ) -> EntryInfo:
        ids = tokens_from(path, header)
        key, anchor = prefix_key(header["fingerprint"], ids)
        if key != header["key"]:
            raise EntryDamaged("its key does not match its token ids")
        rel = path.relative_to(self.root).as_posix()
        return EntryInfo(key, header["fingerprint"], anchor, len(ids), size, rel, mtime, mtime)

    def verify(self) -> VerifyReport:
        """Check every entry file in full; remove damaged ones, adopt orphans, fix the index."""
        removed: list[str] = []
        adopted = missing = ok = checked = 0
        with self._locked():
            with self._mem_lock:
                self._cached = None
            index = self._index(locked=True)
            fresh: dict[str, EntryInfo] = {}
            for path in sorted(self.entries_dir.glob("*/*.kvc")):
                checked += 1
                try:
                    header = read_header(path)
                    st = path.stat()
                    info = self._info_from_header(path, header, st.st_size, st.st_mtime)
                    known = index.get(info.key)
                    if known is not None:
                        info = replace(known, nbytes=st.st_size, file=info.file)
                    read_entry(path, info, info.fingerprint)
                except (EntryDamaged, OSError) as exc:
                    removed.append(f"{path.name}: {exc}")
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                ok += 1
                adopted += known is None
                fresh[info.key] = info
            missing = sum(1 for k in index if k not in fresh)
            self._evict(fresh)
            self._write_index(fresh)
        temps = self.remove_stale_temps()
        for line in removed:
            log.warning("kv cache: removed damaged entry %s", line)
        return VerifyReport(checked, ok, tuple(removed), adopted, missing, temps)

    def clear(self, fingerprint: str | None = None) -> int:
        """Remove every entry (of one model when ``fingerprint`` is given); returns the count."""
        gone = 0

        def change(entries: dict[str, EntryInfo]) -> None:
            nonlocal gone
            for key, info in list(entries.items()):
                if fingerprint is None or info.fingerprint == fingerprint:
                    with contextlib.suppress(OSError):
                        (self.root / info.file).unlink()
                    del entries[key]
                    gone += 1

        self._update(change)
        if fingerprint is None:  # orphans too
            for path in self.entries_dir.glob("*/*.kvc"):
                with contextlib.suppress(OSError):
                    path.unlink()
        return gone


__all__ = [
    "BLOCK",
    "EntryInfo",
    "KVActivity",
    "KVStore",
    "RawArray",
    "StoreStats",
    "StoredState",
    "VerifyReport",
    "activity",
    "chain",
    "entry_key",
    "prefix_key",
]
