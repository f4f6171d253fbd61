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
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import flag_value, subcommand
from quintd.sources.changes import lstat_signature
from quintd.sources.files import (
    identifier,
    parse_json,
    path_text,
    read_json_file,
    text,
    trusted_dir,
)
from quintd.sources.registry import spec
from quintd.sources.spec import ReaderContext
from quintd.sources.sqlite_files import columns, pick, quote_name
from quintd.sources.sqlite_sessions import (
    Database,
    MissingColumns,
    Session,
    SessionDatabases,
    column,
)
from quintd.sources.times import START_SLACK_S, parse_time

MAX_SESSIONS = 256  # sessions read per database per pass (the newest)
MAX_PARTS_CHARS = 256 * 1024  # a message's parts longer than this are not parsed
MAX_WALK = 32  # directories walked up looking for .crush
# "New Agent Session": a sub-agent's until its own title arrives (seen with v0.90.0).
PLACEHOLDER_TITLES = frozenset({"New Session", "Untitled Session", "New Agent Session"})
BUSY_REASONS = frozenset({"tool_use"})
_FLAGS_WITH_VALUE = frozenset({"-c", "--cwd", "-D", "--data-dir", "-s", "--session", "--host"})


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
class _Session(Session):
    title: str | None = None
    last: _Message | None = None  # the newest message
    assistant: _Message | None = None  # the newest assistant message
    result_seen: bool = False  # a sub-agent whose tool result is in its parent

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


class CrushState(SessionDatabases[_Session]):
    platform = "crush"
    session_flags = ("-s", "--session")
    marker = "projects.json"  # and the databases are in the projects, outside the root

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._projects: dict[Path, tuple[tuple[object, ...] | None, dict[str, list[Path]]]] = {}
        self._projects_seen: dict[tuple[int, int], object] = {}
        self._servers: dict[Path, int | None] = {}  # crush.lock's pid (client/server mode)

    def conversation_facts(
        self, proc: AgentProcess, db: Database[_Session], session: _Session, since: float
    ) -> ConversationFacts:
        subagents = tuple(
            self._subagent(child, since)
            for child in db.sessions.values()
            if child.parent == session.native_id
        )
        return ConversationFacts(
            native_id=session.native_id,
            status=session.status(since),
            name=session.title,
            model=_model(session),
            last_write=session.last_write,
            subagents=subagents,
            owner_uid=db.owner,
        )

    # -- where a process keeps its state ----------------------------------------------------

    def find(self, proc: AgentProcess, argv: list[str]) -> tuple[Path, Path] | None:
        seen, projects = self._projects_map(self._projects_file(proc))
        self._projects_seen[proc.key] = seen
        data_dir = self._find_data_dir(proc, argv, projects)
        return (data_dir, data_dir / "crush.db") if data_dir is not None else None

    def settled(self, location: tuple[Path, Path] | None) -> bool:
        return location is not None and lstat_signature(location[1]) is not None

    def look_again(self, proc: AgentProcess) -> bool:
        """projects.json changed since the process's data directory was looked for."""
        seen, _ = self._projects_map(self._projects_file(proc))
        return seen != self._projects_seen.get(proc.key)

    def _projects_file(self, proc: AgentProcess) -> tuple[Path, Path] | None:
        """projects.json of this process: in the global data directory its environment
        names (the manager's root covers ``CRUSH_GLOBAL_DATA`` and the default)."""
        env = self.now.view.environ(proc.pid) or {}
        if not env.get("CRUSH_GLOBAL_DATA") and env.get("XDG_DATA_HOME"):
            base = Path(env["XDG_DATA_HOME"]) / "crush"
            uid = self.now.view.uid(proc.pid)
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
        uid = self.now.view.uid(proc.pid)
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

    def query(
        self, conn: sqlite3.Connection, db: Database[_Session], horizon: float
    ) -> list[_Session]:
        return _query(conn, horizon, db.sessions)

    def worked(self, old: _Session, new: _Session) -> bool:
        # A rename (the title changed, and its trigger bumped ``updated_at``) is no work.
        return old.signature() != new.signature() and not (
            old.title != new.title and old.messages() == new.messages()
        )

    def after_read(self, db: Database[_Session]) -> None:
        lock = read_json_file(db.root / "crush.lock", db.root, self.stats)
        pid = lock.data.get("pid") if lock is not None else None
        self._servers[db.path] = pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    # -- which process runs which session ---------------------------------------------------

    def candidates(self, db: Database[_Session], members: list[AgentProcess]) -> list[AgentProcess]:
        """A ``crush server`` runs turns for its clients and owns no conversation."""
        server = self._servers.get(db.path)
        return [
            p
            for p in members
            if p.pid != server and subcommand(self.argv(p), _FLAGS_WITH_VALUE) != "server"
        ]

    def top_level(self, session: _Session) -> bool:
        return session.parent is None and "$$" not in session.native_id

    def _subagent(self, child: _Session, since: float) -> SubagentFacts:
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


def _fresh(moment: float | None, since: float) -> bool:
    """Written by the running process (not left by an earlier one); unknown: assumed so."""
    return moment is None or moment >= since - START_SLACK_S


def _model(session: _Session) -> str | None:
    return session.assistant.model if session.assistant is not None else None


# -- the queries -----------------------------------------------------------------------------


def _query(conn: sqlite3.Connection, horizon: float, known: dict[str, _Session]) -> list[_Session]:
    scols = columns(conn, "sessions")
    mcols = columns(conn, "messages")
    updated = pick(scols, "updated_at", "created_at")
    if "id" not in scols or updated is None or not {"session_id", "role"} <= mcols:
        raise MissingColumns
    created = pick(scols, "created_at", "updated_at") or updated
    parent = pick(scols, "parent_session_id")
    title = pick(scols, "title", "name")
    select = ", ".join(column(c) for c in ("id", parent, title, created, updated))
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
        if old is not None and old.result_seen:
            session.result_seen = True  # seen once: never asked again
        elif session.parent in by_id:
            session.result_seen = _result_seen(conn, mcols, session)
    return sessions


def _session(row: Sequence[object], horizon: float) -> _Session | None:
    native_id, parent, title, created, updated = row
    ident = identifier(native_id)
    updated_s, created_s = parse_time(updated), parse_time(created)
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
        column(pick(mcols, "updated_at", "created_at")),
        column(pick(mcols, "finished_at")),
        column(pick(mcols, "model")),
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
        updated=parse_time(updated),
        finished=parse_time(finished),
        model=text(model),
        reason=_finish_reason(parts),
        finish_known='"finished_at"' in select,
    )


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
    items = parse_json(parts)
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "finish":
            data = item.get("data")
            return text(data.get("reason"), 64) if isinstance(data, dict) else None
    return None


SPEC = spec("crush")  # where it keeps its state: the registry's line
