"""The pipeline's parts, built from one :class:`~quintd.settings.Settings` value, handed
new settings together on a reload, and closed together, in the order their data flows:
scanner -> sources -> tracker -> store (through its writer) -> shipper, with the signing
resolver beside the scanner and the control socket beside them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from quintd.control import ControlServer, Handler
from quintd.identity import machine_id
from quintd.logs import LogFormat, apply_log_settings, register_secret
from quintd.protocol import Command
from quintd.queue_commands import dead_letters_handler, requeue_handler
from quintd.scanner import Scanner
from quintd.settings import Settings
from quintd.shipper import Shipper
from quintd.signing import SigningResolver
from quintd.signing.cache import StoredSigningCache
from quintd.sources.manager import SourceManager
from quintd.store import Store
from quintd.store_writer import StoreWriter
from quintd.tracker import Changes, SessionTracker

log = logging.getLogger("quintd.daemon")


@dataclass
class Parts:
    store: Store
    writer: StoreWriter[Changes]
    resolver: SigningResolver
    tracker: SessionTracker
    scanner: Scanner
    sources: SourceManager
    shipper: Shipper
    control: ControlServer

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        on_stored: Callable[[Changes], None],
        on_identity: Callable[[], None],
        on_file_change: Callable[[bool], None],
        status: Handler,
    ) -> Parts:
        """Every part, from one settings value: the one place they are built. Threads
        (the shipper's, the socket's) are started by the caller."""
        store = Store(settings.paths.database_path, settings.store)
        try:
            # Identities examined before a restart are not examined again.
            resolver = SigningResolver(persist=StoredSigningCache(store.transaction))
            resolver.on_resolved = on_identity
            tracker = SessionTracker(
                machine_id(settings.paths.state_dir), settings=settings.tracker
            )
            tracker.restore(store.load_sessions(), store.load_ended())
            sources = SourceManager(settings.sources)
            sources.on_change = on_file_change
            shipper = Shipper(store, settings.delivery)
            commands: dict[str, Handler] = {
                Command.STATUS: status,
                Command.DEAD_LETTERS: dead_letters_handler(store),
                Command.REQUEUE: requeue_handler(store, shipper),
            }
            return cls(
                store=store,
                writer=StoreWriter(store, on_stored),
                resolver=resolver,
                tracker=tracker,
                scanner=Scanner(settings.scanner, resolver),
                sources=sources,
                shipper=shipper,
                control=ControlServer(settings.control, commands),
            )
        except BaseException:
            store.close()
            raise

    def reconfigure(self, settings: Settings, log_format: LogFormat | None) -> None:
        """Hand every part its new settings (a reload)."""
        register_secret(settings.delivery.token)
        apply_log_settings(settings.log.level, log_format or settings.log.format)
        self.scanner.reconfigure(settings.scanner)
        self.sources.reconfigure(settings.sources)
        self.tracker.reconfigure(settings.tracker)
        self.store.reconfigure(settings.store)
        # The delivery thread applies it between requests (the main loop never waits on
        # the network); a refused token is retried with the new one at once.
        self.shipper.reconfigure(settings.delivery)
        self.control.reconfigure(settings.control)

    def touch(self) -> None:
        """Note that the sessions were seen now (should they die while quintd is down)."""
        self.store.touch_sessions(self.tracker.sessions)

    def close(self, touch: Callable[[], None]) -> None:
        """Stop taking commands, ``touch`` the sessions, drain delivery (up to
        ``queue.drain_timeout``), then close the rest."""
        self.control.stop()
        touch()
        self.shipper.stop(self.shipper.effective_settings.drain_timeout)
        self.resolver.close()  # before the store: it writes identities there
        if not self.shipper.is_alive():
            self.store.close()
        self.sources.close()
