"""The cache and the background worker in front of the per-OS backends."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from quintd.signing.backends import Backend, default_backend
from quintd.signing.info import SigningInfo

log = logging.getLogger("quintd.signing")

# (device, inode, size, mtime ns, ctime ns): a file changed in any way, even by someone
# who set its mtime back, is examined again.
FileKey = tuple[int, int, int, int, int]


class PersistentCache(Protocol):
    """Where identities outlive the daemon (the store's ``signing_cache`` table)."""

    def load_signing(self) -> dict[FileKey, SigningInfo]: ...

    def save_signing(self, key: FileKey, info: SigningInfo) -> None: ...


def file_key(path: str) -> FileKey | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class SigningResolver:
    def __init__(
        self, backend: Backend | None = None, persist: PersistentCache | None = None
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
        self._lock = threading.Lock()
        self._work: queue.Queue[tuple[str, FileKey] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.examined = 0  # files the backend looked at (cache misses)
        # Called (from the worker's thread) when an identity is known: a session held
        # for it may be announced now.
        self.on_resolved: Callable[[], None] | None = None

    def cached(self, path: str) -> SigningInfo | None:
        key = file_key(path)
        if key is None:
            return None
        with self._lock:
            return self._cache.get(key)

    def resolve(self, path: str, timeout: float | None = None) -> SigningInfo | None:
        """The file's identity, waiting up to ``timeout`` seconds (None: as long as it
        takes). On timeout the work goes on in the background; ask again later."""
        key = file_key(path)
        if key is None:
            return None
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            done = self._pending.get(key)
            if done is None:
                done = self._pending[key] = threading.Event()
                self._ensure_worker()
                self._work.put((path, key))
        if timeout is not None and timeout <= 0:
            return None
        done.wait(timeout)
        with self._lock:
            return self._cache.get(key)

    def close(self) -> None:
        if self._thread is not None:
            self._work.put(None)
            self._thread.join(timeout=5)

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="quintd-signing", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            path, key = item
            started = time.monotonic()
            try:
                info = self._backend(path)
            except Exception as exc:  # a strange file must not kill the worker
                log.warning("signing: cannot examine %s: %s", path, exc)
                info = SigningInfo(signing_id=None, source="error", detail=str(exc))
            log.debug(
                "signing: %s -> %s (%.0f ms)",
                path,
                info.signing_id,
                (time.monotonic() - started) * 1000,
            )
            with self._lock:
                self._cache[key] = info
                self.examined += 1
                done = self._pending.pop(key, None)
            if done is not None:
                done.set()
            notify = self.on_resolved
            if notify is not None:
                notify()
            if self._persist is not None and info.source != "error":
                try:
                    self._persist.save_signing(key, info)
                except Exception as exc:  # a full disk: the next start examines it again
                    log.warning("signing: identity not kept on disk: %s", exc)
