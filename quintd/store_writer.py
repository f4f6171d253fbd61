"""Each pass's transitions into the store, in order, even when the state filesystem is
full: the queue's overflow is the store's side's business, not the main loop's.

A full disk (SQLITE_FULL, ENOSPC, EDQUOT) is a state, not a crash loop: the change set
waits in memory, later ones wait behind it (order is kept), and all are written, oldest
first, once there is room. Past :data:`MAX_EVENTS_IN_MEMORY` waiting events the
intermediate idle/active flips are shed (every event carries the whole state, so only
flips are lost); a session's first event and its ``ended`` always stay. Any other error
is the caller's: nothing was committed, and the same transitions come again next pass.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from quintd.model import LifecycleEvent, Session
from quintd.protocol import QueueReport
from quintd.store import Store

log = logging.getLogger("quintd.store")

# Events held in memory while the state filesystem is full, before intermediate flips are
# shed (each session's first event and its `ended` are always kept).
MAX_EVENTS_IN_MEMORY = 100_000


class ChangeSet(Protocol):
    """What one pass writes in one transaction (the tracker's ``Changes``)."""

    @property
    def events(self) -> list[LifecycleEvent]: ...

    @property
    def upserts(self) -> list[Session]: ...

    @property
    def removals(self) -> list[str]: ...


C = TypeVar("C", bound=ChangeSet)


class StoreWriter(Generic[C]):
    """``on_stored`` is called with each change set once it is durable (for the log and
    to wake delivery), whether at once or after waiting for room."""

    def __init__(
        self,
        store: Store,
        on_stored: Callable[[C], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._on_stored = on_stored
        self._clock = clock
        self._waiting: list[C] = []  # oldest first
        self._shed: dict[str, int] = {}  # flips dropped from memory, by state
        self._next_full_log = 0.0

    @property
    def disk_full(self) -> bool:
        return bool(self._waiting)

    def write(self, changes: C) -> int:
        """Store ``changes`` (after any that wait); returns the events stored now. Raises
        what is not a full disk, with nothing committed."""
        if self._waiting and not self._store_waiting():
            self._hold(changes, "earlier transitions wait to be stored first")
            return 0
        try:
            stored = self.store.apply(changes.events, changes.upserts, changes.removals)
        except Exception as exc:
            if not disk_full(exc):
                raise
            self._hold(changes, str(exc))
            return 0
        self._on_stored(changes)
        return stored

    def _store_waiting(self) -> bool:
        """Room again? Store what waited, oldest first; whether all of it is stored."""
        while self._waiting:
            changes = self._waiting[0]
            try:
                self.store.apply(changes.events, changes.upserts, changes.removals)
            except Exception as exc:
                if not disk_full(exc):
                    raise
                return False
            self._waiting.pop(0)
            self._on_stored(changes)
        log.warning("room on the state filesystem again: the waiting events are stored")
        return True

    def _hold(self, changes: C, why: str) -> None:
        self._waiting.append(changes)
        if _count(self._waiting) > MAX_EVENTS_IN_MEMORY:
            self._shed_flips()
        now = self._clock()
        if now >= self._next_full_log:
            self._next_full_log = now + 60.0
            log.error(
                "state filesystem full (%s): %d event(s) wait in memory; they are stored "
                "when there is room again on %s",
                why,
                _count(self._waiting),
                self.store.path.parent,
            )

    def _shed_flips(self) -> None:
        for changes in self._waiting:
            kept = []
            for event in changes.events:
                if event.kind in ("start", "end"):
                    kept.append(event)
                else:
                    self._shed[event.state] = self._shed.get(event.state, 0) + 1
            changes.events[:] = kept

    def report(self) -> QueueReport:
        """The queue as status shows it: the database's counts and what waits in memory
        (from the control thread: copies, as the main loop changes both)."""
        stats = self.store.stats()
        waiting: dict[str, int] = {}
        for changes in list(self._waiting):
            for event in list(changes.events):
                waiting[event.state] = waiting.get(event.state, 0) + 1
        refused_by_state = dict(stats.refused_by_state)
        for state, count in list(self._shed.items()):
            refused_by_state[state] = refused_by_state.get(state, 0) + count
        oldest_age = None
        if stats.oldest_enqueued_at is not None:
            oldest_age = round(max(time.time() - stats.oldest_enqueued_at, 0.0), 3)
        return QueueReport(
            depth=stats.depth,
            bytes=stats.bytes,
            max_bytes=stats.max_bytes,
            oldest_age_s=oldest_age,
            dead_letters=stats.dead_letters,
            produced=stats.produced,
            coalesced=stats.coalesced,
            refused=stats.refused + sum(self._shed.values()),
            lost_databases=stats.lost_databases,
            last_loss=stats.last_loss,
            refused_by_state=refused_by_state,
            disk_full=bool(waiting) or bool(self._waiting),
            waiting_in_memory=sum(waiting.values()),
            waiting_by_state=waiting,
        )


def _count(waiting: Iterable[ChangeSet]) -> int:
    return sum(len(c.events) for c in waiting)


def disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL, or ENOSPC / EDQUOT from the filesystem."""
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
