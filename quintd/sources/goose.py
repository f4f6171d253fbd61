"""goose (block/goose, Rust; mirrored as aaif-goose/goose): one SQLite database,
``sessions.db``. Built from goose's own source, ``block/goose`` at
``865e4a030a67eb0c51869874b9c758cb1eb10595`` (``crates/goose/src/session/storage.rs``
``create_schema``, ``migrations.rs``: schema 13), ``crates/goose/src/config/paths.rs`` at
``0780e228ca96f8b7171d9a76f62b6d2c11ed901e``, ``crates/goose/src/agents/agent/reply.rs`` at
``4ff60c9d70582a9316e1ba5b9d6b22b7c1433cbc`` and ``crates/goose-cli/src/session/builder.rs``;
``parent_session_id`` (schema 15) from ``kenn-io/agentsview`` at
``538600744d1b87614d3746d36a0966c1f2ac1cad``. **Unverified against a real run** (goose is
distributed from GitHub releases only, unreachable here).

Files: ``$GOOSE_PATH_ROOT/data/sessions/sessions.db`` when ``GOOSE_PATH_ROOT`` is an
absolute path, else ``${XDG_DATA_HOME:-~/.local/share}/goose/sessions/sessions.db`` (WAL).
Stale ``<name>.jsonl`` files of older versions beside it (imported once) are ignored.

- ``sessions``: ``id`` (``YYYYMMDD_<n>``), ``name`` (else ``description``), ``session_type``
  (``user``, ``scheduled``, ``sub_agent``, ``hidden``, ``terminal``, ``gateway``, ``acp``,
  others opaque), ``working_dir``, ``created_at``/``updated_at`` (SQLite text
  ``YYYY-MM-DD HH:MM:SS`` UTC, or RFC 3339), ``model_config_json`` (``model_name``), and
  ``parent_session_id`` in newer schemas.
- ``messages``: ``id`` (autoincrement), ``session_id``, ``role`` (``user`` or
  ``assistant``; tool results are ``user`` rows with ``toolResponse`` items),
  ``content_json`` (a JSON array of ``{"type": ...}`` items), ``created_timestamp``
  (Unix seconds).

How it is read. goose records no process: a session belongs to a goose process whose cwd
is its ``working_dir`` (``--session-id`` in argv pins one), of those running when it was
last touched, the last started before it was created (the last started, for a resumed
one). The process's conversation is its top-level session updated last; ``/clear``
keeps the session id (its messages are replaced), so it is the same conversation.

- name: ``name`` (the generated name replaces "CLI Session"), else ``description``;
  model: ``model_config_json.model_name``.
- busy: during a turn goose writes nothing until each model call and its tools are done,
  so the last message tells: a ``user`` row (a prompt, or tool results going back) with
  no assistant row after it, or an assistant row with a tool request and no result yet,
  is busy; an assistant row without tool requests is idle; no message yet is idle. A row
  older than the process (left by a killed goose) says nothing: idle.
- sub-agents: sessions of type ``sub_agent`` (the ``summon`` extension's ``delegate``,
  named "Delegated task"): the children of ``parent_session_id`` where the column exists;
  else the ``sub_agent`` sessions begun in the same directory after the conversation,
  when one goose process runs there. Done when their last message is an answer.
- exit: not recorded; the process's exit ends its conversation.

The database and its ``-wal`` are checked with one ``lstat`` each per pass and read (only
sessions touched since the oldest running goose started) when they changed. Columns are
chosen by name: a database without ``sessions.id``, ``working_dir`` and a time column, or
without ``messages.session_id`` and ``role``, gives no facts (counted in
``stats.garbage``); the process is then a session of its own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.crush import (
    RETRY_S,
    SLACK_S,
    flag_value,
    lstat_signature,
    owner_of,
    trusted_dir,
)
from quintd.sources.files import ReadStats, depth_ok, identifier, path_text, text
from quintd.sources.spec import ReaderContext, ReaderSpec
from quintd.sources.sqlite_files import (
    UnreadableDatabase,
    columns,
    pick,
    quote_name,
    read_database,
)

MAX_SESSIONS = 256
MAX_CONTENT_CHARS = 256 * 1024
PLACEHOLDER_NAMES = frozenset({"CLI Session", "New Chat"})
SUB_AGENT = "sub_agent"


class _MissingColumns(Exception):
    pass


@dataclass(frozen=True)
class _Last:
    """The newest message of a session."""

    rowid: int
    role: str
    created: float | None
    tool_request: bool | None  # None: the content could not be read
    count: int


@dataclass
class _Session:
    native_id: str
    name: str | None
    kind: str
    cwd: str | None
    created: float
    updated: float
    model: str | None
    parent: str | None
    last: _Last | None = None
    last_write: float | None = None

    def signature(self) -> tuple[object, ...]:
        last = self.last
        return (self.updated, last.rowid if last else None, last.count if last else 0)

    @property
    def sub_agent(self) -> bool:
        return self.kind == SUB_AGENT or self.parent is not None

    def status(self, since: float) -> Status | None:
        last = self.last
        if last is None:
            return "busy" if self.sub_agent else "idle"
        if last.role == "assistant":
            if last.tool_request is None:
                return None
            if not last.tool_request:
                return "idle"
        elif last.role != "user":
            return None
        fresh = last.created is None or last.created >= since - SLACK_S
        return "busy" if fresh else "idle"

    @property
    def answered(self) -> bool:
        last = self.last
        return last is not None and last.role == "assistant" and last.tool_request is False


@dataclass
class _Database:
    root: Path  # the directory it is safely reached from
    path: Path
    signature: tuple[object, ...] | None = None
    sessions: dict[str, _Session] = field(default_factory=dict)
    parents_recorded: bool = False
    owner: int | None = None
    read_once: bool = False


@dataclass
class _Where:
    argv: list[str]
    location: tuple[Path, Path] | None  # (the directory it is read from, the database)
    looked_at: float


class GooseState:
    platform = "goose"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        self.root = root
        self._clock = context.clock
        self._processes = context.processes
        self.stats = ReadStats()
        self._where: dict[tuple[int, int], _Where] = {}
        self._dbs: dict[Path, _Database] = {}
        self._current: dict[tuple[int, int], tuple[Path, str, float]] = {}
        self._orphans: dict[tuple[int, int], list[str]] = {}

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        """None: the database changes with every message; it is checked by an ``lstat``
        per pass instead of being watched."""
        return []

    def changed(self, path: Path) -> None:
        """Nothing to mark: the database is checked by a stat each pass."""

    def poll(self) -> None:
        """Nothing to do: every pass stats the database."""

    def has_registry_dir(self) -> bool:
        return (self.root / "sessions").is_dir()

    def prepare(self, given: Pass | Iterable[AgentProcess]) -> None:
        processes = list(given)
        horizon = min((p.start_time for p in processes), default=0.0) - SLACK_S
        live = {p.key for p in processes}
        self._where = {k: v for k, v in self._where.items() if k in live}
        groups: dict[Path, list[AgentProcess]] = {}
        for proc in processes:
            location = self._location(proc)
            if location is not None:
                root, path = location
                self._dbs.setdefault(path, _Database(root, path))
                groups.setdefault(path, []).append(proc)
        self._dbs = {p: db for p, db in self._dbs.items() if p in groups}
        self._current, self._orphans = {}, {}
        for path, members in groups.items():
            db = self._dbs[path]
            self._refresh(db, horizon)
            self._assign(db, members)

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        found = self._current.get(proc.key)
        if found is None:
            return None
        path, native_id, since = found
        db = self._dbs.get(path)
        session = db.sessions.get(native_id) if db is not None else None
        if db is None or session is None:
            return None
        children = [s for s in db.sessions.values() if s.parent == native_id]
        children += [db.sessions[c] for c in self._orphans.get(proc.key, ()) if c in db.sessions]
        subagents = tuple(
            SubagentFacts(
                agent_id=child.native_id,
                name=child.name,
                done=child.answered,
                last_write=child.last_write,
                status=child.status(since),
                model=child.model,
            )
            for child in children
        )
        return ConversationFacts(
            native_id=native_id,
            status=session.status(since),
            name=session.name,
            model=session.model,
            last_write=session.last_write,
            subagents=subagents,
            owner_uid=db.owner,
        )

    # -- where the database is --------------------------------------------------------------

    def _location(self, proc: AgentProcess) -> tuple[Path, Path] | None:
        known = self._where.get(proc.key)
        now = self._clock()
        if known is None:
            argv = self._processes.argv(proc.pid)
            known = self._where[proc.key] = _Where(argv, self._find(proc), now)
        elif known.location is None and now - known.looked_at >= RETRY_S:
            known.location, known.looked_at = self._find(proc), now
        return known.location

    def _find(self, proc: AgentProcess) -> tuple[Path, Path] | None:
        """(the directory it is read from, the database) for this process's environment."""
        env = self._processes.environ(proc.pid) or {}
        base: Path | None = None
        if env.get("GOOSE_PATH_ROOT") and Path(env["GOOSE_PATH_ROOT"]).is_absolute():
            base = Path(env["GOOSE_PATH_ROOT"]) / "data"
        elif env.get("XDG_DATA_HOME") and Path(env["XDG_DATA_HOME"]).is_absolute():
            base = Path(env["XDG_DATA_HOME"]) / "goose"
        if base is None or base == self.root:
            return self.root, self.root / "sessions" / "sessions.db"
        uid = self._processes.uid(proc.pid)
        if uid is None or not trusted_dir(base, uid):
            return None  # another user's directory, or none yet (looked at again later)
        return base, base / "sessions" / "sessions.db"

    # -- reading ------------------------------------------------------------------------------

    def _refresh(self, db: _Database, horizon: float) -> None:
        signature = (lstat_signature(db.path), lstat_signature(Path(str(db.path) + "-wal")))
        if signature == db.signature:
            return
        if signature[0] is None:  # no database (yet): nothing to read until it appears
            db.signature, db.sessions = signature, {}
            return
        try:
            (rows, parents), owner = read_database(
                db.root, db.path, lambda conn: _query(conn, horizon), self.stats
            )
        except UnreadableDatabase:
            return
        except _MissingColumns:
            self.stats.garbage += 1
            db.signature, db.sessions = signature, {}
            return
        db.signature, db.owner, db.parents_recorded = signature, owner, parents
        before, db.sessions = db.sessions, {}
        for session in rows:
            old = before.get(session.native_id)
            if old is not None:
                session.last_write = old.last_write
                if old.signature() != session.signature():
                    session.last_write = self._clock()
            elif db.read_once:
                session.last_write = self._clock()
            db.sessions[session.native_id] = session
        db.read_once = True

    # -- which process runs which session -----------------------------------------------------

    def _assign(self, db: _Database, members: list[AgentProcess]) -> None:
        claims: dict[tuple[int, int], list[_Session]] = {}
        pinned: dict[str, AgentProcess] = {}
        for proc in members:
            where = self._where.get(proc.key)
            chosen = flag_value(where.argv, ("--session-id", "--id")) if where else None
            if chosen and chosen in db.sessions:
                pinned[chosen] = proc
        for session in db.sessions.values():
            if session.sub_agent:
                continue
            owner = pinned.get(session.native_id)
            if owner is None:
                here = [p for p in members if p.cwd and p.cwd == session.cwd]
                owner = owner_of(session.created, session.updated, here)
            if owner is not None:
                claims.setdefault(owner.key, []).append(session)
        for proc in members:
            mine = claims.get(proc.key)
            if mine:
                current = max(mine, key=lambda s: (s.updated, s.created, s.native_id))
                self._current[proc.key] = (db.path, current.native_id, proc.start_time)
        if not db.parents_recorded:
            self._adopt_orphans(db, members)

    def _adopt_orphans(self, db: _Database, members: list[AgentProcess]) -> None:
        """Without ``parent_session_id``: a sub-agent belongs to the conversation of the one
        goose process running in its directory, begun before it."""
        for child in db.sessions.values():
            if child.kind != SUB_AGENT:
                continue
            here = [p for p in members if p.cwd and p.cwd == child.cwd]
            if len(here) != 1 or here[0].key not in self._current:
                continue
            proc = here[0]
            parent = db.sessions.get(self._current[proc.key][1])
            if parent is not None and parent.created - SLACK_S <= child.created:
                self._orphans.setdefault(proc.key, []).append(child.native_id)


