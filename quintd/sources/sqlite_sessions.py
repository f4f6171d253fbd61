"""The base of readers whose agent keeps its sessions in an SQLite database and records no
process for them (Crush, goose).

- where: each process's database is found once from its environment, command line and cwd
  (:meth:`SessionDatabases.find`), and looked for again every :data:`RETRY_S` while it is
  not there;
- reading: through :func:`read_database` only (the safe open, the guard: see
  ``sqlite_files.py``), and only when the database or its ``-wal`` changed (one ``lstat``
  each a pass: :meth:`Changes.differs`); only sessions touched since the horizon are read;
  a database without the columns the reader needs (another version of the agent) raises
  :class:`MissingColumns` in the query: it gives no facts (its processes are sessions of
  their own), counted in ``stats.garbage``;
- what changed: a re-read's sessions against the last read's (:func:`diff_writes`): one
  that worked since, or is new since the first read, was written now (``last_write``);
- which process: a session named on a process's command line is that process's; else it
  goes by times (:func:`owner_of`) to one of the processes that can have run it; a
  process's conversation is its session updated last.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import Pass, ProcessKey, flag_value, latest, owner_of
from quintd.sources.changes import diff_writes, lstat_signature
from quintd.sources.files import COMPLAINTS, ReadStats
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.sqlite_files import (
    UnreadableDatabase,
    quote_name,
    read_database,
    wal_identity,
)

RETRY_S = 5.0  # a process whose database is not found yet is looked for again after
T = TypeVar("T")


class MissingColumns(Exception):
    """The database has not the tables or columns the reader needs (another version)."""


def lstat_identity(root: Path, path: Path) -> object:
    """The database's and its ``-wal``'s signatures, one ``lstat`` each."""
    return (lstat_signature(path), lstat_signature(Path(str(path) + "-wal")))


class WatchedDatabase:
    """One agent database, read (through :func:`read_database`) only when it changed: after
    a file event or a poll (:attr:`dirty`), its identity (``wal_identity``: the files'
    signatures and the WAL index header; or one ``lstat`` each) is compared with the one
    it was last read at. A read that fails (locked, torn, refused) is tried again when the
    files change, or after a while (``backoff``: doubling up to its second value; none:
    the next pass). A database of the wrong shape (:class:`MissingColumns`, a bad query)
    is counted (``schema_errors``, ``stats.garbage``) and complained of once; it is read
    again only when it changed."""

    def __init__(
        self,
        root: Path,
        path: Path,
        stats: ReadStats,
        backoff: tuple[float, float] | None = None,
        identity: Callable[[Path, Path], object] = wal_identity,
    ) -> None:
        self.root = root
        self.path = path
        self.stats = stats
        self.dirty = True  # a file event or a poll: look whether the files changed
        self.owner: int | None = None  # the uid owning the database file
        self.reads = self.unreadable = self.schema_errors = 0
        self._backoff = backoff
        self._identity = identity
        self._read_as: object = None  # the files' identity when they were last read
        self._failed_as: object = None  # ... when a read last failed
        self._retry_at = 0.0
        self._wait = backoff[0] if backoff else 0.0

    def poll(self) -> None:
        self.dirty = True

    def due(self, now: float, force: bool = False) -> object | None:
        """The files' identity if a read is due (``force``: whatever it is), else None."""
        if not (self.dirty or force):
            return None
        seen = self._identity(self.root, self.path)
        if seen == self._failed_as and now < self._retry_at:
            return None  # unreadable a moment ago, and nothing changed since
        self.dirty = False
        if seen == self._read_as and not force:
            return None  # an event of no consequence (a reader opened the files)
        return seen

    def skip(self, seen: object) -> None:
        """Nothing to read at this identity (no database yet): until it changes."""
        self._read_as = seen

    def read(self, seen: object, now: float, query: Callable[[sqlite3.Connection], T]) -> T | None:
        """``query``'s result, or None when the database could not be read this time.
        Raises :class:`MissingColumns` (counted) for a database of another version."""
        self._read_as = seen  # first: a commit made while this read runs is read next time
        self.reads += 1
        try:
            result, self.owner = read_database(self.root, self.path, query, self.stats)
        except UnreadableDatabase:
            # Missing, locked, torn or refused: again when it changes, or after a while.
            self.unreadable += 1
            self._failed(seen, now)
            return None
        except MissingColumns as exc:
            self._complain(f"a database of another version ({exc})")
            raise
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
            self._complain(f"an unreadable database ({exc})")
            self._failed(seen, now)
            return None
        self._failed_as = None
        self._wait = self._backoff[0] if self._backoff else 0.0
        return result

    def _complain(self, what: str) -> None:
        self.schema_errors += 1
        self.stats.garbage += 1
        try:
            info: os.stat_result | None = os.lstat(self.path)
        except OSError:
            info = None
        COMPLAINTS.warn(self.path, info, what)

    def _failed(self, seen: object, now: float) -> None:
        self._read_as = None
        self._failed_as = seen
        self._retry_at = now + self._wait
        if self._backoff:
            self._wait = min(self._wait * 2, self._backoff[1])
        self.dirty = True


