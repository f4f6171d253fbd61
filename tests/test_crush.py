"""Crush: no CLI can run here and no fixture exists, so the database is built in the shape
Crush's own source defines (DDL below) and written as Crush writes it, step by step, and
replayed with hand-made process records through the real matcher, reader and tracker
(tests/replay.py). Unverified against a real run."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from replay import MACHINE, Rec, Replay, story

from quintd.identity import native_session_id
from quintd.model import ConversationFacts
from quintd.sources import crush, crush_db, sqlite_sessions
from quintd.sources.attribution import subcommand
from quintd.sources.times import CLOCK_SLACK_S, START_SLACK_S, parse_time

# charmbracelet/crush internal/db/migrations/20250424200609_initial.sql at
# bfc261f530d67705b504970acd12439620eee7a0, then 20250515105448_add_summary_message_id.sql,
# 20250627000000_add_provider_to_messages.sql, 20250810000000_add_is_summary_message.sql and
# 20250812000000_add_todos_to_sessions.sql (as listed at 37f36e93824e5c4f892e4a817f7f628e2682fe14).
DDL = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    parent_session_id TEXT,
    title TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    prompt_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens>= 0),
    cost REAL NOT NULL DEFAULT 0.0 CHECK (cost >= 0.0),
    updated_at INTEGER NOT NULL,  -- Unix timestamp in milliseconds
    created_at INTEGER NOT NULL   -- Unix timestamp in milliseconds
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    path TEXT NOT NULL,
    content TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE,
    UNIQUE(path, session_id, version)
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    parts BLOB NOT NULL default '[]',
    model TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_messages_session_id ON messages (session_id);
CREATE TRIGGER IF NOT EXISTS update_session_message_count_on_insert
AFTER INSERT ON messages
BEGIN
UPDATE sessions SET message_count = message_count + 1 WHERE id = new.session_id;
END;
ALTER TABLE sessions ADD COLUMN summary_message_id TEXT;
ALTER TABLE messages ADD COLUMN provider TEXT;
ALTER TABLE messages ADD COLUMN is_summary_message INTEGER DEFAULT 0 NOT NULL;
ALTER TABLE sessions ADD COLUMN todos TEXT;
"""
# The update triggers stamp strftime('%s','now'); the test stamps its own clock instead.

T0 = 1_790_000_000.0
MODEL = "claude-sonnet-4-5"
FIRST = "0b6f8a52-3d51-4c0e-9d3b-1f1d1e6b7a01"
SECOND = "7c9e2d10-5a4b-4e1f-8f7a-2b3c4d5e6f02"
ASK = "4a3b2c1d-0000-4000-8000-00000000a001"  # the assistant message calling the agent tool
SUB = f"{ASK}$$toolu_01AgentCall"


