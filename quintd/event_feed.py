"""The kernel's process events, feeding the scanner (Linux, as root).

Subscribed at start when ``scan.process_events`` is on; where the kernel refuses (not
root, a container's pid namespace, a kernel without ``CONFIG_PROC_EVENTS``) the scanner
lists /proc every pass, as before, and :attr:`EventFeed.method` says ``scan``. The socket
joins the main loop's one wait (:meth:`Waiter.add_reader`); each time it is readable one
batch is read and handed to :meth:`Scanner.feed`, which looks at once at the execs that
may be agents. A socket that fails later is dropped and the scan takes over.
"""

from __future__ import annotations

import logging

from quintd.proc_events import READ_GAP_S, ProcEvents, ProcEventsUnavailable
from quintd.scanner import Scanner
from quintd.waiter import Waiter, Wakeup

log = logging.getLogger("quintd.daemon")


class EventFeed:
    def __init__(self, scanner: Scanner, events: ProcEvents | None) -> None:
        self._scanner = scanner
        self._events = events
        self._stats = events.stats if events is not None else None
        self._earlier = (0, 0)  # (read, dropped) by subscriptions closed since start

    @classmethod
    def start(cls, scanner: Scanner, enabled: bool, full_listing_interval: float) -> EventFeed:
        if not enabled:
            return cls(scanner, None)
        try:
            events = ProcEvents.open()
        except ProcEventsUnavailable as exc:
            log.info("no process events from the kernel (%s): /proc is listed each pass", exc)
            return cls(scanner, None)
        scanner.follow_events(full_listing_interval)
        return cls(scanner, events)

    def reconfigure(self, enabled: bool, full_listing_interval: float, waiter: Waiter) -> None:
        """A reload: subscribe or unsubscribe, or list /proc on the new schedule."""
        if not enabled:
            if self._events is not None:
                waiter.remove_reader(self._events.fileno())
                self.close()
                self._scanner.follow_scan()
            return
        if self._events is None:
            started = EventFeed.start(self._scanner, True, full_listing_interval)
            self._events, self._stats = started._events, started._stats
            self.attach(waiter)
        else:
            self._scanner.follow_events(full_listing_interval)

    @property
    def method(self) -> str:
        return "connector" if self._events is not None else "scan"

    @property
    def read(self) -> int:
        """Events read from the kernel (the socket's datagrams)."""
        return self._earlier[0] + (self._stats.received if self._stats is not None else 0)

    @property
    def dropped(self) -> int:
        """Events the kernel dropped (the socket was full): a listing makes up for them."""
        return self._earlier[1] + (self._stats.dropped if self._stats is not None else 0)

    def attach(self, waiter: Waiter) -> None:
        """Wake ``waiter`` when events wait to be read (a new waiter after a reload too)."""
        if self._events is not None:
            waiter.add_reader(self._events.fileno(), gap=READ_GAP_S)

    def handle(self, woke: Wakeup, waiter: Waiter) -> bool:
        """Read what the wait found; True if a pass should come soon (an agent found or
        exited, or events were lost)."""
        events = self._events
        if events is None or events.fileno() not in woke.readable:
            return False
        try:
            return self._scanner.feed(events.read())
        except ProcEventsUnavailable as exc:
            log.warning("process events stopped (%s): /proc is listed each pass", exc)
            waiter.remove_reader(events.fileno())
            self.close()
            self._scanner.follow_scan()
            return True

    def close(self) -> None:
        if self._events is not None:
            self._earlier = (self.read, self.dropped)
            self._events.close()
            self._events, self._stats = None, None
