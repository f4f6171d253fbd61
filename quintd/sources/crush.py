"""Crush (charmbracelet/crush, Go): ``<project>/.crush/crush.db``, one SQLite database per
project. Built from Crush's own source, ``charmbracelet/crush`` at
``37f36e93824e5c4f892e4a817f7f628e2682fe14`` (after v0.90.0; migrations read at
``bfc261f530d67705b504970acd12439620eee7a0``); **unverified against a real run** (the CLI
cannot be installed here: its npm package downloads the binary from GitHub).

Files:
- ``projects.json`` in the global data directory (``$CRUSH_GLOBAL_DATA``, else
  ``$XDG_DATA_HOME/crush``, else ``~/.local/share/crush``; ``internal/projects/projects.go``,
  ``internal/config/load.go`` ``GlobalConfigData``): ``{"projects": [{"path": <launch cwd>,
  "data_dir": <abs data dir>, "last_accessed": ...}]}``, rewritten at every local-mode start.
- The data directory: ``--data-dir``/``-D``, else ``options.data_directory``, else the
  closest existing ``.crush`` walking up from the cwd (bounded by the git worktree root),
  else ``<cwd>/.crush`` (``setDefaults``, ``internal/config/load.go``). It holds
  ``crush.db`` (WAL) and, in client/server mode only, ``crush.lock``
  (``{"pid", "version", "started_at"}``, never deleted; ``internal/db/datadirlock.go``).
- ``crush.db`` (``internal/db/migrations/*.sql``): ``sessions(id, parent_session_id, title,
  created_at, updated_at, ...)`` and ``messages(id, session_id, role, parts, model,
  created_at, updated_at, finished_at, ...)``. Times are Unix seconds (``strftime('%s')``,
  whatever the DDL comments say); values above 1e11 are read as milliseconds.

How a process's conversation is found. Nothing on disk names the process of a session
(local mode takes no lock). The process's data directory comes from its argv, its cwd's
entry in ``projects.json`` or the ``.crush`` found walking up from its cwd; of the
top-level sessions of that database touched since the process started, a session created
after it started belongs to the process of that directory started last before it; a
session created earlier (a resume: ``--session``/``-s`` pins it, ``--continue``) to the
process of that directory started last. The process's conversation is its session updated
last: a new session (ctrl+n, first prompt after it) ends the previous one. A ``crush
server`` (client/server mode; also the pid in ``crush.lock``) runs turns for its clients
and owns no conversation: the TUI in the project directory does.

- id: ``sessions.id``; name: ``title``, except the placeholders "New Session" and
  "Untitled Session" written before a title is generated; model: the newest assistant
  message's ``model``.
- busy: the newest message is a prompt or a tool result with no assistant message after
  it, or the newest assistant message has no ``finished_at`` (the step still streams or
  its tools run) or finished with ``tool_use``; idle: it finished otherwise. A message
  older than the process (left unfinished by a crash) says nothing: idle.
- sub-agents: child sessions ``<assistant message id>$$<tool call id>`` with
  ``parent_session_id``; done when the parent holds a ``tool`` message for that tool call,
  or the child's own last step finished.
- exit: not recorded; the process's exit ends its conversation.

Reading: the database and its ``-wal`` are checked with one ``lstat`` each per pass, and
read (read-only, through :func:`read_database`) only when they changed; only sessions
touched since the oldest running process started are read. Columns are chosen by name
(``PRAGMA table_info``): a database without the columns this needs gives no facts (the
process is then a session of its own) and is counted in ``stats.garbage``. Message parts
are JSON, or zstd-compressed in a later commit (``internal/message/parts_codec.go`` at
``6cbef92df592c255e4649934b14c81ddc83768da``): then the finish reason is unknown and a
finished step counts as idle.

``owner_of``, ``lstat_signature``, ``trusted_dir`` and ``flag_value`` are shared with the
goose, Kiro and cursor-agent readers (agents that record no process for a conversation).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.files import (
    ReadStats,
    depth_ok,
    identifier,
    path_text,
    read_json_file,
    text,
)
from quintd.sources.spec import ReaderContext, ReaderSpec
from quintd.sources.sqlite_files import (
    UnreadableDatabase,
    columns,
    pick,
    quote_name,
    read_database,
)

SLACK_S = 2.0  # the database stamps whole seconds; process start times are finer
RETRY_S = 5.0  # a process whose data directory is not found yet is looked at again after
MAX_SESSIONS = 256  # sessions read per database per pass (the newest)
MAX_PARTS_CHARS = 256 * 1024  # a message's parts longer than this are not parsed
MAX_WALK = 32  # directories walked up looking for .crush
# "New Agent Session": a sub-agent's until its own title arrives (seen with v0.90.0).
PLACEHOLDER_TITLES = frozenset({"New Session", "Untitled Session", "New Agent Session"})
BUSY_REASONS = frozenset({"tool_use"})
_FLAGS_WITH_VALUE = frozenset({"-c", "--cwd", "-D", "--data-dir", "-s", "--session", "--host"})


class _MissingColumns(Exception):
    """The database has not the columns this reader needs (another Crush version)."""


@dataclass(frozen=True)
class _Message:
    rowid: int
    role: str
    updated: float | None
    finished: float | None
    model: str | None
    reason: str | None  # the finish part's reason, when the parts could be read
    finish_known: bool = True  # the table has finished_at (else only the reason tells)


@dataclass
class _Session:
    native_id: str
    parent: str | None
    title: str | None
    created: float
    updated: float
    last: _Message | None = None  # the newest message
    assistant: _Message | None = None  # the newest assistant message
    result_seen: bool = False  # a sub-agent whose tool result is in its parent
    last_write: float | None = None

    def messages(self) -> tuple[object, ...]:
        last, asst = self.last, self.assistant
        return (
            last.rowid if last else None,
            last.updated if last else None,
            asst.finished if asst else None,
        )

    def signature(self) -> tuple[object, ...]:
        last, asst = self.last, self.assistant
        return (
            self.updated,
            last.rowid if last else None,
            last.updated if last else None,
            asst.finished if asst else None,
        )

    def status(self, since: float) -> Status | None:
        """busy/idle from the newest messages; ``since``: the process's start (older
        unfinished messages were left by a crash)."""
        last, asst = self.last, self.assistant
        if last is None:
            return None
        if asst is None or last.rowid > asst.rowid:
            if last.role in ("user", "tool"):
                return "busy" if _fresh(last.updated, since) else "idle"
            return None
        if not asst.finish_known and asst.reason is None:
            return None
        if (asst.finished is None and asst.finish_known) or asst.reason in BUSY_REASONS:
            return "busy" if _fresh(asst.updated, since) else "idle"
        return "idle"


@dataclass
class _Database:
    data_dir: Path
    signature: tuple[object, ...] | None = None
    sessions: dict[str, _Session] = field(default_factory=dict)
    owner: int | None = None
    server_pid: int | None = None  # crush.lock's pid (client/server mode)
    read_once: bool = False


@dataclass
class _Where:
    """Where a process keeps its state: found once, looked for again while missing."""

    argv: list[str]
    projects: tuple[Path, Path] | None  # (root, projects.json) for this process
    data_dir: Path | None = None
    looked_at: float = -1e18
    projects_seen: tuple[object, ...] | None = None


class CrushState:
    platform = "crush"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        self.root = root
        self._clock = context.clock
        self._processes = context.processes
        self.stats = ReadStats()
        self._where: dict[tuple[int, int], _Where] = {}
        self._projects: dict[Path, tuple[tuple[object, ...] | None, dict[str, list[Path]]]] = {}
        self._dbs: dict[Path, _Database] = {}
        self._current: dict[tuple[int, int], tuple[Path, str, float]] = {}

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        """None: projects.json and the databases (in the projects, outside the root) are
        checked by one ``lstat`` each per pass instead."""
        return []

    def changed(self, path: Path) -> None:
        """Nothing to mark: projects.json and the databases are checked by a stat."""

    def poll(self) -> None:
        """Nothing to do: every pass stats what it reads."""

    def has_registry_dir(self) -> bool:
        return (self.root / "projects.json").is_file()

    def prepare(self, given: Pass | Iterable[AgentProcess]) -> None:
        processes = list(given)
        horizon = min((p.start_time for p in processes), default=0.0) - SLACK_S
        groups: dict[Path, list[AgentProcess]] = {}
        live = set()
        for proc in processes:
            live.add(proc.key)
            data_dir = self._data_dir(proc)
            if data_dir is not None:
                groups.setdefault(data_dir, []).append(proc)
        self._where = {k: w for k, w in self._where.items() if k in live}
        self._dbs = {d: db for d, db in self._dbs.items() if d in groups}
        self._current = {}
        for data_dir, members in groups.items():
            db = self._dbs.setdefault(data_dir, _Database(data_dir))
            self._refresh(db, horizon)
            self._assign(db, members)

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        found = self._current.get(proc.key)
        if found is None:
            return None
        data_dir, native_id, since = found
        db = self._dbs.get(data_dir)
        session = db.sessions.get(native_id) if db is not None else None
        if db is None or session is None:
            return None
        subagents = tuple(
            self._subagent(db, child, since)
            for child in db.sessions.values()
            if child.parent == native_id
        )
        return ConversationFacts(
            native_id=native_id,
            status=session.status(since),
            name=session.title,
            model=_model(session),
            last_write=session.last_write,
            subagents=subagents,
            owner_uid=db.owner,
        )

    # -- where a process keeps its state ----------------------------------------------------

    def _data_dir(self, proc: AgentProcess) -> Path | None:
        where = self._where.get(proc.key)
        now = self._clock()
        if where is None:
            argv = self._processes.argv(proc.pid)
            where = self._where[proc.key] = _Where(argv, self._projects_file(proc))
        if where.data_dir is not None and lstat_signature(where.data_dir / "crush.db") is not None:
            return where.data_dir
        seen, projects = self._projects_map(where.projects)
        if now - where.looked_at < RETRY_S and seen == where.projects_seen:
            return where.data_dir
        where.looked_at, where.projects_seen = now, seen
        where.data_dir = self._find_data_dir(proc, where.argv, projects)
        return where.data_dir

    def _projects_file(self, proc: AgentProcess) -> tuple[Path, Path] | None:
        """projects.json of this process: in the global data directory its environment
        names (the manager's root covers ``CRUSH_GLOBAL_DATA`` and the default)."""
        env = self._processes.environ(proc.pid) or {}
        if not env.get("CRUSH_GLOBAL_DATA") and env.get("XDG_DATA_HOME"):
            base = Path(env["XDG_DATA_HOME"]) / "crush"
            uid = self._processes.uid(proc.pid)
            if base.is_absolute() and uid is not None and trusted_dir(base, uid):
                return base, base / "projects.json"
            return None
        return self.root, self.root / "projects.json"

    def _projects_map(
        self, where: tuple[Path, Path] | None
    ) -> tuple[tuple[object, ...] | None, dict[str, list[Path]]]:
        """launch cwd -> data directories, most recent first; re-read when it changed."""
        if where is None:
            return None, {}
        root, path = where
        signature = lstat_signature(path)
        known = self._projects.get(path)
        if known is not None and known[0] == signature:
            return known
        mapping: dict[str, list[Path]] = {}
        found = read_json_file(path, root, self.stats) if signature is not None else None
        entries = found.data.get("projects") if found is not None else None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                self.stats.garbage += 1
                continue
            cwd, data_dir = path_text(entry.get("path")), path_text(entry.get("data_dir"))
            if cwd and data_dir and os.path.isabs(data_dir):
                mapping.setdefault(cwd, []).append(Path(data_dir))
        self._projects[path] = (signature, mapping)
        return signature, mapping

    def _find_data_dir(
        self, proc: AgentProcess, argv: list[str], projects: dict[str, list[Path]]
    ) -> Path | None:
        uid = self._processes.uid(proc.pid)
        if uid is None or not proc.cwd:
            return None
        cwd = Path(proc.cwd)
        given_cwd = flag_value(argv, ("-c", "--cwd"))
        if given_cwd:
            cwd = cwd / given_cwd  # an absolute value replaces the cwd
        given = flag_value(argv, ("-D", "--data-dir"))
        if given:  # named: that one or none (it may not exist yet)
            return cwd / given if trusted_dir(cwd / given, uid) else None
        for data_dir in projects.get(str(cwd), []):  # options.data_directory
            if trusted_dir(data_dir, uid):
                return data_dir
        walk = cwd
        for _ in range(MAX_WALK):  # the closest .crush, within the repository
            if lstat_signature(walk / ".crush") is not None:
                # Crush uses the closest one: if it is not the user's own, none.
                return walk / ".crush" if trusted_dir(walk / ".crush", uid) else None
            if (walk / ".git").exists() or walk.parent == walk:
                break
            walk = walk.parent
        return None

    # -- reading the database ---------------------------------------------------------------

    def _refresh(self, db: _Database, horizon: float) -> None:
        path = db.data_dir / "crush.db"
        signature = (lstat_signature(path), lstat_signature(Path(str(path) + "-wal")))
        if signature == db.signature:
            return
        if signature[0] is None:  # no database (yet): nothing to read until it appears
            db.signature, db.sessions = signature, {}
            return
        try:
            rows, owner = read_database(
                db.data_dir, path, lambda conn: _query(conn, horizon, db.sessions), self.stats
            )
        except UnreadableDatabase:
            return  # locked, half there, replaced: the next change tries again
        except _MissingColumns:
            self.stats.garbage += 1
            db.signature, db.sessions = signature, {}
            return
        db.signature, db.owner = signature, owner
        before = db.sessions
        db.sessions = {}
        for session in rows:
            old = before.get(session.native_id)
            if old is not None:
                session.last_write = old.last_write
                session.result_seen = session.result_seen or old.result_seen
                if old.signature() != session.signature() and not _renamed_only(old, session):
                    session.last_write = self._clock()
            elif db.read_once:
                session.last_write = self._clock()  # new since the first read: work
            db.sessions[session.native_id] = session
        db.read_once = True
        lock = read_json_file(db.data_dir / "crush.lock", db.data_dir, self.stats)
        pid = lock.data.get("pid") if lock is not None else None
        db.server_pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    # -- which process runs which session ---------------------------------------------------

    def _assign(self, db: _Database, members: list[AgentProcess]) -> None:
        clients = [p for p in members if not self._is_server(p, db)]
        if not clients:
            return
        claims: dict[tuple[int, int], list[_Session]] = {}
        pinned: dict[str, AgentProcess] = {}
        for proc in clients:
            chosen = flag_value(self._argv(proc), ("-s", "--session"))
            if chosen and chosen in db.sessions:
                pinned[chosen] = proc
        for session in db.sessions.values():
            if session.parent is not None or "$$" in session.native_id:
                continue
            owner = pinned.get(session.native_id) or owner_of(
                session.created, session.updated, clients
            )
            if owner is not None:
                claims.setdefault(owner.key, []).append(session)
        for proc in clients:
            mine = claims.get(proc.key)
            if mine:
                current = max(mine, key=lambda s: (s.updated, s.created, s.native_id))
                self._current[proc.key] = (db.data_dir, current.native_id, proc.start_time)

    def _is_server(self, proc: AgentProcess, db: _Database) -> bool:
        return proc.pid == db.server_pid or _subcommand(self._argv(proc)) == "server"

    def _argv(self, proc: AgentProcess) -> list[str]:
        where = self._where.get(proc.key)
        return where.argv if where is not None else []

    def _subagent(self, db: _Database, child: _Session, since: float) -> SubagentFacts:
        status = child.status(since)
        finished = (
            child.assistant is not None
            and child.last is not None
            and child.last.rowid == child.assistant.rowid
            and status == "idle"
        )
        return SubagentFacts(
            agent_id=child.native_id,
            name=child.title,
            done=child.result_seen or finished,
            last_write=child.last_write,
            status=status,
            model=_model(child),
        )


def owner_of(created: float, updated: float, procs: list[AgentProcess]) -> AgentProcess | None:
    """The process that ran a conversation (created, last touched: epoch seconds): of the
    processes running when it was last touched, the last started before it was created;
    for one created before all of them (resumed), the last started. Shared by the readers
    of agents that record no process for their conversations."""
    alive = [p for p in procs if p.start_time - SLACK_S <= updated]
    if not alive:
        return None
    before = [p for p in alive if p.start_time - SLACK_S <= created]
    return max(before or alive, key=lambda p: (p.start_time, p.pid))


def _fresh(moment: float | None, since: float) -> bool:
    """Written by the running process (not left by an earlier one); unknown: assumed so."""
    return moment is None or moment >= since - SLACK_S


def _column(name: str | None) -> str:
    return quote_name(name) if name else "NULL"


def _model(session: _Session) -> str | None:
    return session.assistant.model if session.assistant is not None else None


# -- the queries -----------------------------------------------------------------------------


def _query(conn: sqlite3.Connection, horizon: float, known: dict[str, _Session]) -> list[_Session]:
    scols = columns(conn, "sessions")
    mcols = columns(conn, "messages")
    updated = pick(scols, "updated_at", "created_at")
    if "id" not in scols or updated is None or not {"session_id", "role"} <= mcols:
        raise _MissingColumns
    created = pick(scols, "created_at", "updated_at") or updated
    parent = pick(scols, "parent_session_id")
    title = pick(scols, "title", "name")
    select = ", ".join(_column(c) for c in ("id", parent, title, created, updated))
    rows = conn.execute(
        f"SELECT {select} FROM sessions WHERE {quote_name(updated)} >= ? "
        f"ORDER BY {quote_name(updated)} DESC LIMIT {MAX_SESSIONS}",
        (int(horizon),),
    ).fetchall()
    sessions = []
    for row in rows:
        session = _session(row, horizon)
        if session is not None:
            sessions.append(session)
    message = _message_select(mcols)
    for session in sessions:
        session.last = _newest(conn, message, session.native_id, None)
        session.assistant = _newest(conn, message, session.native_id, "assistant")
    by_id = {s.native_id: s for s in sessions}
    for session in sessions:
        old = known.get(session.native_id)
        if session.parent in by_id and not (old is not None and old.result_seen):
            session.result_seen = _result_seen(conn, mcols, session)
    return sessions


def _session(row: Sequence[object], horizon: float) -> _Session | None:
    native_id, parent, title, created, updated = row
    ident = identifier(native_id)
    updated_s, created_s = _seconds(updated), _seconds(created)
    if ident is None or updated_s is None:
        return None
    if updated_s < horizon:
        return None  # milliseconds compared as seconds above: filtered here
    name = text(title)
    return _Session(
        native_id=ident,
        parent=identifier(parent),
        title=None if name in PLACEHOLDER_TITLES else name,
        created=created_s if created_s is not None else updated_s,
        updated=updated_s,
    )


def _message_select(mcols: set[str]) -> str:
    parts = (
        f"CASE WHEN length(parts) <= {MAX_PARTS_CHARS} THEN parts END"
        if "parts" in mcols
        else "NULL"
    )
    fields = [
        "rowid",
        "role",
        _column(pick(mcols, "updated_at", "created_at")),
        _column(pick(mcols, "finished_at")),
        _column(pick(mcols, "model")),
        parts,
    ]
    return ", ".join(fields)


def _newest(
    conn: sqlite3.Connection, select: str, session_id: str, role: str | None
) -> _Message | None:
    where = "session_id = ?" + (" AND role = ?" if role else "")
    args: tuple[str, ...] = (session_id, role) if role else (session_id,)
    row = conn.execute(
        f"SELECT {select} FROM messages WHERE {where} ORDER BY rowid DESC LIMIT 1", args
    ).fetchone()
    if row is None:
        return None
    rowid, kind, updated, finished, model, parts = row
    if not isinstance(rowid, int):
        return None
    return _Message(
        rowid=rowid,
        role=kind if isinstance(kind, str) else "",
        updated=_seconds(updated),
        finished=_seconds(finished),
        model=text(model),
        reason=_finish_reason(parts),
        finish_known='"finished_at"' in select,
    )


def _renamed_only(old: _Session, new: _Session) -> bool:
    """A rename (the title changed, and its trigger bumped ``updated_at``) is no work."""
    return old.title != new.title and old.messages() == new.messages()


def _result_seen(conn: sqlite3.Connection, mcols: set[str], child: _Session) -> bool:
    """Whether the parent holds the tool result of the call that started a sub-agent."""
    message_id, sep, call = child.native_id.partition("$$")
    if not sep or not call or "parts" not in mcols or child.parent is None:
        return False
    after = "(SELECT rowid FROM messages WHERE id = ?)" if "id" in mcols else "NULL"
    row = conn.execute(
        "SELECT 1 FROM messages WHERE session_id = ? AND role = 'tool' "
        f"AND rowid > COALESCE({after}, 0) AND instr(CAST(parts AS TEXT), ?) > 0 LIMIT 1",
        (child.parent, message_id, json.dumps(call))
        if "id" in mcols
        else (child.parent, json.dumps(call)),
    ).fetchone()
    return row is not None


def _finish_reason(parts: object) -> str | None:
    """The reason of the ``finish`` part of a message's parts (JSON ``[{"type", "data"}]``);
    None when there is none or the parts cannot be read (zstd-compressed, garbage)."""
    if isinstance(parts, bytes):
        try:
            parts = parts.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(parts, str) or not parts.startswith("["):
        return None
    raw = parts.encode("utf-8", "replace")
    if not depth_ok(raw):
        return None
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "finish":
            data = item.get("data")
            return text(data.get("reason"), 64) if isinstance(data, dict) else None
    return None


# -- small helpers ---------------------------------------------------------------------------


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
            value = int(value)
        else:
            return None
    seconds = float(value) / (1000 if value > 1e11 else 1)
    return seconds if 0 < seconds < 1e10 else None


def lstat_signature(path: Path) -> tuple[object, ...] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def trusted_dir(path: Path, uid: int) -> bool:
    """A real directory (not a link) owned by the process's user."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid


def flag_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    """The value of a command-line flag (``-s x``, ``--session x``, ``--session=x``)."""
    for i, arg in enumerate(argv[1:], 1):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return path_text(argv[i + 1])
            if arg.startswith(name + "=") and name.startswith("--"):
                return path_text(arg[len(name) + 1 :])
    return None


def _subcommand(argv: list[str]) -> str | None:
    """The first word of a command line that is neither a flag, a flag's value nor the
    script a ``node`` wrapper runs."""
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-") or arg.endswith((".js", ".cjs", ".mjs")):
            continue
        return arg
    return None


SPEC = ReaderSpec(
    platform="crush",
    env_dir="CRUSH_GLOBAL_DATA",
    home_dir=".local/share/crush",
    factory=CrushState,
)
