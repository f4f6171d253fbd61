"""The daemon: builds the parts (scanner, sources, tracker, store, shipper, control
socket) from one :class:`~quintd.settings.Settings`, and runs the main loop.

Each part owns its job and reports itself; the daemon only composes them. Signal
handlers only record the signal and wake the loop; the loop acts on it. The loop itself
never dies from what it reads: a failed pass is logged, rolled back and tried again on
the next tick.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from types import FrameType

from quintd import __version__
from quintd.config import LoadedConfig, running_as_root
from quintd.errors import QuintdError
from quintd.event_feed import EventFeed
from quintd.logs import LogFormat, fields
from quintd.loop_log import DeferredNotice, PassErrors, log_stored
from quintd.model import Session, format_timestamp
from quintd.notify import Notifier
from quintd.parts import Parts
from quintd.pass_schedule import PassSchedule
from quintd.private_files import ensure_private_dir
from quintd.procfs import start_ticks
from quintd.protocol import StatusReport, to_json
from quintd.run_lock import StateLock
from quintd.settings import Settings, build_settings, settings_for_reload
from quintd.sources.homes import candidate_homes
from quintd.status_report import scan_report, session_rows, settings_report
from quintd.store_writer import disk_full
from quintd.tracker import Changes
from quintd.waiter import Waiter

log = logging.getLogger("quintd.daemon")


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
        self._schedule = PassSchedule(self.settings.loop.scan_interval, time.monotonic())
        self._awaiting_state = False  # young agents whose state has not appeared yet
        self._stop_signal: int | None = None
        self._started_mono = time.monotonic()
        self._started_wall = datetime.now(UTC)
        self._lock = StateLock(self.settings.paths.lock_path)
        self.parts: Parts | None = None
        self._feed: EventFeed | None = None
        self.pass_errors = PassErrors()
        self._deferred = DeferredNotice()
        # What status shows: replaced whole after each pass (the tracker never changes a
        # session in place), so the control thread never sees a pass half done.
        self.session_view: list[Session] = []

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
            parts = self.build_parts(self.settings)
            loop = self.settings.loop
            self._feed = EventFeed.start(
                parts.scanner, loop.process_events, loop.full_listing_interval
            )
            self._feed.attach(self._waiter)
            # The socket first: it refuses to start if another daemon answers there.
            parts.control.start()
            parts.shipper.start()
            self._prospect()
            self.tick()
            log.info(
                "started",
                extra=fields(
                    version=__version__,
                    pid=os.getpid(),
                    config=self.loaded.source or "<defaults>",
                    state_dir=paths.state_dir,
                    endpoint=self.settings.delivery.endpoint,
                    token_set=bool(self.settings.delivery.token),
                    sessions=len(self.session_view),
                ),
            )
            for warning in self.loaded.warnings:
                log.warning("%s", warning)
            # Ready: the first scan is done, the queue and the socket are up.
            self._notifier.ready(f"tracking {len(self.session_view)} session(s)")
            self._main_loop()
            self._notifier.stopping()
            signame = signal.Signals(self._stop_signal or signal.SIGTERM).name
            log.info("stopping", extra=fields(signal=signame))
        finally:
            self._shutdown()
        return 0

    def build_parts(self, settings: Settings) -> Parts:
        self.parts = Parts.build(
            settings,
            on_stored=self._stored,
            on_identity=self._on_identity,
            on_file_change=self._on_file_change,
            status=lambda _request: to_json(self.status_report()),
        )
        return self.parts

    def _apply_settings(self, settings: Settings) -> None:
        """Hand every part its new settings (a reload)."""
        assert self.parts is not None
        self.parts.reconfigure(settings, self._log_format)
        self._schedule.interval = settings.loop.scan_interval
        loop, running = settings.loop, self.settings.loop
        if (
            self._feed is not None
            and self._waiter is not None
            and (
                (loop.process_events, loop.full_listing_interval)
                != (running.process_events, running.full_listing_interval)
            )
        ):
            self._feed.reconfigure(loop.process_events, loop.full_listing_interval, self._waiter)
        if self._waiter is not None and settings.loop.kernel_exits != (
            self.settings.loop.kernel_exits
        ):
            # A new wait (on this thread: a wake lost meanwhile is this reload's pass).
            old, self._waiter = self._waiter, Waiter(start_ticks, settings.loop.kernel_exits)
            old.close()
            if self._feed is not None:
                self._feed.attach(self._waiter)
        self.settings = settings

    def _prospect(self) -> None:
        """Watch the agents' state directories in the homes of the users watched, so that
        an agent's first write wakes the loop (at start and on reload: new users)."""
        assert self.parts is not None
        if not self.settings.sources.watch:
            return
        try:
            self.parts.sources.prospect(candidate_homes(self.settings.scanner.only_uid))
        except Exception as exc:  # e.g. a broken directory service: starts come by scan
            log.warning("cannot list the users' homes to watch: %s", exc)

    def _shutdown(self) -> None:
        if self.parts is not None:
            self.parts.close(touch=self._touch)
        if self._feed is not None:
            self._feed.close()
        self._notifier.close()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        self._lock.release()

    # -- signals and wake-ups (from other threads: record, wake the loop) -----------------

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum
        if self.parts is not None:
            self.parts.sources.interrupt()
        self._wake()

    def _on_hangup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.wake()

    def _on_identity(self) -> None:
        """From the signing thread: a held announcement may go now."""
        self._schedule.soon = True
        self._wake()

    def _on_file_change(self, appeared: bool) -> None:
        """From the watcher's thread. A file that appears may be an agent's first write;
        while a young agent's state is awaited, any change may be it. Other changes (an
        agent at work appending to its transcript) wait for the next pass."""
        if (appeared or self._awaiting_state) and not self._schedule.file_soon:
            self._schedule.file_soon = True
            self._wake()

    # -- the loop -----------------------------------------------------------------------

    def _main_loop(self) -> None:
        """Sleep until the next pass is due (:class:`~quintd.pass_schedule.PassSchedule`);
        the watchdog is fed from here, so a stuck loop stops the pings."""
        assert self._waiter is not None
        schedule = self._schedule
        next_touch = time.monotonic() + self.settings.loop.touch_interval
        watchdog = self._notifier.watchdog_interval
        next_watchdog = time.monotonic()
        while self._stop_signal is None:
            now = time.monotonic()
            if watchdog is not None and now >= next_watchdog:
                self._notifier.watchdog()
                next_watchdog = now + watchdog
            wake_at = schedule.wake_at(now)
            if watchdog is not None:
                wake_at = min(wake_at, next_watchdog)
            woke = self._waiter.wait(max(wake_at - time.monotonic(), 0.0))
            if self._stop_signal is not None:
                break
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            if woke.exited or (self._feed is not None and self._feed.handle(woke, self._waiter)):
                schedule.soon = True
            now = time.monotonic()
            if not schedule.due(now):
                continue
            self.tick()
            if self.parts is not None:
                self.parts.control.check()  # deleted or replaced: bound again
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
        new = settings_for_reload(self.settings, self._settings_from(loaded))
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

    def tick(self) -> None:
        """One pass: scan -> sources -> tracker -> store (the shipper is woken)."""
        assert self.parts is not None
        parts = self.parts
        try:
            processes = parts.scanner.scan()
            facts, pending = parts.sources.observe(processes)
            # Held back (a young agent's state, a signing identity): look again soon,
            # whatever the interval.
            self._awaiting_state = bool(pending)
            self._schedule.follow_up = self._awaiting_state or parts.scanner.settling()
            changes = parts.tracker.plan(processes, facts, pending, parts.sources.waiting)
            # A full disk holds the changes in memory (the writer's business): the tracker
            # moves on. Any other failure committed nothing: the next pass finds the same
            # transitions again.
            parts.writer.write(changes)
        except Exception as exc:
            self.pass_errors.failed(exc)
            return
        parts.tracker.commit(changes)
        self.session_view = parts.tracker.sessions
        # Exits of the agents seen now come from the kernel; one gone already (or its pid
        # reused) before it was watched: pass again at once.
        if self._waiter is not None and self._waiter.watch(parts.scanner.exit_watch()):
            self._schedule.soon = True
        if parts.tracker.deferred:
            self._deferred.note(
                parts.tracker.deferred, self.settings.tracker.new_per_user_per_minute
            )

    def _stored(self, changes: Changes) -> None:
        """A change set is durable (now, or after waiting for room): log it, send it."""
        log_stored(changes)
        if changes.events and self.parts is not None:
            self.parts.shipper.wake()

    def _touch(self) -> None:
        assert self.parts is not None
        try:
            self.parts.touch()
        except Exception as exc:
            if not disk_full(exc):
                self.pass_errors.failed(exc)

    # -- status -------------------------------------------------------------------------

    def status_report(self) -> StatusReport:
        """Each part's own report, put together (from the control thread)."""
        assert self.parts is not None
        parts = self.parts
        mono = time.monotonic()
        exits_from = self._waiter.method if self._waiter is not None else "scan"
        feed = self._feed if self._feed is not None else EventFeed(parts.scanner, None)
        delivery = parts.shipper.effective_settings
        return StatusReport(
            version=__version__,
            pid=os.getpid(),
            started_at=format_timestamp(self._started_wall),
            uptime_s=round(mono - self._started_mono, 3),
            config_file=str(self.loaded.source) if self.loaded.source else None,
            reloads=self._reloads,
            last_reload_error=self._last_reload_error,
            state_dir=str(self.settings.paths.state_dir),
            endpoint=delivery.endpoint,
            token_set=bool(delivery.token),
            sessions=session_rows(self.session_view, mono),
            queue=parts.writer.report(),
            delivery=parts.shipper.report(),
            agent_state=parts.sources.report(refused_claims=parts.tracker.foreign_claims),
            scan=scan_report(parts, self._schedule, exits_from, feed, self.pass_errors),
            settings=settings_report(
                self.settings.loop, parts, self._log_format or self.settings.log.format
            ),
        )
