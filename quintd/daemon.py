"""The daemon: wires scanner, session tracker, store, shipper and control socket, and
owns the main loop.

Signal handlers only record the signal and wake the loop; the loop acts on it.
The loop itself never dies from what it reads: a failed pass is logged, rolled
back and tried again on the next tick.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from quintd import __version__
from quintd.config import LoadedConfig
from quintd.control import ControlServer
from quintd.errors import AlreadyRunningError, ConfigError, QuintdError
from quintd.identity import machine_id
from quintd.logs import fields, register_secret
from quintd.notify import Notifier
from quintd.scanner import Scanner
from quintd.sessions import Session, SessionTracker, format_timestamp
from quintd.shipper import DeliverySettings, Shipper
from quintd.signing import SigningResolver
from quintd.sources import SourceManager
from quintd.store import DeadLetter, Store

log = logging.getLogger("quintd.daemon")

# How often live sessions' last-seen time is written down (it stamps the `ended`
# event of a session whose process dies while quintd is down).
TOUCH_INTERVAL_S = 30.0


class StateLock:
    """An exclusive lock on the state directory, held for the daemon's lifetime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunningError(
                    f"another quintd is already running{holder} on state dir "
                    f"{self.path.parent}; stop it first or use a different paths.state_dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o077:
        os.chmod(path, 0o700)


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        reload_config: Callable[[], LoadedConfig] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``reload_config`` loads the configuration again (on SIGHUP) the way it was
        loaded at start."""
        self.loaded = loaded
        self._reload_config = reload_config
        self._notifier = notifier or Notifier()
        self._reload_requested = False
        self._reloads = 0
        self._last_reload_error: str | None = None
        self._wake = threading.Event()
        self._stop_signal: int | None = None
        self._started_mono = time.monotonic()
        self._started_wall = datetime.now(UTC)
        self._lock = StateLock(loaded.lock_path)
        self._store: Store | None = None
        self._tracker: SessionTracker | None = None
        self._shipper: Shipper | None = None
        self._control: ControlServer | None = None
        self._resolver = SigningResolver()
        self._scanner = Scanner(loaded.platforms, self._resolver)
        self._sources = SourceManager()
        self._next_watchdog = 0.0
        self._loop_errors = 0
        self._last_loop_error: str | None = None
        # What status shows: replaced whole after each pass, so the control thread never
        # reads the tracker while the main loop changes it.
        self._session_view: list[Session] = []

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        os.umask(0o077)
        cfg = self.loaded.config
        for key, path in (
            ("state_dir", self.loaded.state_dir),
            ("runtime_dir", self.loaded.runtime_dir),
        ):
            try:
                ensure_private_dir(path)
            except OSError as exc:
                raise ConfigError(f"paths.{key}: cannot use {path}: {exc.strerror}") from None
        self._lock.acquire()
        try:
            self._install_signal_handlers()
            self._store = Store(
                self.loaded.database_path,
                max_bytes=cfg.queue.max_bytes,
                min_free_disk=cfg.queue.min_free_disk,
            )
            self._tracker = SessionTracker(
                machine_id(self.loaded.state_dir), idle_after=cfg.sessions.idle_after
            )
            self._tracker.restore(self._store.load_sessions(), self._store.load_ended())
            self._shipper = self._new_shipper()
            # The socket first: it refuses to start if another daemon answers there.
            self._control = ControlServer(
                self.loaded.socket_path,
                {
                    "status": self._status,
                    "dead_letters": self._dead_letters,
                    "requeue": self._requeue,
                },
            )
            self._control.start()
            self._shipper.start()
            self._tick()
            log.info(
                "started",
                extra=fields(
                    version=__version__,
                    pid=os.getpid(),
                    config=self.loaded.source or "<defaults>",
                    state_dir=self.loaded.state_dir,
                    endpoint=cfg.cloud.endpoint,
                    token_set=bool(self.loaded.token),
                    sessions=len(self._session_view),
                ),
            )
            # Ready: the first scan is done, the queue and the socket are up.
            self._notifier.ready(f"tracking {len(self._session_view)} session(s)")
            self._main_loop()
            self._notifier.stopping()
            signame = signal.Signals(self._stop_signal or signal.SIGTERM).name
            log.info("stopping", extra=fields(signal=signame))
        finally:
            self._shutdown()
        return 0

    def _new_shipper(self) -> Shipper:
        assert self._store is not None
        return Shipper(self._store, DeliverySettings.from_config(self.loaded))

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum
        self._wake.set()

    def _on_hangup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake.set()

    def _main_loop(self) -> None:
        next_touch = time.monotonic() + TOUCH_INTERVAL_S
        next_tick = time.monotonic() + self.loaded.config.scan.interval
        watchdog = self._notifier.watchdog_interval
        self._next_watchdog = time.monotonic()
        while self._stop_signal is None:
            now = time.monotonic()
            if watchdog is not None and now >= self._next_watchdog:
                # From the main loop itself: a stuck loop stops the pings.
                self._notifier.watchdog()
                self._next_watchdog = now + watchdog
            wake_at = min(next_tick, self._next_watchdog) if watchdog else next_tick
            self._wake.wait(max(wake_at - time.monotonic(), 0.0))
            self._wake.clear()
            if self._stop_signal is not None:
                break
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            now = time.monotonic()
            if now < next_tick:
                continue
            # No burst after a stall; the interval may have changed on reload.
            next_tick = max(next_tick + self.loaded.config.scan.interval, now)
            self._tick()
            if now >= next_touch:
                next_touch = now + TOUCH_INTERVAL_S
                self._touch()

    def _reload(self) -> None:
        """Apply a new configuration; a broken one is rejected and the old one kept."""
        if self._reload_config is None:
            return
        self._notifier.reloading()
        try:
            new = self._reload_config()
        except QuintdError as exc:
            self._last_reload_error = f"{format_timestamp(datetime.now(UTC))} {exc}"
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self._notifier.ready("reload rejected")
            return
        old = self.loaded
        for key in ("state_dir", "runtime_dir"):
            if getattr(new, key) != getattr(old, key):
                log.warning("paths.%s changed: takes effect at the next restart", key)
        new = replace(new, state_dir=old.state_dir, runtime_dir=old.runtime_dir)
        self.loaded = new
        cfg = new.config
        register_secret(new.token)
        logging.getLogger().setLevel(cfg.log.level.upper())
        assert self._tracker is not None and self._store is not None
        self._tracker.idle_after = cfg.sessions.idle_after
        self._store.max_bytes = cfg.queue.max_bytes
        self._store.min_free_disk = cfg.queue.min_free_disk
        if new.platforms != old.platforms:
            # Known processes must be looked at again under the new table.
            self._scanner = Scanner(new.platforms, self._resolver)
        # New endpoint, token or limits, applied by the delivery thread between requests
        # (the main loop never waits on the network); a refused token is retried.
        if self._shipper is not None:
            self._shipper.reconfigure(DeliverySettings.from_config(new))
        self._reloads += 1
        self._last_reload_error = None
        log.info("configuration reloaded", extra=fields(config=new.source or "<defaults>"))
        self._notifier.ready("configuration reloaded")

    def _tick(self) -> None:
        assert self._tracker is not None and self._store is not None
        snapshot = self._tracker.snapshot()
        try:
            processes = self._scanner.scan()
            facts, pending = self._sources.observe(processes)
            changes = self._tracker.observe(processes, facts, pending)
            pids = {s.session_id: s.pid for s in [*self._session_view, *changes.upserts]}
            stored = self._store.apply(changes.events, changes.upserts, changes.removals)
            self._session_view = [copy.copy(s) for s in self._tracker.sessions]
            if stored:
                for event in changes.events:
                    log.info(
                        "session %s",
                        event.kind,
                        extra=fields(
                            session_id=event.session_id,
                            state=event.state,
                            platform=event.platform,
                            pid=pids.get(event.session_id),
                        ),
                    )
                if self._shipper is not None:
                    self._shipper.wake()
        except Exception as exc:
            # Nothing was committed: forget the transitions so the next pass finds them again.
            self._tracker.rollback(snapshot)
            self._loop_errors += 1
            self._last_loop_error = f"{format_timestamp(datetime.now(UTC))} {exc}"
            log.exception("scan pass failed; will retry")

    def _touch(self) -> None:
        assert self._tracker is not None and self._store is not None
        try:
            self._store.touch_sessions(self._tracker.sessions)
        except Exception:
            log.exception("could not record last-seen times")

    def _shutdown(self) -> None:
        if self._control is not None:
            self._control.stop()
        if self._tracker is not None and self._store is not None:
            self._touch()
        if self._shipper is not None:
            self._shipper.stop(self.loaded.config.queue.drain_timeout)
        if self._store is not None and (self._shipper is None or not self._shipper.is_alive()):
            self._store.close()
        self._resolver.close()
        self._notifier.close()
        self._sources.close()
        self._lock.release()

    # -- control commands -----------------------------------------------------------------

    def _dead_letters(self, _request: Mapping[str, Any]) -> list[dict[str, Any]]:
        assert self._store is not None
        return [dead_letter_json(d) for d in self._store.dead_letters()]

    def _requeue(self, request: Mapping[str, Any]) -> dict[str, int]:
        assert self._store is not None and self._shipper is not None
        seqs = request.get("seqs")
        if seqs is not None and not (
            isinstance(seqs, list) and all(isinstance(s, int) for s in seqs)
        ):
            raise ValueError("seqs must be a list of integers")
        moved = self._store.requeue(seqs)
        log.info("requeued %d dead letter(s)", moved)
        self._shipper.wake()
        return {"requeued": moved}

    # -- status ---------------------------------------------------------------------------

    def _status(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        assert self._tracker is not None and self._store is not None
        assert self._shipper is not None
        stats = self._store.stats()
        delivery = asdict(self._shipper.status())
        oldest_age = None
        if stats.oldest_enqueued_at is not None:
            oldest_age = round(max(time.time() - stats.oldest_enqueued_at, 0.0), 3)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": format_timestamp(self._started_wall),
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "config_file": str(self.loaded.source) if self.loaded.source else None,
            "reloads": self._reloads,
            "last_reload_error": self._last_reload_error,
            "state_dir": str(self.loaded.state_dir),
            "endpoint": self.loaded.endpoint,
            "token_set": bool(self.loaded.token),
            "sessions": [
                {
                    "session_id": s.session_id,
                    "platform": s.platform,
                    "pid": s.pid,
                    "state": s.state,
                    "session_name": s.session_name,
                    "model": s.model,
                    "parent_id": s.parent_id,
                    "started_at": format_timestamp(s.started_at),
                }
                for s in self._session_view
            ],
            "queue": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                "oldest_age_s": oldest_age,
                "dead_letters": stats.dead_letters,
                "produced": stats.produced,
                "coalesced": stats.coalesced,
                "refused": stats.refused,
                "lost_databases": stats.lost_databases,
                "last_loss": stats.last_loss,
            },
            "delivery": delivery,
            "agent_state": self._sources.stats(),
            "scan": {
                "passes": self._scanner.stats.passes,
                "last_duration_ms": round(self._scanner.stats.last_duration_s * 1000, 3),
                "errors": self._loop_errors,
                "last_error": self._last_loop_error,
            },
        }


def dead_letter_json(d: DeadLetter) -> dict[str, Any]:
    return {
        "seq": d.seq,
        "event_id": d.event_id,
        "session_id": d.session_id,
        "state": d.state,
        "failed_at": format_timestamp(datetime.fromtimestamp(d.failed_at, UTC)),
        "status": d.status,
        "reason": d.reason,
        "body": d.body.decode("utf-8", "replace"),
    }