class CrushDB:
    """``crush.db`` written the way Crush's services write it (internal/message,
    internal/session), with this test's clock for timestamps."""

    def __init__(self, path: Path, wal: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.wal = wal
        self._keep: sqlite3.Connection | None = None
        with self._conn() as conn:
            conn.executescript(DDL)
        self.n = 0

    def _conn(self) -> sqlite3.Connection:
        if self.wal:
            if self._keep is None:
                self._keep = sqlite3.connect(self.path, isolation_level=None)
                self._keep.execute("PRAGMA journal_mode=WAL")
            return self._keep
        return sqlite3.connect(self.path, isolation_level=None)

    def run(self, sql: str, *args: object) -> None:
        conn = self._conn()
        conn.execute(sql, args)
        if not self.wal:
            conn.close()

    def session(
        self, sid: str, at: float, title: str = "New Session", parent: str | None = None
    ) -> None:
        self.run(
            "INSERT INTO sessions (id, parent_session_id, title, updated_at, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            sid,
            parent,
            title,
            int(at),
            int(at),
        )

    def title(self, sid: str, title: str, at: float) -> None:
        self.run("UPDATE sessions SET title = ?, updated_at = ? WHERE id = ?", title, int(at), sid)

    def message(
        self, sid: str, role: str, at: float, parts: list[dict] | None = None, mid: str = ""
    ) -> str:
        self.n += 1
        mid = mid or f"00000000-0000-4000-8000-{self.n:012d}"
        model = MODEL if role == "assistant" else ""
        self.run(
            "INSERT INTO messages (id, session_id, role, parts, model, created_at, updated_at, "
            "provider) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            mid,
            sid,
            role,
            json.dumps(parts or []),
            model,
            int(at),
            int(at),
            "anthropic" if role == "assistant" else None,
        )
        self.run("UPDATE sessions SET updated_at = ? WHERE id = ?", int(at), sid)
        return mid

    def finish(self, mid: str, at: float, reason: str = "end_turn") -> None:
        parts = [
            {"type": "text", "data": {"text": "done"}},
            {"type": "finish", "data": {"reason": reason, "time": int(at)}},
        ]
        self.run(
            "UPDATE messages SET parts = ?, finished_at = ?, updated_at = ? WHERE id = ?",
            json.dumps(parts),
            int(at),
            int(at),
            mid,
        )

    def prompt(self, sid: str, at: float) -> str:
        """A user prompt, then the assistant message PrepareStep creates (unfinished)."""
        self.message(sid, "user", at, [{"type": "text", "data": {"text": "hi"}}])
        return self.message(sid, "assistant", at)


def _home(tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "home"
    project = home / "src" / "shop"
    (project / ".git").mkdir(parents=True)
    return home, project


def _register(home: Path, project: Path, data_dir: Path, base: Path | None = None) -> None:
    base = base or home / ".local" / "share" / "crush"
    base.mkdir(parents=True, exist_ok=True)
    entry = {"path": str(project), "data_dir": str(data_dir), "last_accessed": "2026-09-22T00:00Z"}
    (base / "projects.json").write_text(json.dumps({"projects": [entry]}, indent=2))


def _crush(pid: int, project: Path, start: float = T0, *args: str, **env: str) -> Rec:
    return Rec(
        pid, 1, "crush", "/usr/local/bin/crush", ["crush", *args], str(project), start, env=env
    )


def _id(native: str, agent: str | None = None) -> str:
    return native_session_id(MACHINE, "crush", native, agent, uid=os.getuid())


def test_crush_start_prompt_title_idle_subagent_new_session_and_exit(tmp_path: Path) -> None:
    """The whole life of one TUI, with a restart of quintd in the middle that changes
    nothing: the first conversation takes over the process's session; a sub-agent is a
    child session until its result is in the parent; a new session ends the old one."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    replay = Replay(home, T0, idle_after=30, readers=(crush.SPEC,))
    proc = [_crush(4242, project)]

    replay.step(proc, T0 + 1)  # started: no session row until the first prompt
    db.session(FIRST, T0 + 5)
    ask = db.prompt(FIRST, T0 + 5)
    replay.step(proc, T0 + 6)
    db.title(FIRST, "Fix the login bug", T0 + 7)
    replay.step(proc, T0 + 8)
    db.finish(ask, T0 + 9)
    replay.step(proc, T0 + 10)
    replay.restart()
    replay.step(proc, T0 + 11)
    replay.step(proc, T0 + 45)  # quiet: idle
    # A prompt that runs the agent tool: a child session <message id>$$<tool call id>.
    db.message(FIRST, "user", T0 + 50, [{"type": "text", "data": {"text": "look"}}])
    db.message(FIRST, "assistant", T0 + 50, mid=ASK)
    db.session(SUB, T0 + 51, "New Agent Session", parent=FIRST)
    child = db.prompt(SUB, T0 + 51)
    replay.step(proc, T0 + 52)
    replay.restart()
    replay.step(proc, T0 + 53)
    db.finish(child, T0 + 60)
    result = [{"type": "tool_result", "data": {"tool_call_id": "toolu_01AgentCall"}}]
    db.message(FIRST, "tool", T0 + 60, result)
    db.finish(ASK, T0 + 60, "tool_use")
    last = db.message(FIRST, "assistant", T0 + 61)
    replay.step(proc, T0 + 62)
    db.finish(last, T0 + 63)
    replay.step(proc, T0 + 64)
    # ctrl+n, then a prompt: a new session row.
    db.session(SECOND, T0 + 70)
    second = db.prompt(SECOND, T0 + 70)
    replay.step(proc, T0 + 71)
    db.finish(second, T0 + 72)
    replay.step(proc, T0 + 73)
    replay.step([], T0 + 80)  # exit

    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "active", "shop", MODEL, None),  # the first conversation took it over
        ("s1", "active", "Fix the login bug", MODEL, None),
        ("s1", "idle", "Fix the login bug", MODEL, None),
        ("s1", "active", "Fix the login bug", MODEL, None),
        ("s2", "active", None, MODEL, "s1"),  # "New Agent Session": a placeholder
        ("s2", "ended", None, MODEL, "s1"),  # its result is in the parent
        ("s3", "active", "shop", MODEL, None),  # a new session
        ("s1", "ended", "Fix the login bug", MODEL, None),
        ("s3", "ended", "shop", MODEL, None),  # exit
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[1:] == [_id(FIRST, SUB), _id(SECOND)]


def test_crush_busy_and_idle_from_the_newest_messages(tmp_path: Path) -> None:
    home, project = _home(tmp_path)
    db = CrushDB(project / ".crush" / "crush.db", wal=True)  # no projects.json: walk up
    replay = Replay(home, T0, readers=(crush.SPEC,))
    sub = project / "pkg"
    sub.mkdir()
    proc = [_crush(4242, sub)]  # started in a subdirectory: the repository's .crush

    def status() -> str | None:
        facts, _ = replay.sources.observe(replay.agents)
        found = facts.get(4242)
        assert found is None or isinstance(found, ConversationFacts)
        return found.status if found else None

    replay.step(proc, T0 + 1)
    seen = [status()]
    db.session(FIRST, T0 + 2)
    db.message(FIRST, "user", T0 + 2, [{"type": "text", "data": {"text": "hi"}}])
    seen.append(status())  # a prompt, no answer yet
    ask = db.message(FIRST, "assistant", T0 + 2)
    seen.append(status())  # streaming
    db.message(FIRST, "tool", T0 + 3, [{"type": "tool_result", "data": {}}])
    seen.append(status())  # a tool's result going back
    db.finish(ask, T0 + 3, "tool_use")
    seen.append(status())
    nxt = db.message(FIRST, "assistant", T0 + 4)
    db.finish(nxt, T0 + 5, "end_turn")
    seen.append(status())
    assert seen == [None, "busy", "busy", "busy", "busy", "idle"]


def test_crush_a_crash_left_an_unfinished_message_a_resume_says_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    db.session(FIRST, T0 - 600, "Old work")
    db.prompt(FIRST, T0 - 590)  # never finished: that process was killed
    replay = Replay(home, T0, readers=(crush.SPEC,))
    proc = [_crush(4242, project, T0, "--session", FIRST)]
    replay.step(proc, T0 + 1)
    assert story(replay.events) == [("s1", "active", "shop", None, None)]  # not touched yet

    reads = []
    real = sqlite_sessions.read_database
    monkeypatch.setattr(sqlite_sessions, "read_database", lambda *a: reads.append(1) or real(*a))
    replay.advance(1)
    replay.advance(1)
    assert reads == []  # nothing changed: a stat per pass, no query

    db.title(FIRST, "Old work, resumed", T0 + 5)  # resumed: touched by this process
    replay.step(proc, T0 + 6)
    assert len(reads) == 1
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[4242]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.name, found.status) == (FIRST, "Old work, resumed", "idle")
    db.message(FIRST, "user", T0 + 7, [{"type": "text", "data": {"text": "again"}}])
    facts, _ = replay.sources.observe(replay.agents)
    assert facts[4242].status == "busy"  # type: ignore[union-attr]
    db.finish(db.message(FIRST, "assistant", T0 + 8), T0 + 9)
    facts, _ = replay.sources.observe(replay.agents)
    assert facts[4242].status == "idle"  # type: ignore[union-attr]


def test_crush_milliseconds_are_read_as_seconds(tmp_path: Path) -> None:
    """The DDL comments of early versions say milliseconds: tolerated."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    db.run(
        "INSERT INTO sessions (id, title, updated_at, created_at) VALUES (?, ?, ?, ?)",
        FIRST,
        "In ms",
        int((T0 + 2) * 1000),
        int((T0 + 2) * 1000),
    )
    db.run(
        "INSERT INTO sessions (id, title, updated_at, created_at) VALUES (?, ?, ?, ?)",
        SECOND,
        "Before the process",
        int((T0 - 100) * 1000),
        int((T0 - 100) * 1000),
    )
    replay = Replay(home, T0, readers=(crush.SPEC,))
    replay.step([_crush(4242, project)], T0 + 3)
    assert story(replay.events) == [("s1", "active", "In ms", None, None)]


def test_crush_two_tuis_in_one_project_and_a_server(tmp_path: Path) -> None:
    """Two TUIs share one crush.db: a session created after the second started is the
    second's; a ``crush server`` (client/server mode, named in crush.lock) owns none."""
    home, project = _home(tmp_path)
    data_dir = project / ".crush"
    _register(home, project, data_dir)
    db = CrushDB(data_dir / "crush.db")
    (data_dir / "crush.lock").write_text(json.dumps({"pid": 5000, "version": "v0.90.0"}))
    replay = Replay(home, T0, readers=(crush.SPEC,))
    first = _crush(4242, project, T0)
    server = Rec(5000, 1, "crush", "/usr/local/bin/crush", ["crush", "server"], str(project), T0)
    db.session(FIRST, T0 + 2)
    db.finish(db.prompt(FIRST, T0 + 2), T0 + 3)
    replay.step([first, server], T0 + 4)
    second = _crush(4343, project, T0 + 10)
    db.session(SECOND, T0 + 12, "Second window")
    db.finish(db.prompt(SECOND, T0 + 12), T0 + 13)
    replay.step([first, second, server], T0 + 14)
    facts, _ = replay.sources.observe(replay.agents)
    assert {pid: getattr(f, "native_id", None) for pid, f in facts.items()} == {
        4242: FIRST,
        4343: SECOND,
    }


def test_crush_xdg_data_home_and_a_configured_data_directory(tmp_path: Path) -> None:
    home, project = _home(tmp_path)
    xdg = home / "xdg"
    data_dir = project / "state"  # options.data_directory
    _register(home, project, data_dir, base=xdg / "crush")
    db = CrushDB(data_dir / "crush.db")
    db.session(FIRST, T0 + 2, "Configured")
    db.prompt(FIRST, T0 + 2)
    replay = Replay(home, T0, readers=(crush.SPEC,))
    replay.step([_crush(4242, project, T0, XDG_DATA_HOME=str(xdg))], T0 + 3)
    assert story(replay.events) == [("s1", "active", "Configured", MODEL, None)]


def test_crush_garbage_never_breaks_the_reader(tmp_path: Path) -> None:
    """A damaged projects.json, a file that is not a database, a renamed column, parts
    that are not JSON: no facts where nothing can be read, the process stays a session."""
    home, project = _home(tmp_path)
    base = home / ".local" / "share" / "crush"
    base.mkdir(parents=True)
    (base / "projects.json").write_text("{not json")
    data_dir = project / ".crush"
    data_dir.mkdir()
    (data_dir / "crush.db").write_bytes(b"\x00garbage" * 100)
    replay = Replay(home, T0, readers=(crush.SPEC,))
    proc = [_crush(4242, project)]
    replay.step(proc, T0 + 1)
    assert replay.sources.errors == 0
    assert story(replay.events) == [("s1", "active", "shop", None, None)]

    # A future schema: updated_at and created_at renamed.
    (data_dir / "crush.db").unlink()
    conn = sqlite3.connect(data_dir / "crush.db")
    conn.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT, modified INTEGER);"
        "CREATE TABLE messages (id TEXT, session_id TEXT, role TEXT);"
        f"INSERT INTO sessions VALUES ('{FIRST}', 'x', {int(T0) + 2});"
    )
    conn.close()
    replay.step(proc, T0 + 3)
    state = next(iter(replay.sources._states.values()))
    assert state.stats.garbage >= 2  # projects.json and the schema
    assert replay.sources.errors == 0

    # finished_at missing, parts not JSON, ids not ids: read what is there.
    (data_dir / "crush.db").unlink()
    conn = sqlite3.connect(data_dir / "crush.db")
    conn.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, parent_session_id TEXT, title TEXT,"
        " created_at INTEGER, updated_at INTEGER);"
        "CREATE TABLE messages (id TEXT, session_id TEXT, role TEXT, parts BLOB, model TEXT,"
        " created_at INTEGER, updated_at INTEGER);"
        f"INSERT INTO sessions VALUES ('{FIRST}', NULL, 'Kept', {int(T0) + 4}, {int(T0) + 4});"
        f"INSERT INTO sessions VALUES ('bad id!', NULL, 'x', {int(T0) + 4}, {int(T0) + 4});"
        f"INSERT INTO sessions VALUES ('{SECOND}', NULL, 'y', 'soon', 'later');"
        f"INSERT INTO messages VALUES ('m1', '{FIRST}', 'assistant', x'28b52ffd0000', 'm',"
        f" {int(T0) + 4}, {int(T0) + 4});"
    )
    conn.close()
    replay.step(proc, T0 + 5)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[4242]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.name, found.model, found.status) == (FIRST, "Kept", "m", None)
    assert replay.sources.errors == 0
    replay.step([], T0 + 6)
    assert story(replay.events)[-1][1] == "ended"


