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

import sqlite3
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, SubagentFacts
from quintd.sources.files import trusted_dir
from quintd.sources.goose_sessions import SUB_AGENT, GooseSession, query_sessions
from quintd.sources.registry import spec
from quintd.sources.spec import ReaderContext
from quintd.sources.sqlite_sessions import Database, SessionDatabases
from quintd.sources.times import START_SLACK_S


class GooseState(SessionDatabases[GooseSession]):
    platform = "goose"
    session_flags = ("--session-id", "--id")
    marker = "sessions"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._parents_recorded: dict[Path, bool] = {}

    def conversation_facts(
        self, proc: AgentProcess, db: Database[GooseSession], session: GooseSession, since: float
    ) -> ConversationFacts:
        native_id = session.native_id
        children = [s for s in db.sessions.values() if s.parent == native_id]
        if not self._parents_recorded.get(db.path, True):
            children += self._orphans(db, proc, session)
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

    def find(self, proc: AgentProcess, argv: list[str]) -> tuple[Path, Path] | None:
        """(the directory it is read from, the database) for this process's environment."""
        env = self.now.view.environ(proc.pid) or {}
        base: Path | None = None
        if env.get("GOOSE_PATH_ROOT") and Path(env["GOOSE_PATH_ROOT"]).is_absolute():
            base = Path(env["GOOSE_PATH_ROOT"]) / "data"
        elif env.get("XDG_DATA_HOME") and Path(env["XDG_DATA_HOME"]).is_absolute():
            base = Path(env["XDG_DATA_HOME"]) / "goose"
        if base is None or base == self.root:
            return self.root, self.root / "sessions" / "sessions.db"
        uid = self.now.view.uid(proc.pid)
        if uid is None or not trusted_dir(base, uid):
            return None  # another user's directory, or none yet (looked at again later)
        return base, base / "sessions" / "sessions.db"

    def query(
        self, conn: sqlite3.Connection, db: Database[GooseSession], horizon: float
    ) -> list[GooseSession]:
        rows, self._parents_recorded[db.path] = query_sessions(conn, horizon)
        return rows

    def worked(self, old: GooseSession, new: GooseSession) -> bool:
        return old.signature() != new.signature()

    def top_level(self, session: GooseSession) -> bool:
        return not session.sub_agent

    def here(self, session: GooseSession, procs: list[AgentProcess]) -> list[AgentProcess]:
        return [p for p in procs if p.cwd and p.cwd == session.cwd]

    def _database_of(self, proc: AgentProcess) -> Path | None:
        where = self._where.get(proc.key)
        return where.location[1] if where is not None and where.location else None

    def _orphans(
        self, db: Database[GooseSession], proc: AgentProcess, parent: GooseSession
    ) -> list[GooseSession]:
        """Without ``parent_session_id``: a sub-agent belongs to the conversation of the one
        goose process running in its directory, begun before it."""
        members = [p for p in self.now if self._database_of(p) == db.path]
        return [
            child
            for child in db.sessions.values()
            if child.kind == SUB_AGENT
            and [p for p in members if p.cwd and p.cwd == child.cwd] == [proc]
            and parent.created - START_SLACK_S <= child.created
        ]


SPEC = spec("goose")  # where it keeps its state: the registry's line
