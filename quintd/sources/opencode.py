"""OpenCode, as 1.18.33 really behaves (``../shared/fixtures/opencode``: one TUI; a prompt, a
tool, a sub-agent, a rename, ``/new``, a second prompt, ``/exit``; its README tells the run).

Processes. ``opencode`` (the npm package's native Bun binary ``opencode-ai/bin/opencode.exe``)
is the TUI and its server in one process; sub-agents run inside it, tools are its children.
Nothing ties a process to a conversation: no pid file, lock, tty or open file names one.

State: one SQLite database, ``${XDG_DATA_HOME:-~/.local/share}/opencode/opencode.db`` (or
``$OPENCODE_DB``: an absolute path, or one relative to that directory; ``:memory:`` keeps
nothing on disk), in WAL mode and hardly ever checkpointed: while OpenCode runs, its data is
in ``opencode.db-wal``.

- ``session``: one row per conversation, made at its first prompt (not at start-up, not at
  ``/new``): ``id`` (``ses_...``), ``parent_id`` (a sub-agent: the conversation it works
  for), ``directory`` (the TUI's cwd), ``title`` (``New session - <ISO time>`` until a title
  is generated, or the user's rename), ``model`` (JSON ``{id, providerID}``),
  ``time_created``, ``time_updated``, ``time_archived`` (ms since the epoch).
- ``message``: ``session_id``, ``time_created``, ``data`` JSON: ``role`` user/assistant;
  one answer per model call, with ``modelID`` and, once finished, ``time.completed`` (or an
  ``error``).
- ``part``: ``message_id``, ``data`` JSON; a tool call is ``type: tool`` with ``tool``,
  ``state.status`` (pending/running/completed/error) and, for ``task`` (a sub-agent),
  ``state.metadata.sessionId``, the child session it drives.
- ``event``: an append-only log of every change, in rowid order; ``aggregate_id`` is the
  session the change belongs to.

Rules.

- Read only when ``opencode.db-wal`` (or the database) changed: a file event (or, where the
  directory cannot be watched, each pass) only looks at the files' inode, size and time and
  at the WAL index header in ``-shm`` (its change counter), as cheap as a stat; quintd's own
  reads open the files (file events) but change none of that. Then the events logged since
  the last read, and the sessions added since (by rowid), name the sessions to read again;
  only those are. Without an ``event`` table, the sessions updated since the oldest running
  process started are read again. Only sessions that can belong to a running process (last
  written after the oldest of them started) are kept.
- Busy: the latest message of the conversation is a prompt not answered yet, or an answer
  not finished (no ``time.completed`` and no ``error``) or with a tool call pending or
  running; else idle. OpenCode writes down no "waiting": a permission prompt is a running
  tool call.
- A sub-agent is a child session: it runs while its parent's ``task`` call for it is pending
  or running, or while it is busy itself; then it is done.
- Owning process: a conversation belongs to the opencode process in its directory (cwd)
  that started last before the conversation was created. One created before all of them
  started (an old conversation continued) belongs to the process whose command line names it
  (``opencode -s <id>``), else to the one that started last before it was written again.
- A process's conversation is its conversation prompted last (its latest user message):
  ``/new`` ends the old one at the new one's first prompt. An older one still busy stays open
  (OpenCode keeps working on it) until it has been idle for a few seconds (an answer's steps
  leave gaps of milliseconds between them).
- Name: the title, unless it is still the placeholder; model: the latest message's, else the
  session's ``model.id``.

Verified against the real files: the tables and columns above, conversation rows made at the
first prompt, busy/idle through a prompt, a tool and a sub-agent, the sub-agent as a child
session, a rename in place, ``/new``. Inferred from the source and unverified against a real
run: ``opencode -s``, ``XDG_DATA_HOME`` and ``OPENCODE_DB``, two processes in one
directory, a conversation kept busy in the background, a database without the ``event``
table (an older or newer schema), a deleted conversation.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, SubagentFacts
from quintd.sources.attribution import Pass, flag_values, owner_of
from quintd.sources.changes import diff_writes
from quintd.sources.files import (
    ReadStats,
    identifier,
    parse_object,
    path_text,
    text,
    trusted_dir,
)
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.sqlite_files import (
    columns,
    pick,
    quote_name,
)
from quintd.sources.sqlite_sessions import MissingColumns, WatchedDatabase
from quintd.sources.times import parse_time as epoch

DATABASE = "opencode.db"
MAX_IDS_PER_QUERY = 500
MAX_SESSIONS = 5000  # kept per database (sessions that can belong to a running process)
MAX_SUBAGENTS = 200  # per conversation
MAX_DEPTH = 8  # sub-agents of sub-agents
RETRY_S = (1.0, 60.0)
# A conversation left for another (/new) stays open while OpenCode still works on it, and
# this long after it was seen stopped: between two steps of an answer it looks stopped for
# a few milliseconds, which must not end it.
BACKGROUND_GRACE_S = 5.0  # a database that could not be read: tried again after this, doubling
_PLACEHOLDER = re.compile(r"^(New|Child) session - \d{4}-\d\d-\d\dT[0-9:.]+Z$")

Found = ConversationFacts | tuple[ConversationFacts, ...]


@dataclass
class _Session:
    id: str
    parent: str | None
    directory: str | None
    title: str | None
    model: str | None
    created: float  # epoch seconds
    updated: float
    archived: bool
    prompted: float  # the latest prompt (epoch seconds); its creation if none is known
    running: bool = False
    tasks: frozenset[str] = frozenset()  # child sessions its running task calls drive
    last_write: float | None = None  # monotonic: when it last changed after the first read
    stopped_at: float | None = None  # monotonic: when it was first seen stopped after running


@dataclass
class _Activity:
    running: bool = False
    model: str | None = None
    prompted: float | None = None
    tasks: frozenset[str] = frozenset()


@dataclass
class _Batch:
    """What one read found."""

    rows: list[_Session] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # ids the read was asked about
    full: bool = False
    event_rowid: int | None = None
    session_rowid: int = 0
    json_ok: bool = True
    bad_rows: int = 0


class _Database(WatchedDatabase):
    """One OpenCode database: the sessions in it that can belong to a running process."""

    def __init__(self, root: Path, path: Path, watched: bool, stats: ReadStats) -> None:
        super().__init__(root, path, stats, backoff=RETRY_S)
        self.watched = watched  # its changes reach the reader as file events
        self.sessions: dict[str, _Session] = {}
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
                lambda conn: _read(
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

    def _apply(self, batch: _Batch, horizon: float, wanted: set[str], now: float) -> None:
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
        kept: dict[str, _Session] = {}
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
        diff_writes(previous, kept, now, first, _worked)
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


def _worked(old: _Session, new: _Session) -> bool:
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


# -- the queries (run inside read_database's short read-only connection) ----------------------


def _read(
    conn: sqlite3.Connection,
    *,
    full: bool,
    horizon_ms: int,
    event_rowid: int | None,
    session_rowid: int,
    wanted: set[str],
    known: set[str],
    json_ok: bool,
) -> _Batch:
    tables = {
        str(name) for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "session" not in tables:
        raise MissingColumns("no session table")
    available = columns(conn, "session")
    required = [pick(available, name) for name in ("id", "directory", "time_created")]
    updated = pick(available, "time_updated", "time_created")
    if None in required or updated is None:
        raise MissingColumns("the session table lacks id, directory or time_created")
    chosen = [
        "id",
        pick(available, "parent_id", "parentID"),
        "directory",
        pick(available, "title"),
        pick(available, "model"),
        "time_created",
        updated,
        pick(available, "time_archived"),
    ]
    select = ", ".join(quote_name(c) if c else "NULL" for c in chosen)
    events = "event" in tables and "aggregate_id" in columns(conn, "event")
    batch = _Batch(json_ok=json_ok)
    # The high-water marks first: a change made while this read runs is read next time.
    top_session = _scalar(conn, "SELECT max(rowid) FROM session")
    top_event = _scalar(conn, "SELECT max(rowid) FROM event") if events else None
    batch.session_rowid = top_session
    batch.event_rowid = top_event
    if top_event is None or event_rowid is None:
        full = True  # no change log (an older OpenCode), or the first read
    elif top_event < event_rowid or top_session < session_rowid:
        full = True  # rows were deleted at the end: rowids may be used again
    rows: list[tuple[Any, ...]]
    if full:
        batch.full = True
        rows = conn.execute(
            f"SELECT {select} FROM session WHERE {quote_name(updated)} >= ?", (horizon_ms,)
        ).fetchall()
        found = {r[0] for r in rows}
        rows += _by_ids(conn, select, [i for i in wanted if i not in found])
    else:
        changed = {
            str(a)
            for (a,) in conn.execute(
                "SELECT DISTINCT aggregate_id FROM event WHERE rowid > ? AND rowid <= ?",
                (event_rowid, top_event),
            )
            if isinstance(a, str)
        }
        changed |= {
            str(i)
            for (i,) in conn.execute(
                "SELECT id FROM session WHERE rowid > ? AND rowid <= ?",
                (session_rowid, top_session),
            )
            if isinstance(i, str)
        }
        batch.changed = changed & known
        rows = _by_ids(conn, select, sorted(changed | wanted))
    for raw in rows:
        session = _session(raw)
        if session is None:
            batch.bad_rows += 1
            continue
        if batch.json_ok:
            try:
                activity = _activity(conn, session.id)
            except sqlite3.OperationalError as exc:
                if "json" not in str(exc).lower():
                    raise
                batch.json_ok = False  # an SQLite without JSON functions: no status
                activity = None
            if activity is not None:
                session.running = activity.running
                session.model = activity.model or session.model
                session.prompted = activity.prompted or session.created
                session.tasks = activity.tasks
        batch.rows.append(session)
    return batch


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    value = conn.execute(sql).fetchone()[0]
    return value if isinstance(value, int) else 0


def _by_ids(conn: sqlite3.Connection, select: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        chunk = ids[start : start + MAX_IDS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        rows += conn.execute(f"SELECT {select} FROM session WHERE id IN ({marks})", chunk)
    return rows


def _session(raw: Sequence[Any]) -> _Session | None:
    sid, parent, directory, title, model, created, updated, archived = raw
    sid = identifier(sid)
    created_at = epoch(created) if isinstance(created, int | float) else None
    updated_at = epoch(updated) if isinstance(updated, int | float) else None
    if sid is None or created_at is None:
        return None
    name = text(title)
    return _Session(
        id=sid,
        parent=identifier(parent),
        directory=path_text(directory),
        title=None if name is None or _PLACEHOLDER.match(name) else name,
        model=_model_id(model),
        created=created_at,
        updated=max(updated_at or created_at, created_at),
        archived=archived is not None,
        prompted=created_at,
    )


def _model_id(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64 * 1024:
        return None
    data = parse_object(value.encode("utf-8", "replace"))
    return text(data.get("id")) if data is not None else None


# One row per call: the latest message, its own fields extracted by SQLite (the JSON never
# comes to Python). A row whose data is not JSON yields NULLs, never an error.
_LATEST = """
SELECT id,
       CASE WHEN json_valid(data) THEN json_extract(data, '$.role') END,
       CASE WHEN json_valid(data) THEN json_type(data, '$.time.completed') END,
       CASE WHEN json_valid(data) THEN json_type(data, '$.error') END,
       CASE WHEN json_valid(data)
            THEN coalesce(json_extract(data, '$.modelID'), json_extract(data, '$.model.modelID'))
       END