def test_crush_finish_reason_of_parts() -> None:
    finish = json.dumps([{"type": "finish", "data": {"reason": "tool_use", "time": 1}}])
    assert crush_db.finish_reason(finish) == "tool_use"
    assert crush_db.finish_reason(finish.encode()) == "tool_use"
    assert crush_db.finish_reason(b"\x28\xb5\x2f\xfd...") is None  # zstd (newer builds)
    assert crush_db.finish_reason("[" * 10_000) is None
    assert crush_db.finish_reason('[{"type": "finish", "data": 3}]') is None
    assert parse_time(1_790_000_000_000) == 1_790_000_000.0  # milliseconds tolerated
    assert parse_time(True) is None
    assert subcommand(
        ["node", "/x/@charmland/crush/run-crush.js", "-c", "/p", "server"], crush._FLAGS_WITH_VALUE
    )


def test_crush_npm_wrapper_is_one_agent(tmp_path: Path) -> None:
    """``npm i -g @charmland/crush``: ``node .../run-crush.js`` runs the native binary (the
    npm tarball 0.96.1's lib.js); the wrapper is the agent, the binary folds into it."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    db.session(FIRST, T0 + 2, "Via npm")
    db.prompt(FIRST, T0 + 2)
    package = "/usr/lib/node_modules/@charmland/crush"
    node = Rec(
        4242, 1, "node", "/usr/bin/node", ["node", f"{package}/bin/run-crush.js"], str(project), T0
    )
    native = Rec(4243, 4242, "crush", f"{package}/bin/crush", ["crush"], str(project), T0 + 0.1)
    replay = Replay(home, T0, readers=(crush.SPEC,))
    replay.step([node, native], T0 + 3)
    assert story(replay.events) == [("s1", "active", "Via npm", MODEL, None)]
    assert [a.pid for a in replay.agents] == [4242]


def _facts(replay: Replay, pid: int = 4242) -> ConversationFacts:
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[pid]
    assert isinstance(found, ConversationFacts)
    return found


def test_crush_a_rename_alone_is_no_work_a_rename_with_a_message_is(tmp_path: Path) -> None:
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    db.session(FIRST, T0 + 2)
    db.finish(db.prompt(FIRST, T0 + 2), T0 + 3)
    replay = Replay(home, T0, readers=(crush.SPEC,))
    proc = [_crush(4242, project)]
    replay.step(proc, T0 + 4)
    db.message(FIRST, "user", T0 + 5, [{"type": "text", "data": {"text": "more"}}])
    replay.step(proc, T0 + 6)
    worked = _facts(replay).last_write
    assert worked is not None  # a new message: work
    db.title(FIRST, "Renamed", T0 + 7)
    replay.step(proc, T0 + 8)
    assert (_facts(replay).name, _facts(replay).last_write) == ("Renamed", worked)
    db.title(FIRST, "Renamed again", T0 + 9)
    db.finish(db.message(FIRST, "assistant", T0 + 9), T0 + 9)
    replay.step(proc, T0 + 10)
    found = _facts(replay)
    assert found.name == "Renamed again"
    assert found.last_write is not None and found.last_write > worked
    assert replay.sources.errors == 0


def test_crush_a_message_just_before_the_start_is_the_process_own(tmp_path: Path) -> None:
    """A prompt written START_SLACK_S before the process started: its own (busy); earlier:
    left by a killed Crush (idle)."""
    for offset, status in ((START_SLACK_S, "busy"), (START_SLACK_S + 1, "idle")):
        home, project = _home(tmp_path / str(offset))
        _register(home, project, project / ".crush")
        db = CrushDB(project / ".crush" / "crush.db")
        start = T0 + 10
        db.session(FIRST, start - 5, "Resumed")
        db.message(FIRST, "user", start - offset, [{"type": "text", "data": {"text": "hi"}}])
        replay = Replay(home, T0, readers=(crush.SPEC,))
        replay.step([_crush(4242, project, start, "--session", FIRST)], start + 1)
        assert (_facts(replay).native_id, _facts(replay).status) == (FIRST, status)


def test_crush_the_edges_of_the_schema_and_the_horizon(tmp_path: Path) -> None:
    """Messages with only the columns needed (no parts, no times) are enough; a session
    touched exactly at the horizon (the start less CLOCK_SLACK_S) is read."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    path = project / ".crush" / "crush.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE sessions (id TEXT, title TEXT, created_at INTEGER, updated_at INTEGER);"
        "CREATE TABLE messages (session_id TEXT, role TEXT);"
    )
    edge = int(T0 - CLOCK_SLACK_S)
    conn.execute("INSERT INTO sessions VALUES (?, 'At the edge', ?, ?)", (FIRST, edge, edge))
    conn.execute("INSERT INTO messages VALUES (?, 'user')", (FIRST,))
    conn.close()
    replay = Replay(home, T0, readers=(crush.SPEC,))
    replay.step([_crush(4242, project, T0, "--session", FIRST)], T0 + 1)
    found = _facts(replay)
    assert (found.native_id, found.name, found.status) == (FIRST, "At the edge", "busy")
    assert replay.sources.errors == 0