# -- the queries -----------------------------------------------------------------------------


def _query(conn: sqlite3.Connection, horizon: float) -> tuple[list[_Session], bool]:
    scols = columns(conn, "sessions")
    mcols = columns(conn, "messages")
    updated = pick(scols, "updated_at", "created_at")
    if (
        "id" not in scols
        or "working_dir" not in scols
        or updated is None
        or not {"session_id", "role"} <= mcols
    ):
        raise _MissingColumns
    wanted = (
        "id",
        pick(scols, "name"),
        pick(scols, "description"),
        pick(scols, "session_type"),
        "working_dir",
        pick(scols, "created_at", "updated_at"),
        updated,
        pick(scols, "model_config_json"),
        pick(scols, "parent_session_id"),
    )
    select = ", ".join(quote_name(c) if c else "NULL" for c in wanted)
    since = datetime.fromtimestamp(max(horizon, 0.0), UTC).strftime("%Y-%m-%d %H:%M:%S")
    column = quote_name(updated)
    rows = conn.execute(
        f"SELECT {select} FROM sessions WHERE {column} >= ? "
        f"OR typeof({column}) IN ('integer', 'real') "
        f"ORDER BY {column} DESC LIMIT {MAX_SESSIONS}",
        (since,),
    ).fetchall()
    sessions = [s for s in (_session(row, horizon) for row in rows) if s is not None]
    content = (
        f"CASE WHEN length(content_json) <= {MAX_CONTENT_CHARS} THEN content_json END"
        if "content_json" in mcols
        else "NULL"
    )
    created = quote_name("created_timestamp") if "created_timestamp" in mcols else "NULL"
    for session in sessions:
        row = conn.execute(
            f"SELECT rowid, role, {content}, {created} FROM messages "
            "WHERE session_id = ? ORDER BY rowid DESC LIMIT 1",
            (session.native_id,),
        ).fetchone()
        if row is None or not isinstance(row[0], int):
            continue
        count = conn.execute(
            "SELECT count(*) FROM messages WHERE session_id = ?", (session.native_id,)
        ).fetchone()
        session.last = _Last(
            rowid=row[0],
            role=row[1] if isinstance(row[1], str) else "",
            created=_when(row[3]),
            tool_request=_tool_request(row[2]),
            count=count[0] if count and isinstance(count[0], int) else 0,
        )
    return sessions, "parent_session_id" in scols