FROM message WHERE session_id = ? ORDER BY time_created DESC, id DESC LIMIT 1
"""
_PROMPTED = """
SELECT time_created FROM message
WHERE session_id = ? AND CASE WHEN json_valid(data) THEN json_extract(data, '$.role') END = 'user'
ORDER BY time_created DESC, id DESC LIMIT 1
"""
_TOOLS = """
SELECT json_extract(data, '$.tool'), json_extract(data, '$.state.status'),
       json_extract(data, '$.state.metadata.sessionId')
FROM part
WHERE message_id = ? AND CASE WHEN json_valid(data) THEN json_extract(data, '$.type') END = 'tool'
"""


def _activity(conn: sqlite3.Connection, sid: str) -> _Activity:
    found = _Activity()
    latest = conn.execute(_LATEST, (sid,)).fetchone()
    if latest is None:
        return found  # no message yet: nothing asked of it
    message_id, role, completed, error, model = latest
    found.model = text(model)
    prompted = conn.execute(_PROMPTED, (sid,)).fetchone()
    if prompted is not None and isinstance(prompted[0], int | float):
        found.prompted = epoch(prompted[0])
    if role == "user":
        found.running = True  # a prompt, its answer not begun
    elif role == "assistant":
        tasks = set()
        pending = False
        for tool, status, child in conn.execute(_TOOLS, (message_id,)):
            if status in ("pending", "running"):
                pending = True
                if tool == "task" and identifier(child):
                    tasks.add(str(child))
        found.tasks = frozenset(tasks)
        # An answer that failed (aborted, an API error) is over, finished or not.
        unfinished = completed in (None, "null") and error in (None, "null")
        found.running = unfinished or pending
    return found


# -- the reader -----------------------------------------------------------------------------


@dataclass
class _Process:
    database: _Database | None
    named: frozenset[str]  # sessions its command line names (opencode -s <id>)


class OpenCodeState(Reader):
    platform = "opencode"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self.refused = 0  # processes whose database lies in a directory not theirs
        self._dbs: dict[Path, _Database] = {}
        self._procs: dict[tuple[int, int], _Process] = {}
        self._facts: dict[tuple[int, int], Found] = {}
        self._assigned_for: object = None
        self._assigned_at = 0.0
        self._grace_until = 0.0  # until then, a stopped conversation may still be open

    # -- the AgentState protocol ------------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root]

    def flat_dirs(self) -> set[Path]:
        """The data dir alone: its snapshot/ git stores would cost thousands of watches."""
        return {self.root}

    def has_registry_dir(self) -> bool:
        return self.root.is_dir()

    def changed(self, path: Path) -> None:
        path = Path(os.path.normpath(path))
        name = path.name
        base = path.with_name(name[: -len("-wal")]) if name.endswith("-wal") else path
        db = self._dbs.get(base)
        if db is not None:
            db.dirty = True

    def poll(self) -> None:
        for db in self._dbs.values():
            db.poll()

    def begin(self, pass_: Pass) -> None:
        processes, horizon = list(pass_), pass_.horizon
        procs = {p.key: self._process(p) for p in processes}
        self._procs = procs
        used = {entry.database.path for entry in procs.values() if entry.database is not None}
        self._dbs = {path: db for path, db in self._dbs.items() if path in used}
        now = self._clock()
        for db in self._dbs.values():
            members = [p for p in processes if procs[p.key].database is db]
            named = set().union(*(procs[p.key].named for p in members))
            if not db.watched:
                db.poll()  # no file events come from outside the state directory
            db.refresh(horizon, named, now)
            db.forget(horizon, named)
        marker = (
            tuple(sorted(p.key for p in processes)),
            tuple((id(db), db.version) for db in self._dbs.values()),
        )
        if marker != self._assigned_for or self._grace_until > self._assigned_at:
            # Also while a stopped conversation is in its grace, until the pass it ends.
            self._assigned_for, self._assigned_at, self._grace_until = marker, now, 0.0
            self._facts = self._assign(processes, now)

    def facts(self, proc: AgentProcess) -> Found | None:
        return self._facts.get(proc.key)

    # -- processes and their databases ------------------------------------------------------

    def _process(self, proc: AgentProcess) -> _Process:
        known = self._procs.get(proc.key)
        if known is not None:
            return known
        argv = self.now.view.argv(proc.pid)
        named = frozenset(filter(None, map(identifier, flag_values(argv, ("-s", "--session")))))
        path = self._database_path(proc)
        if path is None:
            return _Process(None, named)
        db = self._dbs.get(path)
        if db is None:
            if path.is_relative_to(self.root):
                db = _Database(self.root, path, watched=True, stats=self.stats)
            elif (uid := self.now.view.uid(proc.pid)) is not None and trusted_dir(path.parent, uid):
                # Out of the state directory: only a real directory of the process's user.
                db = _Database(path.parent, path, watched=False, stats=self.stats)
            else:
                self.refused += 1
                self.stats.refused += 1
                return _Process(None, named)
            self._dbs[path] = db
        return _Process(db, named)

    def _database_path(self, proc: AgentProcess) -> Path | None:
        """The database the process uses: from its own environment (``XDG_DATA_HOME``,
        ``OPENCODE_DB``), else the one in the state directory."""
        env = self.now.view.environ(proc.pid) or {}
        data = self.root
        xdg = env.get("XDG_DATA_HOME")
        if xdg and os.path.isabs(xdg) and "\x00" not in xdg:
            data = Path(xdg) / "opencode"
        custom = env.get("OPENCODE_DB")
        if custom == ":memory:":
            return None  # nothing on disk
        if custom and "\x00" not in custom:
            chosen = Path(custom) if os.path.isabs(custom) else data / custom
        else:
            chosen = data / DATABASE
        return Path(os.path.normpath(chosen))

    # -- conversations to processes ---------------------------------------------------------

    def _assign(self, processes: list[AgentProcess], now: float) -> dict[tuple[int, int], Found]:
        found: dict[tuple[int, int], Found] = {}
        for db in self._dbs.values():
            members = [p for p in processes if self._procs[p.key].database is db]
            owned = _owners(db.sessions.values(), members, self._procs)
            children: dict[str, list[_Session]] = {}
            for s in db.sessions.values():
                if s.parent is not None:
                    children.setdefault(s.parent, []).append(s)
            for proc in members:
                mine = [s for s in db.sessions.values() if owned.get(s.id) == proc.key]
                if not mine:
                    continue
                named = self._procs[proc.key].named
                mine.sort(key=functools.partial(_order, proc=proc, named=named))
                current = mine[-1]
                open_ = [s for s in mine[:-1] if self._still_open(s, now)] + [current]
                convs = tuple(_facts(s, children, db.sessions, db.owner) for s in open_)
                found[proc.key] = convs[0] if len(convs) == 1 else convs
        return found

    def _still_open(self, s: _Session, now: float) -> bool:
        """A conversation the process left (for a newer one) that OpenCode still works on,
        or stopped only a moment ago."""
        if s.running:
            return True
        if s.stopped_at is None or now - s.stopped_at >= BACKGROUND_GRACE_S:
            return False
        self._grace_until = max(self._grace_until, s.stopped_at + BACKGROUND_GRACE_S)
        return True


def _order(s: _Session, proc: AgentProcess, named: frozenset[str]) -> tuple[float, float]:
    """A process's conversations in the order they were prompted; the one its command line
    names counts as prompted when the process started."""
    prompted = max(s.prompted, proc.start_time) if s.id in named else s.prompted
    return (prompted, s.updated)


def _owners(
    sessions: Iterable[_Session],
    processes: list[AgentProcess],
    procs: dict[tuple[int, int], _Process],
) -> dict[str, tuple[int, int]]:
    """Each top-level conversation's process, by directory and time (see the module)."""
    by_dir: dict[str, list[AgentProcess]] = {}
    for proc in processes:
        if proc.cwd:
            by_dir.setdefault(os.path.normpath(proc.cwd), []).append(proc)
    owned: dict[str, tuple[int, int]] = {}
    for s in sessions:
        if s.parent is not None or s.archived or not s.directory:
            continue
        candidates = by_dir.get(os.path.normpath(s.directory), [])
        if not candidates:
            continue
        named = [p for p in candidates if s.id in procs[p.key].named]
        chosen = max(named, key=lambda p: (p.start_time, p.pid)) if named else None
        chosen = chosen or owner_of(s.created, s.updated, candidates)
        if chosen is not None:
            owned[s.id] = chosen.key
    return owned


def _facts(
    s: _Session,
    children: dict[str, list[_Session]],
    sessions: dict[str, _Session],
    owner: int | None,
) -> ConversationFacts:
    subagents: list[SubagentFacts] = []
    queue = [(s, 0)]
    while queue and len(subagents) < MAX_SUBAGENTS:
        parent, depth = queue.pop(0)
        if depth >= MAX_DEPTH:
            continue
        for child in sorted(children.get(parent.id, ()), key=lambda c: (c.created, c.id)):
            running = child.running or child.id in parent.tasks
            subagents.append(
                SubagentFacts(
                    agent_id=child.id,
                    name=child.title,
                    done=not running,
                    last_write=child.last_write,
                    status="busy" if running else "idle",
                    model=child.model,
                )
            )
            queue.append((child, depth + 1))
    return ConversationFacts(
        native_id=s.id,
        status="busy" if s.running else "idle",
        name=s.title,
        model=s.model,
        last_write=s.last_write,
        subagents=tuple(subagents[:MAX_SUBAGENTS]),
        owner_uid=owner,
    )


SPEC = spec("opencode")  # where it keeps its state: the registry's line