def test_crush_a_step_that_finished_calling_tools_is_busy(tmp_path: Path) -> None:
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    db.session(FIRST, T0 + 2)
    replay = Replay(home, T0, readers=(crush.SPEC,))
    proc = [_crush(4242, project)]
    db.finish(db.prompt(FIRST, T0 + 2), T0 + 3, "tool_use")  # its tools run
    replay.step(proc, T0 + 4)
    assert _facts(replay).status == "busy"


def test_crush_a_subagent_is_done_when_its_result_is_in_the_parent(tmp_path: Path) -> None:
    """The child's own last step may still say busy (cancelled, or stopped on a tool call):
    the parent's tool message with its call id says it is done. A child whose id is not
    ``<message>$$<call>`` is done only by its own answer."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    replay = Replay(home, T0, readers=(crush.SPEC,))
    proc = [_crush(4242, project)]
    db.session(FIRST, T0 + 2)
    db.message(FIRST, "user", T0 + 2, [{"type": "text", "data": {"text": "look"}}])
    db.message(FIRST, "assistant", T0 + 2, mid=ASK)
    db.session(SUB, T0 + 3, "New Agent Session", parent=FIRST)
    plain = "5d4c3b2a-0000-4000-8000-00000000b002"  # a child id without "$$"
    db.session(plain, T0 + 3, "Plain child", parent=FIRST)
    db.finish(db.prompt(SUB, T0 + 3), T0 + 4, "tool_use")  # stopped on a tool call
    db.prompt(plain, T0 + 3)
    replay.step(proc, T0 + 5)

    def done() -> dict[str, bool]:
        return {s.agent_id: s.done for s in _facts(replay).subagents}

    assert done() == {SUB: False, plain: False}
    result = [{"type": "tool_result", "data": {"tool_call_id": "toolu_01AgentCall"}}]
    db.message(FIRST, "tool", T0 + 6, result)
    replay.step(proc, T0 + 7)
    assert done() == {SUB: True, plain: False}


def test_crush_finish_reason_is_the_finish_part_and_capped() -> None:
    parts = [
        {"type": "text", "data": {"text": "calling"}},
        "not a part",
        {"type": "finish", "data": {"reason": "tool_use"}},
    ]
    assert crush_db.finish_reason(json.dumps(parts)) == "tool_use"
    long = json.dumps([{"type": "finish", "data": {"reason": "r" * 100}}])
    assert crush_db.finish_reason(long) == "r" * 64


def test_crush_a_session_stays_with_the_tui_that_created_it(tmp_path: Path) -> None:
    """Touched after a second TUI started in the project: still the first's, as it was
    created before the second started (its ``created_at``, not its ``updated_at``)."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    replay = Replay(home, T0, readers=(crush.SPEC,))
    first, second = _crush(4242, project, T0), _crush(4343, project, T0 + 10)
    db.session(FIRST, T0 + 2)
    db.finish(db.prompt(FIRST, T0 + 2), T0 + 3)
    replay.step([first], T0 + 4)
    db.finish(db.prompt(FIRST, T0 + 15), T0 + 16)
    replay.step([first, second], T0 + 17)
    facts, _ = replay.sources.observe(replay.agents)
    assert {pid: getattr(f, "native_id", None) for pid, f in facts.items()} == {4242: FIRST}