def _session(row: Sequence[object], horizon: float) -> _Session | None:
    native_id, name, description, kind, cwd, created, updated, model_json, parent = row
    ident = identifier(native_id)
    updated_s = _when(updated)
    if ident is None or updated_s is None or updated_s < horizon:
        return None
    created_s = _when(created)
    title = text(name) or text(description)
    return _Session(
        native_id=ident,
        name=None if title in PLACEHOLDER_NAMES else title,
        kind=text(kind, 64) or "user",
        cwd=path_text(cwd),
        created=created_s if created_s is not None else updated_s,
        updated=updated_s,
        model=_model(model_json),
        parent=identifier(parent),
    )


def _model(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 64 * 1024 or not depth_ok(value.encode()):
        return None
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return text(data.get("model_name")) if isinstance(data, dict) else None


def _tool_request(content: object) -> bool | None:
    """Whether a message's content holds a tool request; None if it cannot be read."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(content, str) or not depth_ok(content.encode("utf-8", "replace")):
        return None
    try:
        items = json.loads(content)
    except (ValueError, RecursionError):
        return None
    if not isinstance(items, list):
        return None
    return any(isinstance(i, dict) and i.get("type") == "toolRequest" for i in items)


def _when(value: object) -> float | None:
    """A time as goose stores it: SQLite text (UTC), RFC 3339, or epoch seconds/ms."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value) / (1000 if value > 1e11 else 1)
        return seconds if 0 < seconds < 1e10 else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


SPEC = ReaderSpec(
    platform="goose",
    env_dir=None,  # GOOSE_PATH_ROOT and XDG_DATA_HOME are read per process in prepare
    home_dir=".local/share/goose",
    factory=GooseState,
    writes_at_start=True,  # the CLI creates its session before the first prompt
)
