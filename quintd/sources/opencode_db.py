"""OpenCode's database (and its forks' that keep its schema): the sessions in it that can
belong to a running process, read only when it changed. The reader (``opencode.py``) ties
them to processes; the tables, and the queries that read them: ``opencode_queries.py``.

Read only when the database or its ``-wal`` changed (see ``WatchedDatabase``); then the
events logged since the last read and the sessions added since (by rowid) name the
sessions to read again; without an ``event`` table, every session updated since the
horizon.
"""

from __future__ import annotations

from pathlib import Path

from quintd.sources.changes import diff_writes
from quintd.sources.files import ReadStats
from quintd.sources.opencode_queries import Batch, Session, read_changes
from quintd.sources.sqlite_sessions import MissingColumns, WatchedDatabase

MAX_SESSIONS = 5000  # kept per database (sessions that can belong to a running process)
RETRY_S = (1.0, 60.0)  # a database that could not be read: tried again after this, doubling


class Database(WatchedDatabase):
    """One OpenCode database: the sessions in it that can belong to a running process."""

    def __init__(self, root: Path, path: Path, watched: bool, stats: ReadStats) -> None:
        super().__init__(root, path, stats, backoff=RETRY_S)
        self.watched = watched  # its changes reach the reader as file events
        self.sessions: dict[str, Session] = {}
        self.version = 0  # bumped whenever what it holds changed
        self.json_ok = True
        self._loaded_from: float | None = None  # the horizon of the last full read
        self._read_once = False  # what the first read finds is history, not work
        self._event_rowid: int | None = None
        self._session_rowid = 0
        self._asked: set[str] = set()  # ids a command line asked for, found or not
        self._forgot_at: tuple[float, int] | None = None

    def refresh(self, horizon: float, wanted: set[str], now: float) -> None:
        """Read what changed since the last read, if anything did."""
        wanted = wanted - self.sessions.keys() - self._asked
        full = self._loaded_from is None or horizon < self._loaded_from - 1.0
        seen = self.due(now, force=full or bool(wanted))
        if seen is None:
            return
        try:
            batch = self.read(
                seen,
                now,
                lambda conn: read_changes(
                    conn,
                    full=full,
                    horizon_ms=int(horizon * 1000),
                    event_rowid=self._event_rowid,
                    session_rowid=self._session_rowid,
                    wanted=wanted,
                    known=set(self.sessions),
                    json_ok=self.json_ok,
                ),
            )
        except MissingColumns:
            # Not the tables a conversation is read from: the processes are sessions of
            # their own, until the database changes.
            self._forget_all()
            self._loaded_from = horizon
            return
        if batch is None:
            return  # again when it changes, or after a while
        self._asked |= wanted
        self.json_ok = batch.json_ok
        self.stats.lines += len(batch.rows) + batch.bad_rows
        self.stats.garbage += batch.bad_rows
        self._apply(batch, horizon, wanted, now)

    def _apply(self, batch: Batch, horizon: float, wanted: set[str], now: float) -> None:
        first, self._read_once = not self._read_once, True
        previous = self.sessions
        returned = {row.id for row in batch.rows}
        if batch.full:
            self.sessions = {}
            self._loaded_from = horizon
        else:
            for sid in batch.changed - returned:
                self.sessions.pop(sid, None)  # asked about, and gone: deleted
        self._event_rowid = batch.event_rowid
        self._session_rowid = batch.session_rowid
        kept: dict[str, Session] = {}
        for row in batch.rows:
            old = previous.get(row.id)
            keep = row.updated >= horizon or row.id in wanted or row.parent in previous
            if not keep and old is None:
                continue
            if old is not None and not row.running:
                row.stopped_at = now if old.running else old.stopped_at
            kept[row.id] = row
        # What the first read finds was there before quintd looked: history. After it, a
        # session that worked (not only renamed) was written now.
        diff_writes(previous, kept, now, first, worked)
        self.sessions.update(kept)
        self.version += 1

    def forget(self, horizon: float, named: set[str]) -> None:
        """Sessions that cannot belong to a running process: last written before the
        oldest of them started (and not named on a command line), and their children."""
        if self._forgot_at == (horizon, self.version):
            return
        before = len(self.sessions)
        for s in [s for s in self.sessions.values() if s.parent is None]:
            if s.updated < horizon and s.id not in named:
                del self.sessions[s.id]
        orphans = True
        while orphans:
            orphans = False
            for s in list(self.sessions.values()):
                if s.parent is not None and s.parent not in self.sessions and s.updated < horizon:
                    del self.sessions[s.id]
                    orphans = True
        if len(self.sessions) > MAX_SESSIONS:
            newest = sorted(self.sessions.values(), key=lambda s: s.updated, reverse=True)
            self.sessions = {s.id: s for s in newest[:MAX_SESSIONS]}
        if len(self.sessions) != before:
            self.version += 1
        if self._loaded_from is not None and horizon > self._loaded_from:
            self._loaded_from = horizon  # a later full read need not reach back further
        self._forgot_at = (horizon, self.version)

    def _forget_all(self) -> None:
        self.sessions = {}
        self._event_rowid = None
        self._session_rowid = 0
        self.version += 1


def worked(old: Session, new: Session) -> bool:
    """Whether the session changed by working: a prompt, a turn, a task. A rename changes
    the title and bumps ``time_updated``, and is no work (it sent an `active` once)."""
    if (old.prompted, old.running, old.tasks, old.model) != (
        new.prompted,
        new.running,
        new.tasks,
        new.model,
    ):
        return True
    return old.updated != new.updated and old.title == new.title