def test_crush_a_data_directory_without_a_database_is_looked_for_again(tmp_path: Path) -> None:
    """The closest ``.crush`` holds no crush.db yet: not settled, so when projects.json
    changes (it names the project's configured data directory) the process's database is
    looked for again at once, not only after RETRY_S."""
    home, project = _home(tmp_path)
    (project / ".crush").mkdir()
    replay = Replay(home, T0, readers=(crush.SPEC,))
    proc = [_crush(4242, project)]
    replay.step(proc, T0 + 1)
    assert replay.sources.observe(replay.agents)[0] == {}
    db = CrushDB(project / "state" / "crush.db")
    db.session(FIRST, T0 + 2, "Configured later")
    db.prompt(FIRST, T0 + 2)
    _register(home, project, project / "state")
    replay.step(proc, T0 + 2)
    assert sqlite_sessions.RETRY_S > 1
    assert (_facts(replay).native_id, _facts(replay).name) == (FIRST, "Configured later")


def test_crush_cwd_and_data_dir_flags_and_projects_json_entries(tmp_path: Path) -> None:
    """``-c pkg`` moves the walk for ``.crush`` to the project's pkg; ``-D state`` names the
    data directory (relative to the cwd); a projects.json entry that is no object is
    garbage, one with a relative data_dir is not used."""
    home, project = _home(tmp_path)
    CrushDB(project / "pkg" / ".crush" / "crush.db").session(FIRST, T0 + 2, "In pkg")
    CrushDB(project / "state" / "crush.db").session(SECOND, T0 + 2, "Named directory")
    base = home / ".local" / "share" / "crush"
    base.mkdir(parents=True)
    entries = [3, {"path": str(project), "data_dir": "state"}]
    (base / "projects.json").write_text(json.dumps({"projects": entries}))
    replay = Replay(home, T0, readers=(crush.SPEC,))
    plain = _crush(4141, project)
    moved, named = _crush(4242, project, T0, "-c", "pkg"), _crush(4343, project, T0, "-D", "state")
    replay.step([plain, moved, named], T0 + 3)
    facts, _ = replay.sources.observe(replay.agents)
    assert {pid: getattr(f, "name", None) for pid, f in facts.items()} == {
        4242: "In pkg",
        4343: "Named directory",
    }
    state = next(iter(replay.sources._states.values()))
    assert state.stats.garbage == 1