@dataclass
class Session:
    native_id: str
    created: float  # epoch seconds
    updated: float
    parent: str | None = None  # a sub-agent's: the session it works for
    last_write: float | None = None  # monotonic: when it last worked, after the first read


S = TypeVar("S", bound=Session)


@dataclass
class Database(Generic[S]):
    watched: WatchedDatabase
    sessions: dict[str, S] = field(default_factory=dict)
    read_once: bool = False

    @property
    def root(self) -> Path:  # the directory it is safely reached from
        return self.watched.root

    @property
    def path(self) -> Path:
        return self.watched.path

    @property
    def owner(self) -> int | None:  # the uid owning the database file
        return self.watched.owner


@dataclass
class _Where:
    argv: list[str]
    location: tuple[Path, Path] | None  # (the directory it is read from, the database)
    looked_at: float


def column(name: str | None) -> str:
    """A column to select: quoted, or NULL where the table has none."""
    return quote_name(name) if name else "NULL"


class SessionDatabases(Reader, Generic[S]):
    session_flags: tuple[str, ...] = ()  # flags that name a session to resume
    marker = ""  # under the root: there once the agent ran

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._where: dict[ProcessKey, _Where] = {}
        self._dbs: dict[Path, Database[S]] = {}
        self._current: dict[ProcessKey, tuple[Path, str, float]] = {}

    # -- what a subclass says -------------------------------------------------------------

    def find(self, proc: AgentProcess, argv: list[str]) -> tuple[Path, Path] | None:
        """(the directory it is read from, the database) of this process, or None."""
        raise NotImplementedError

    def settled(self, location: tuple[Path, Path] | None) -> bool:
        """Whether a location found stands (else it is looked for again, now and then)."""
        return location is not None

    def look_again(self, proc: AgentProcess) -> bool:
        """Whether to look for the process's database again before :data:`RETRY_S`."""
        return False

    def query(self, conn: sqlite3.Connection, db: Database[S], horizon: float) -> list[S]:
        """The sessions touched since ``horizon`` (runs inside :func:`read_database`)."""
        raise NotImplementedError

    def worked(self, old: S, new: S) -> bool:
        raise NotImplementedError

    def after_read(self, db: Database[S]) -> None:
        """Anything else read beside the database, once it was read."""

    def candidates(self, db: Database[S], members: list[AgentProcess]) -> list[AgentProcess]:
        """The processes that may run the database's sessions (not a server of them)."""
        return members

    def here(self, session: S, procs: list[AgentProcess]) -> list[AgentProcess]:
        """Of these, the processes that may have run this session."""
        return procs

    def top_level(self, session: S) -> bool:
        return session.parent is None

    # -- the AgentState protocol ----------------------------------------------------------

    def begin(self, now: Pass) -> None:
        self._where = {k: w for k, w in self._where.items() if k in now.keys}
        groups: dict[Path, list[AgentProcess]] = {}
        for proc in now:
            location = self._location(proc, now.now)
            if location is not None:
                root, path = location
                if path not in self._dbs:
                    watched = WatchedDatabase(root, path, self.stats, identity=lstat_identity)
                    self._dbs[path] = Database(watched)
                groups.setdefault(path, []).append(proc)
        self._dbs = {p: db for p, db in self._dbs.items() if p in groups}
        self._current = {}
        for path, members in groups.items():
            db = self._dbs[path]
            self._refresh(db, now)
            self._claim(db, members)

    def conversation_facts(
        self, proc: AgentProcess, db: Database[S], session: S, since: float
    ) -> ConversationFacts:
        """The facts of the process's conversation (``since``: when it started)."""
        raise NotImplementedError

    def has_registry_dir(self) -> bool:
        """The databases change with every message: they are checked by an ``lstat`` each
        a pass, not watched; what says the agent ran here is :attr:`marker`."""
        return (self.root / self.marker).exists()

    def facts(self, proc: AgentProcess) -> ConversationFacts | Sequence[ConversationFacts] | None:
        """The process's conversation (a reader whose process runs several at once, as an
        editor does, returns them all)."""
        found = self._current.get(proc.key)
        db = self._dbs.get(found[0]) if found is not None else None
        session = db.sessions.get(found[1]) if db is not None and found is not None else None
        if found is None or db is None or session is None:
            return None
        return self.conversation_facts(proc, db, session, found[2])

    def argv(self, proc: AgentProcess) -> list[str]:
        where = self._where.get(proc.key)
        return where.argv if where is not None else []

    # -- where, and reading ---------------------------------------------------------------

    def _location(self, proc: AgentProcess, now: float) -> tuple[Path, Path] | None:
        where = self._where.get(proc.key)
        if where is None:
            argv = self.now.view.argv(proc.pid)
            where = self._where[proc.key] = _Where(argv, None, now)
            where.location = self.find(proc, argv)
        elif not self.settled(where.location) and (
            now - where.looked_at >= RETRY_S or self.look_again(proc)
        ):
            where.location, where.looked_at = self.find(proc, where.argv), now
        return where.location

    def _refresh(self, db: Database[S], now: Pass) -> None:
        db.watched.poll()  # not watched: a stat each pass
        seen = db.watched.due(now.now)
        if seen is None:
            return
        if lstat_signature(db.path) is None:  # none (yet): nothing to read until it appears
            db.sessions = {}
            db.watched.skip(seen)
            return
        try:
            rows = db.watched.read(seen, now.now, lambda conn: self.query(conn, db, now.horizon))
        except MissingColumns:
            db.sessions = {}
            return
        if rows is None:
            return  # locked, half there, replaced: the next pass tries again
        before, db.sessions = db.sessions, {s.native_id: s for s in rows}
        diff_writes(before, db.sessions, now.now, not db.read_once, self.worked)
        db.read_once = True
        self.after_read(db)

    # -- which process runs which session ---------------------------------------------------

    def _claim(self, db: Database[S], members: list[AgentProcess]) -> None:
        procs = self.candidates(db, members)
        if not procs:
            return
        pinned: dict[str, AgentProcess] = {}
        for proc in procs:
            chosen = flag_value(self.argv(proc), self.session_flags)
            if chosen and chosen in db.sessions:
                pinned[chosen] = proc
        claims: list[tuple[AgentProcess, S]] = []
        for session in db.sessions.values():
            if not self.top_level(session):
                continue
            owner = pinned.get(session.native_id) or owner_of(
                session.created, session.updated, self.here(session, procs)
            )
            if owner is not None:
                claims.append((owner, session))
        current = latest(claims, lambda s: (s.updated, s.created, s.native_id))
        for key, (native_id, started) in current.items():
            self._current[key] = (db.path, native_id, started)


def children(sessions: Iterable[S], parent: str) -> Sequence[S]:
    return [s for s in sessions if s.parent == parent]
