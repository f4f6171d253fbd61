"""The cache and the small pool of workers in front of the per-OS backends.

One file is examined once per identity (device, inode, size, mtime, ctime), in the
background, by one of a few workers, smaller files first: a file that takes long (a 245 MB
binary, a tarball to check it against) or one that never answers delays no other file's
identity, and an agent's script (kilobytes) never waits behind another's binary. A file
that is refused (not a regular file, not readable by its user, a link, too large, sparse)
is counted by reason and never examined again while it is the same file; one that could
not be finished (past its deadline on a loaded machine, or its process gone before it was
opened) is tried again later.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from quintd.signing.backends import Backend, default_backend
from quintd.signing.examine import Target, readable_by
from quintd.signing.info import SigningInfo

log = logging.getLogger("quintd.signing")

# (device, inode, size, mtime ns, ctime ns): a file changed in any way, even by someone
# who set its mtime back, is examined again.
FileKey = tuple[int, int, int, int, int]
WORKERS = 3
# Not the file's fault: tried again (a deadline passed on a busy machine: after a while).
RETRY_LATER = {"deadline passed": 60.0, "cannot be opened": 1.0, "cannot be read": 1.0}


class PersistentCache(Protocol):
    """Where identities outlive the daemon (``signing.cache.StoredSigningCache``)."""

    def load_signing(self) -> dict[FileKey, SigningInfo]: ...

    def save_signing(self, key: FileKey, info: SigningInfo) -> None: ...


def as_target(target: Target | str) -> Target:
    return target if isinstance(target, Target) else Target(path=target)


def _stat(target: Target) -> os.stat_result | None:
    try:
        # /proc/<pid>/exe is followed (to the file the kernel ran); a script's own path is
        # not (a link is refused when it is opened).
        return os.stat(target.open_path, follow_symlinks=target.through_kernel)
    except (OSError, ValueError):
        return None


def file_key(path: str | Target) -> FileKey | None:
    st = _stat(as_target(path))
    if st is None:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


UNREADABLE = SigningInfo(signing_id=None, source="refused", detail="not readable by its user")


class SigningResolver:
    def __init__(
        self,
        backend: Backend | None = None,
        persist: PersistentCache | None = None,
        workers: int = WORKERS,
    ) -> None:
        """``persist``: a cache kept across restarts; a restart examines nothing it
        already knows."""
        self._backend = backend or default_backend()
        self._persist = persist
        self._cache: dict[FileKey, SigningInfo] = {}
        if persist is not None:
            try:
                self._cache.update(persist.load_signing())
            except Exception as exc:  # an unreadable cache only costs a re-examination
                log.warning("signing: cached identities not loaded: %s", exc)
        self._pending: dict[FileKey, threading.Event] = {}
        self._retry_at: dict[FileKey, float] = {}  # transient failures: not before then
        self._lock = threading.Lock()
        # (file size, order, job): the smallest first; None (a stop) sorts before all.
        self._work: queue.PriorityQueue[tuple[int, int, tuple[Target, FileKey] | None]] = (
            queue.PriorityQueue()
        )
        self._order = 0
        self._workers: list[threading.Thread] = []
        self._size = max(1, workers)
        self.examined = 0  # files the backend looked at (cache misses)
        self.refused: Counter[str] = Counter()  # files not examined, by reason
        # Called (from a worker's thread) when an identity is known: a session held for
        # it may be announced now.
        self.on_resolved: Callable[[], None] | None = None

    def _lookup(self, target: Target) -> tuple[FileKey | None, SigningInfo | None]:
        st = _stat(target)
        if st is None:
            return None, None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if not target.through_kernel and not readable_by(st, target.uid, target.gids):
            # Whatever was learnt of this file for another user is not this user's to send.
            return key, UNREADABLE
        with self._lock:
            return key, self._cache.get(key)

    def cached(self, target: Target | str) -> SigningInfo | None:
        return self._lookup(as_target(target))[1]

    def resolve(self, target: Target | str, timeout: float | None = None) -> SigningInfo | None:
        """The file's identity, waiting up to ``timeout`` seconds (None: as long as it
        takes). On timeout the work goes on in the background; ask again later."""
        wanted = as_target(target)
        key, hit = self._lookup(wanted)
        if key is None or hit is not None:
            return hit
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            if self._retry_at.get(key, 0.0) > time.monotonic():
                return None  # it failed a moment ago; not yet again
            done = self._pending.get(key)
            if done is None:
                done = self._pending[key] = threading.Event()
                self._ensure_workers()
                self._order += 1
                self._work.put((key[2], self._order, (wanted, key)))
        if timeout is not None and timeout <= 0:
            return None
        done.wait(timeout)
        with self._lock:
            return self._cache.get(key)

    def close(self) -> None:
        for _ in self._workers:
            self._work.put((-1, 0, None))
        for thread in self._workers:
            thread.join(timeout=5)

    def _ensure_workers(self) -> None:
        self._workers = [t for t in self._workers if t.is_alive()]
        while len(self._workers) < self._size:
            thread = threading.Thread(target=self._run, name="quintd-signing", daemon=True)
            thread.start()
            self._workers.append(thread)

    def _run(self) -> None:
        while True:
            _, _, item = self._work.get()
            if item is None:
                return
            target, key = item
            started = time.monotonic()
            try:
                info = self._backend(target)
            except Exception as exc:  # a strange file must not kill the worker
                log.warning("signing: cannot examine %s: %s", target.path, exc)
                info = SigningInfo(signing_id=None, source="error", detail=str(exc))
            log.debug(
                "signing: %s -> %s (%.0f ms)%s",
                target.path,
                info.signing_id,
                (time.monotonic() - started) * 1000,
                f" refused: {info.detail}" if info.source == "refused" else "",
            )
            retry = RETRY_LATER.get(info.detail or "") if info.source == "refused" else None
            with self._lock:
                if retry is None:
                    self._cache[key] = info
                else:
                    self._retry_at[key] = time.monotonic() + retry
                self.examined += 1
                if info.source == "refused":
                    self.refused[info.detail or "refused"] += 1
                done = self._pending.pop(key, None)
            if done is not None:
                done.set()
            notify = self.on_resolved
            if notify is not None:
                notify()
            if self._persist is not None and info.source not in ("error", "refused"):
                try:
                    self._persist.save_signing(key, info)
                except Exception as exc:  # a full disk: the next start examines it again
                    log.warning("signing: identity not kept on disk: %s", exc)