def test_crush_a_relative_xdg_data_home_names_no_projects_file(tmp_path: Path) -> None:
    """XDG_DATA_HOME relative: no projects.json is believed (not the default one either);
    the ``.crush`` walked up to is."""
    home, project = _home(tmp_path)
    _register(home, project, project / "state")
    CrushDB(project / "state" / "crush.db").session(SECOND, T0 + 2, "Registered")
    CrushDB(project / ".crush" / "crush.db").session(FIRST, T0 + 2, "Walked to")
    replay = Replay(home, T0, readers=(crush.SPEC,))
    replay.step([_crush(4242, project, T0, XDG_DATA_HOME="xdg")], T0 + 3)
    assert (_facts(replay).native_id, _facts(replay).name) == (FIRST, "Walked to")


def test_crush_a_server_named_by_the_lock_owns_nothing_and_a_child_done_by_itself(
    tmp_path: Path,
) -> None:
    """The pid in crush.lock runs no conversation, whatever its argv; a child session whose
    own last step finished (no result in the parent) is done."""
    home, project = _home(tmp_path)
    _register(home, project, project / ".crush")
    db = CrushDB(project / ".crush" / "crush.db")
    (project / ".crush" / "crush.lock").write_text(json.dumps({"pid": 5000}))
    db.session(FIRST, T0 + 12, "Client's")
    db.finish(db.prompt(FIRST, T0 + 12), T0 + 13)
    plain = "5d4c3b2a-0000-4000-8000-00000000b002"
    db.session(plain, T0 + 13, "Plain child", parent=FIRST)
    db.finish(db.prompt(plain, T0 + 13), T0 + 14)
    replay = Replay(home, T0, readers=(crush.SPEC,))
    server = _crush(5000, project, T0 + 10, "--host", "unix:///tmp/crush.sock")
    replay.step([_crush(4242, project), server], T0 + 15)
    facts, _ = replay.sources.observe(replay.agents)
    assert set(facts) == {4242}
    assert [(s.agent_id, s.done) for s in _facts(replay).subagents] == [(plain, True)]
