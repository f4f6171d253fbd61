"""The daemon: builds the parts (scanner, sources, tracker, store, shipper, control
socket) from one :class:`~quintd.settings.Settings`, and owns the main loop.

Signal handlers only record the signal and wake the loop; the loop acts on it.
The loop itself never dies from what it reads: a failed pass is logged, rolled
back and tried again on the next tick.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from quintd import __version__
from quintd.budgets import TokenBucket
from quintd.config import LoadedConfig, running_as_root
from quintd.control import ControlServer
from quintd.errors import AlreadyRunningError, QuintdError
from quintd.identity import machine_id
from quintd.logs import LogFormat, apply_log_settings, fields, register_secret
from quintd.model import Session, format_timestamp
from quintd.notify import Notifier
from quintd.private_files import ensure_private_dir, open_private_file
from quintd.procfs import start_ticks
from quintd.protocol import (
    AgentStateReport,
    Command,
    DeadLetterRow,
    DeliveryReport,
    QueueReport,
    RequeueRefusal,
    RequeueReply,
    RequeueRequest,
    ScanReport,
    SessionRow,
    SettingsReport,
    StatusReport,
    from_json,
    to_json,
)
from quintd.scanner import Scanner
from quintd.settings import Settings, build_settings, restart_only_changes
from quintd.shipper import Shipper
from quintd.signing import SigningResolver
from quintd.sources.homes import candidate_homes
from quintd.sources.manager import SourceManager
from quintd.store import DeadLetter, Store
from quintd.tracker import Changes, SessionTracker
from quintd.waiter import Waiter

log = logging.getLogger("quintd.daemon")

# Events held in memory while the state filesystem is full, before intermediate flips are
# shed (each session's first event and its `ended` are always kept).
MAX_EVENTS_IN_MEMORY = 100_000
# The shortest gap between two passes brought forward by events (exits, new files): a
# burst of events costs one pass, not one each.
EVENT_PASS_GAP_S = 0.05
# Passes brought forward by file events: this many a second, after a burst of so many.
WAKEUPS_PER_S = 2.0
WAKEUP_BURST = 5
# While something is held back (a young agent's state, a signing identity), the longest
# wait for the next pass, whatever scan.interval says.
FOLLOW_UP_S = 0.5


class StateLock:
    """An exclusive lock on the state directory, held for the daemon's lifetime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_private_file(self.path)
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


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        reload_config: Callable[[], LoadedConfig] | None = None,
        notifier: Notifier | None = None,
        log_format: LogFormat | None = None,
    ) -> None:
        """``reload_config`` loads the configuration again (on SIGHUP) the way it was
        loaded at start; ``log_format``: the command line's choice, kept over reloads."""
        self.loaded = loaded
        self.settings = self._settings_from(loaded)
        self._reload_config = reload_config
        self._log_format = log_format
        self._notifier = notifier or Notifier()
        self._reload_requested = False
        self._reloads = 0
        self._last_reload_error: str | None = None
        self._waiter: Waiter | None = None
        self._pass_soon = False  # a file appeared, or an agent exited: pass early
        self._file_pass_soon = False  # a file event asked for an early pass (rate-limited)
        self._deferred_logged: dict[int | None, float] = {}  # uid -> next log allowed
        self._wakeups = TokenBucket(WAKEUPS_PER_S, WAKEUP_BURST)
        self._awaiting_state = False  # young agents whose state has not appeared yet
        self._follow_up = False  # something held back: pass within FOLLOW_UP_S
        self._event_passes = 0
        self._stop_signal: int | None = None
        self._started_mono = time.monotonic()
        self._started_wall = datetime.now(UTC)
        self._lock = StateLock(self.settings.paths.lock_path)
        self._resolver: SigningResolver | None = None
        self._store: Store | None = None
        self._tracker: SessionTracker | None = None
        self._shipper: Shipper | None = None
        self._control: ControlServer | None = None
        self._scanner: Scanner | None = None
        self._sources: SourceManager | None = None
        self._next_watchdog = 0.0
        self._loop_errors = 0
        self._last_loop_error: str | None = None
        self._last_logged_error: str | None = None
        # Change sets that could not be stored (a full disk), oldest first.
        self._backlog: list[Changes] = []
        self._refused_in_memory: dict[str, int] = {}  # shed from the backlog, by state
        self._next_full_log = 0.0
        # What status shows: replaced whole after each pass (the tracker never changes a
        # session in place), so the control thread never sees a pass half done.
        self._session_view: list[Session] = []

    @staticmethod
    def _settings_from(loaded: LoadedConfig) -> Settings:
        # A per-user daemon watches only its own user's agents.
        only_uid = None if running_as_root() else os.geteuid()
        return build_settings(loaded, only_uid=only_uid)

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        os.umask(0o077)
        paths = self.settings.paths
        for key, path in (("state_dir", paths.state_dir), ("runtime_dir", paths.runtime_dir)):
            ensure_private_dir(path, key)
        self._lock.acquire()
        try:
            self._waiter = Waiter(start_ticks, self.settings.loop.kernel_exits)
            self._install_signal_handlers()
            self._build_parts(self.settings)
            assert self._control is not None and self._shipper is not None
            # The socket first: it refuses to start if another daemon answers there.
            self._control.start()
            self._shipper.start()
            self._prospect()
            self._tick()
            log.info(
                "started",
                extra=fields(
                    version=__version__,
                    pid=os.getpid(),
                    config=self.loaded.source or "<defaults>",
                    state_dir=paths.state_dir,
                    endpoint=self.settings.delivery.endpoint,
                    token_set=bool(self.settings.delivery.token),
                    sessions=len(self._session_view),
                ),
            )
            for warning in self.loaded.warnings:
                log.warning("%s", warning)
            # Ready: the first scan is done, the queue and the socket are up.
            self._notifier.ready(f"tracking {len(self._session_view)} session(s)")
            self._main_loop()
            self._notifier.stopping()
            signame = signal.Signals(self._stop_signal or signal.SIGTERM).name
            log.info("stopping", extra=fields(signal=signame))
        finally:
            self._shutdown()
        return 0

    def _build_parts(self, settings: Settings) -> None:
        """Every part, from one settings value: the one place start-up builds them."""
        self._store = Store(settings.paths.database_path, settings.store)
        # Identities examined before a restart are not examined again.
        self._resolver = SigningResolver(persist=self._store)
        self._resolver.on_resolved = self._on_identity
        self._tracker = SessionTracker(
            machine_id(settings.paths.state_dir), settings=settings.tracker
        )
        self._tracker.restore(self._store.load_sessions(), self._store.load_ended())
        self._scanner = Scanner(settings.scanner, self._resolver)
        self._sources = SourceManager(settings.sources)
        self._sources.on_change = self._on_file_change
        self._shipper = Shipper(self._store, settings.delivery)
        self._control = ControlServer(
            settings.control,
            {
                Command.STATUS: self._status,
                Command.DEAD_LETTERS: self._dead_letters,
                Command.REQUEUE: self._requeue,
            },
        )

    def _apply_settings(self, settings: Settings) -> None:
        """Hand every part its new settings (a reload)."""
        assert self._scanner is not None and self._sources is not None
        assert self._tracker is not None and self._store is not None
        assert self._shipper is not None and self._control is not None
        register_secret(settings.delivery.token)
        apply_log_settings(settings.log.level, self._log_format or settings.log.format)
        self._scanner.reconfigure(settings.scanner)
        self._sources.reconfigure(settings.sources)
        self._tracker.reconfigure(settings.tracker)
        self._store.reconfigure(settings.store)
        # The delivery thread applies it between requests (the main loop never waits on
        # the network); a refused token is retried with the new one at once.
        self._shipper.reconfigure(settings.delivery)
        self._control.reconfigure(settings.control)
        if self._waiter is not None and settings.loop.kernel_exits != (
            self.settings.loop.kernel_exits
        ):
            # A new wait (on this thread: a wake lost meanwhile is this reload's pass).
            old, self._waiter = self._waiter, Waiter(start_ticks, settings.loop.kernel_exits)
            old.close()
        self.settings = settings

    def _prospect(self) -> None:
        """Watch the agents' state directories in the homes of the users watched, so that
        an agent's first write wakes the loop (at start and on reload: new users)."""
        assert self._sources is not None
        if not self.settings.sources.watch:
            return
        try:
            self._sources.prospect(candidate_homes(self.settings.scanner.only_uid))
        except Exception as exc:  # e.g. a broken directory service: starts come by scan
            log.warning("cannot list the users' homes to watch: %s", exc)

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum
        if self._sources is not None:
            self._sources.interrupt()
        self._wake()

    def _on_hangup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.wake()

    def _on_identity(self) -> None:
        """From the signing thread: a held announcement may go now."""
        self._pass_soon = True
        self._wake()

    def _on_file_change(self, appeared: bool) -> None:
        """From the watcher's thread. A file that appears may be an agent's first write;
        while a young agent's state is awaited, any change may be it. Other changes (an
        agent at work appending to its transcript) wait for the next pass. Passes brought
        forward this way are rate-limited (:data:`WAKEUPS`): a user creating and deleting
        files in a watched directory once made 21 whole passes a second."""
        if (appeared or self._awaiting_state) and not self._file_pass_soon:
            self._file_pass_soon = True
            self._wake()

    def _main_loop(self) -> None:
        """Sleep until the next pass is due: every ``scan.interval``, and early (at most
        every EVENT_PASS_GAP_S) when the kernel reports an agent's exit or a file appears
        under a watched state directory. Nothing else wakes the daemon."""
        assert self._waiter is not None
        now = time.monotonic()
        next_touch = now + self.settings.loop.touch_interval
        next_tick = now + self.settings.loop.scan_interval
        last_pass = now
        watchdog = self._notifier.watchdog_interval
        self._next_watchdog = now
        while self._stop_signal is None:
            now = time.monotonic()
            if watchdog is not None and now >= self._next_watchdog:
                # From the main loop itself: a stuck loop stops the pings.
                self._notifier.watchdog()
                self._next_watchdog = now + watchdog
            wake_at = min(next_tick, self._next_watchdog) if watchdog else next_tick
            if self._file_pass_soon and self._wakeups.ready(now):
                self._file_pass_soon = False
                self._pass_soon = True
            elif self._file_pass_soon:
                wake_at = min(wake_at, self._wakeups.next_token(now))
            if self._pass_soon:
                wake_at = min(wake_at, last_pass + EVENT_PASS_GAP_S)
            elif self._follow_up:
                wake_at = min(wake_at, last_pass + FOLLOW_UP_S)
            woke = self._waiter.wait(max(wake_at - time.monotonic(), 0.0))
            if self._stop_signal is not None:
                break
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            if woke.exited:
                self._pass_soon = True
            now = time.monotonic()
            early = (self._pass_soon and now >= last_pass + EVENT_PASS_GAP_S) or (
                self._follow_up and now >= last_pass + FOLLOW_UP_S
            )
            if now < next_tick and not early:
                continue
            if now >= next_tick:
                # No burst after a stall; the interval may have changed on reload.
                next_tick = max(next_tick + self.settings.loop.scan_interval, now)
            else:
                self._event_passes += 1
            self._pass_soon = False
            last_pass = now
            self._tick()
            if self._control is not None:
                self._control.check()  # deleted or replaced: bound again
            if now >= next_touch:
                next_touch = now + self.settings.loop.touch_interval
                self._touch()

    def _reload(self) -> None:
        """Apply a new configuration; a broken one is rejected and the old one kept."""
        if self._reload_config is None:
            return
        self._notifier.reloading()
        try:
            loaded = self._reload_config()
        except QuintdError as exc:
            self._last_reload_error = f"{format_timestamp(datetime.now(UTC))} {exc}"
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self._notifier.ready("reload rejected")
            return
        new = self._settings_from(loaded)
        for key in restart_only_changes(self.settings, new):
            log.warning("%s changed: it waits for a restart to take effect", key)
        # What needs a restart stays as it runs.
        new = new.model_copy(
            update={"paths": self.settings.paths, "control": self.settings.control}
        )
        self.loaded = replace(
            loaded, state_dir=self.loaded.state_dir, runtime_dir=self.loaded.runtime_dir
        )
        self._apply_settings(new)
        self._prospect()
        for warning in loaded.warnings:
            log.warning("%s", warning)
        self._reloads += 1
        self._last_reload_error = None
        log.info("configuration reloaded", extra=fields(config=loaded.source or "<defaults>"))
        self._notifier.ready("configuration reloaded")

    def _tick(self) -> None:
        assert self._tracker is not None and self._store is not None
        assert self._scanner is not None and self._sources is not None
        try:
            processes = self._scanner.scan()
            facts, pending = self._sources.observe(processes)
            # Held back (a young agent's state, a signing identity): look again soon,
            # whatever the interval.
            self._awaiting_state = bool(pending)
            self._follow_up = self._awaiting_state or self._scanner.settling()
            changes = self._tracker.plan(processes, facts, pending, self._sources.waiting)
        except Exception as exc:
            self._pass_failed(exc)
            return
        if self._backlog:
            self._store_backlog()
        stored = 0
        try:
            if self._backlog:
                raise _StillFull("earlier transitions wait to be stored first")
            stored = self._store.apply(changes.events, changes.upserts, changes.removals)
        except Exception as exc:
            if not _disk_full(exc):
                # Nothing committed: the tracker stays as it was, and the next pass finds
                # the same transitions again.
                self._pass_failed(exc)
                return
            # No room on the state filesystem: a state, not a crash loop. The tracker
            # moves on (its sessions stay in memory, so an `ended` is still produced) and
            # the change set waits in memory, in order, until there is room.
            self._hold_in_memory(changes, exc)
        self._tracker.commit(changes)
        self._session_view = self._tracker.sessions
        # Exits of the agents seen now come from the kernel; one gone already (or its pid
        # reused) before it was watched: pass again at once.
        if self._waiter is not None and self._waiter.watch(self._scanner.exit_watch()):
            self._pass_soon = True
        if self._tracker.deferred:
            self._log_deferred()
        if stored:
            self._log_events(changes)
            if self._shipper is not None:
                self._shipper.wake()

    def _log_deferred(self) -> None:
        """Once a minute per user: its new sessions wait (its announcement budget)."""
        assert self._tracker is not None
        now = time.monotonic()
        for uid, count in self._tracker.deferred.items():
            if now < self._deferred_logged.get(uid, 0.0):
                continue
            self._deferred_logged[uid] = now + 60.0
            log.warning(
                "user %s's agents announced %d new sessions in the last minute "
                "(sessions.new_per_user_per_minute): %d more wait their turn",
                uid,
                self.settings.tracker.new_per_user_per_minute,
                count,
            )

    def _log_events(self, changes: Changes) -> None:
        for event in changes.events:
            log.info(
                "session %s",
                event.kind,
                extra=fields(
                    session_id=event.session_id,
                    state=event.state,
                    platform=event.platform,
                    pid=changes.pids.get(event.session_id),
                    uid=changes.uids.get(event.session_id),
                ),
            )

    def _hold_in_memory(self, changes: Changes, exc: Exception) -> None:
        self._backlog.append(changes)
        waiting = sum(len(c.events) for c in self._backlog)
        if waiting > MAX_EVENTS_IN_MEMORY:
            self._shed_backlog()
        now = time.monotonic()
        if now >= self._next_full_log:
            self._next_full_log = now + 60.0
            log.error(
                "state filesystem full (%s): %d event(s) wait in memory; they are stored "
                "when there is room again on %s",
                exc,
                sum(len(c.events) for c in self._backlog),
                self.settings.paths.state_dir,
            )

    def _shed_backlog(self) -> None:
        """Too much waiting in memory: drop the intermediate idle/active flips (every event
        carries the whole state, so only flips are lost); a session's first event and its
        `ended` always stay. Counted as refused, by state."""
        for changes in self._backlog:
            kept = []
            for event in changes.events:
                if event.kind in ("start", "end"):
                    kept.append(event)
                else:
                    self._refused_in_memory[event.state] = (
                        self._refused_in_memory.get(event.state, 0) + 1
                    )
            changes.events[:] = kept

    def _store_backlog(self) -> None:
        """Room again? Store what waited, oldest first."""
        assert self._store is not None
        while self._backlog:
            changes = self._backlog[0]
            try:
                self._store.apply(changes.events, changes.upserts, changes.removals)
            except Exception as exc:
                if not _disk_full(exc):
                    self._pass_failed(exc)
                return
            self._backlog.pop(0)
            self._log_events(changes)
        log.warning("room on the state filesystem again: the waiting events are stored")
        if self._shipper is not None:
            self._shipper.wake()

    def _pass_failed(self, exc: Exception) -> None:
        """Counted every time; logged with its traceback once per distinct error."""
        self._loop_errors += 1
        what = f"{type(exc).__name__}: {exc}"
        self._last_loop_error = f"{format_timestamp(datetime.now(UTC))} {what}"
        if what != self._last_logged_error:
            self._last_logged_error = what
            log.exception("scan pass failed; will retry (the same error is not logged again)")

    def _touch(self) -> None:
        assert self._tracker is not None and self._store is not None
        try:
            self._store.touch_sessions(self._tracker.sessions)
        except Exception as exc:
            if not _disk_full(exc):
                self._pass_failed(exc)

    def _shutdown(self) -> None:
        if self._control is not None:
            self._control.stop()
        if self._tracker is not None and self._store is not None:
            self._touch()
        if self._shipper is not None:
            self._shipper.stop(self._shipper.effective_settings.drain_timeout)
        if self._resolver is not None:
            self._resolver.close()  # before the store: it writes identities there
        if self._store is not None and (self._shipper is None or not self._shipper.is_alive()):
            self._store.close()
        self._notifier.close()
        if self._sources is not None:
            self._sources.close()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        self._lock.release()

    # -- control commands -----------------------------------------------------------------

    def _dead_letters(self, _request: Mapping[str, Any]) -> list[dict[str, Any]]:
        assert self._store is not None
        return [to_json(dead_letter_row(d)) for d in self._store.dead_letters()]

    def _requeue(self, request: Mapping[str, Any]) -> dict[str, Any]:
        assert self._store is not None and self._shipper is not None
        ask = from_json(
            RequeueRequest, {k: v for k, v in request.items() if k != "command"}, "request"
        )
        moved, refused = self._store.requeue(ask.seqs, force=ask.force)
        log.info("requeued %d dead letter(s), refused %d", moved, len(refused))
        self._shipper.wake()
        reply: dict[str, Any] = to_json(
            RequeueReply(requeued=moved, refused=[RequeueRefusal(s, r) for s, r in refused])
        )
        return reply

    # -- status ---------------------------------------------------------------------------

    def _status(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        report: dict[str, Any] = to_json(self.status_report())
        return report

    def status_report(self) -> StatusReport:
        waiter = self._waiter
        assert self._tracker is not None and self._store is not None
        assert self._shipper is not None and self._scanner is not None
        assert self._sources is not None
        stats = self._store.stats()
        waiting: dict[str, int] = {}
        for changes in list(self._backlog):  # a copy: the main loop changes it
            for event in list(changes.events):
                waiting[event.state] = waiting.get(event.state, 0) + 1
        refused_by_state = dict(stats.refused_by_state)
        for state, count in list(self._refused_in_memory.items()):
            refused_by_state[state] = refused_by_state.get(state, 0) + count
        delivery = self._shipper.status()
        oldest_age = None
        if stats.oldest_enqueued_at is not None:
            oldest_age = round(max(time.time() - stats.oldest_enqueued_at, 0.0), 3)
        mono = time.monotonic()
        delivery_settings = self._shipper.effective_settings
        return StatusReport(
            version=__version__,
            pid=os.getpid(),
            started_at=format_timestamp(self._started_wall),
            uptime_s=round(mono - self._started_mono, 3),
            config_file=str(self.loaded.source) if self.loaded.source else None,
            reloads=self._reloads,
            last_reload_error=self._last_reload_error,
            state_dir=str(self.settings.paths.state_dir),
            endpoint=delivery_settings.endpoint,
            token_set=bool(delivery_settings.token),
            sessions=[
                SessionRow(
                    session_id=s.session_id,
                    platform=s.platform,
                    pid=s.pid,
                    state=s.state,
                    session_name=s.session_name,
                    model=s.model,
                    parent_id=s.parent_id,
                    started_at=format_timestamp(s.started_at),
                    in_state_s=round(max(mono - s.state_since, 0.0), 3),
                    signing_id=s.signing_id,
                )
                for s in self._session_view
            ],
            queue=QueueReport(
                depth=stats.depth,
                bytes=stats.bytes,
                max_bytes=stats.max_bytes,
                oldest_age_s=oldest_age,
                dead_letters=stats.dead_letters,
                produced=stats.produced,
                coalesced=stats.coalesced,
                refused=stats.refused + sum(self._refused_in_memory.values()),
                lost_databases=stats.lost_databases,
                last_loss=stats.last_loss,
                refused_by_state=refused_by_state,
                disk_full=bool(waiting) or bool(self._backlog),
                waiting_in_memory=sum(waiting.values()),
                waiting_by_state=waiting,
            ),
            delivery=DeliveryReport(
                waiting_for_token=delivery.waiting_for_token,
                delivered=delivery.delivered,
                dead_lettered=delivery.dead_lettered,
                last_success=delivery.last_success,
                last_error=delivery.last_error,
                paused=delivery.paused,
                next_attempt_at=delivery.next_attempt_at,
                alive=delivery.alive,
                pace=delivery.pace,
                pace_rate=delivery.pace_rate,
            ),
            agent_state=AgentStateReport(
                **{
                    **self._sources.stats(),
                    **self._sources.budgets(),
                    "refused_claims": self._tracker.foreign_claims,
                }
            ),
            scan=ScanReport(
                passes=self._scanner.stats.passes,
                last_duration_ms=round(self._scanner.stats.last_duration_s * 1000, 3),
                errors=self._loop_errors,
                last_error=self._last_loop_error,
                early_passes=self._event_passes,
                exits_from=waiter.method if waiter is not None else "scan",
                identity_refused=dict(self._resolver.refused) if self._resolver else {},
                deferred_sessions=sum(self._tracker.deferred.values()),
                waiting_turn=self._tracker.queued,
                waiting_unremembered=self._tracker.overflow,
                passes_put_off=self._wakeups.refused,
            ),
            settings=SettingsReport(
                scan_interval=self.settings.loop.scan_interval,
                kernel_exits=self.settings.loop.kernel_exits,
                platforms=len(self._scanner.settings.platforms),
                idle_after=self._tracker.settings.idle_after,
                new_per_user_per_minute=self._tracker.settings.new_per_user_per_minute,
                watches_per_user=self._sources.settings.watches_per_user,
                max_bytes=self._store.settings.max_bytes,
                min_free_disk=self._store.settings.min_free_disk,
                endpoint=delivery_settings.endpoint,
                timeout=delivery_settings.timeout,
                batch_size=delivery_settings.batch_size,
                flush_interval=delivery_settings.flush_interval,
                batch_body=delivery_settings.batch_body,
                in_flight=delivery_settings.in_flight,
                drain_timeout=delivery_settings.drain_timeout,
                start_jitter=delivery_settings.start_jitter,
                log_level=logging.getLevelName(logging.getLogger().level).lower(),
                log_format=self._log_format or self.settings.log.format,
            ),
        )


class _StillFull(sqlite3.OperationalError):
    """Earlier change sets still wait in memory: later ones wait behind them (order)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"database or disk is full ({reason})")


def _disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL, or ENOSPC / EDQUOT from the filesystem."""
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def dead_letter_row(d: DeadLetter) -> DeadLetterRow:
    return DeadLetterRow(
        seq=d.seq,
        event_id=d.event_id,
        session_id=d.session_id,
        state=d.state,
        failed_at=format_timestamp(datetime.fromtimestamp(d.failed_at, UTC)),
        status=d.status,
        reason=d.reason,
        body=d.body.decode("utf-8", "replace"),
    )
