"""Cline CLI's sessions table as read so far (a row and its query: ``cline_sessions.py``;
which CLI runs which row: ``cline.py``).

Read from a cursor, the last ``updated_at`` read, whenever the database changed; whole
again when it was replaced or shrunk, or when an older CLI appeared (its rows are older
than the first read's horizon). A turn that began and ended between two reads is noticed
by ``status_lock`` having grown by ``TURN_WRITES``. Sub-agent rows are kept by their root;
rows no running CLI can own are forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

from quintd.sources.changes import lstat_signature
from quintd.sources.cline_sessions import MAX_ROWS, Row, iso_time, parse_row, query_sessions
from quintd.sources.files import ReadStats
from quintd.sources.sqlite_sessions import MissingColumns, WatchedDatabase

TURN_WRITES = 3  # status_lock grew this much: a turn happened (seen: 2 for running -> idle)


class SessionRows:
    """The rows of one ``sessions.db`` by session id, and the sub-agent rows of each root."""

    def __init__(
        self,
        db: Path,
        file: WatchedDatabase,
        stats: ReadStats,
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self._file = file
        self._stats = stats
        self._clock = clock
        self.rows: dict[str, Row] = {}
        self.children: dict[str, set[str]] = {}  # root -> sub-agent rows
        self.truncated = 0  # queries that hit MAX_ROWS
        self._read_as: tuple[int, int, int] | None = None  # (inode, size, mtime) last read
        self._cursor: str | None = None  # the last updated_at read
        self._read_from: float | None = None  # the horizon of the first read
        self._read_once = False

    def read_older(self, horizon: float) -> bool:
        """The horizon moved back before the first read's (an older CLI appeared): read
        from there again. True when the table must be read whatever its identity."""
        if self._read_from is not None and horizon < self._read_from:
            self._cursor = None
            return True
        return False

    def read(self, seen: object, now: float, horizon: float) -> list[tuple[Row, Row | None]] | None:
        """The rows changed since the last read, oldest first, each with what was known of
        it before (None: new); None when nothing could be read (counted)."""
        main = lstat_signature(self._db)
        if main is None:
            self._file.skip(seen)
            return None
        before, self._read_as = self._read_as, main
        if before is not None and (before[0] != main[0] or main[1] < before[1]):
            self._cursor = None  # replaced or shrunk: read it whole again
        since = self._cursor or iso_time(horizon)
        if self._cursor is None:
            self._read_from = horizon
        try:
            rows = self._file.read(seen, now, lambda conn: query_sessions(conn, since))
        except MissingColumns:
            return None  # counted: read again when it changes
        if rows is None:
            return None  # counted: the next pass tries again
        if len(rows) >= MAX_ROWS:
            self.truncated += 1
        taken = []
        for raw in rows:
            stamp = raw.get("updated_at")
            if (
                isinstance(stamp, str)
                and len(stamp) < 64
                and (self._cursor is None or stamp > self._cursor)
            ):
                self._cursor = stamp
            found = self._take(raw)
            if found is not None:
                taken.append(found)
        self._read_once = True
        return taken

    def _take(self, raw: dict[str, Any]) -> tuple[Row, Row | None] | None:
        row = parse_row(raw)
        if row is None:
            self._stats.garbage += 1
            return None
        self._stats.lines += 1
        before = self.rows.get(row.sid)
        if before is not None:
            row.last_write = before.last_write
            if (
                self._read_once
                and row.lock is not None
                and before.lock is not None
                and row.lock - before.lock >= TURN_WRITES
                and row.status != "running"
                and not row.terminal
            ):
                row.last_write = self._clock()  # a turn began (and ended) between two reads
        self.rows[row.sid] = row
        if row.parent is not None:
            self.children.setdefault(row.parent, set()).add(row.sid)
        return row, before

    def forget(self, horizon: float, bound: Container[str]) -> list[str]:
        """Rows that cannot belong to a running CLI: last changed before the oldest one
        started, and not bound. Returns their ids."""
        old = [
            sid for sid, row in self.rows.items() if row.last_seen < horizon and sid not in bound
        ]
        for sid in old:
            row = self.rows.pop(sid)
            if row.parent is not None:
                siblings = self.children.get(row.parent)
                if siblings is not None:
                    siblings.discard(sid)
                    if not siblings:
                        del self.children[row.parent]
        return old
