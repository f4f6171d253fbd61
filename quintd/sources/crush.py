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

Reading the database, and what its rows mean: ``crush_db.py``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, SubagentFacts
from quintd.sources.attribution import flag_value, subcommand
from quintd.sources.changes import lstat_signature
from quintd.sources.crush_db import CrushSession, model_of, query_sessions
from quintd.sources.files import path_text, read_json_file, trusted_dir
from quintd.sources.registry import spec
from quintd.sources.spec import ReaderContext
from quintd.sources.sqlite_sessions import Database, SessionDatabases

MAX_WALK = 32  # directories walked up looking for .crush
_FLAGS_WITH_VALUE = frozenset({"-c", "--cwd", "-D", "--data-dir", "-s", "--session", "--host"})


class CrushState(SessionDatabases[CrushSession]):
    platform = "crush"
    session_flags = ("-s", "--session")
    marker = "projects.json"  # and the databases are in the projects, outside the root

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._projects: dict[Path, tuple[tuple[object, ...] | None, dict[str, list[Path]]]] = {}
        self._projects_seen: dict[tuple[int, int], object] = {}
        self._servers: dict[Path, int | None] = {}  # crush.lock's pid (client/server mode)

    def conversation_facts(
        self, proc: AgentProcess, db: Database[CrushSession], session: CrushSession, since: float
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
            model=model_of(session),
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
        self, conn: sqlite3.Connection, db: Database[CrushSession], horizon: float
    ) -> list[CrushSession]:
        return query_sessions(conn, horizon, db.sessions)

    def worked(self, old: CrushSession, new: CrushSession) -> bool:
        # A rename (the title changed, and its trigger bumped ``updated_at``) is no work.
        return old.signature() != new.signature() and not (
            old.title != new.title and old.messages() == new.messages()
        )

    def after_read(self, db: Database[CrushSession]) -> None:
        lock = read_json_file(db.root / "crush.lock", db.root, self.stats)
        pid = lock.data.get("pid") if lock is not None else None
        self._servers[db.path] = pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    # -- which process runs which session ---------------------------------------------------

    def candidates(
        self, db: Database[CrushSession], members: list[AgentProcess]
    ) -> list[AgentProcess]:
        """A ``crush server`` runs turns for its clients and owns no conversation."""
        server = self._servers.get(db.path)
        return [
            p
            for p in members
            if p.pid != server and subcommand(self.argv(p), _FLAGS_WITH_VALUE) != "server"
        ]

    def top_level(self, session: CrushSession) -> bool:
        return session.parent is None and "$$" not in session.native_id

    def _subagent(self, child: CrushSession, since: float) -> SubagentFacts:
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
            model=model_of(child),
        )


SPEC = spec("crush")  # where it keeps its state: the registry's line
