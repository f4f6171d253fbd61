"""goose: no CLI can run here and no fixture exists, so ``sessions.db`` is built in the
shape goose's own source defines (DDL below) and written as goose writes it, step by step,
and replayed with hand-made process records through the real matcher, reader and tracker
(tests/replay.py). Unverified against a real run."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from replay import MACHINE, Rec, Replay, story

from quintd.identity import native_session_id
from quintd.model import ConversationFacts
from quintd.sources import goose, sqlite_sessions
from quintd.sources.times import CLOCK_SLACK_S, START_SLACK_S, parse_time

# block/goose crates/goose/src/session/storage.rs create_schema at
# 865e4a030a67eb0c51869874b9c758cb1eb10595 (schema 13).
DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    user_set_name BOOLEAN DEFAULT FALSE,
    session_type TEXT NOT NULL DEFAULT 'user',
    working_dir TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    extension_data TEXT DEFAULT '{}',
    total_tokens INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    accumulated_total_tokens INTEGER,
    accumulated_input_tokens INTEGER,
    accumulated_output_tokens INTEGER,
    accumulated_cost REAL,
    schedule_id TEXT,
    recipe_json TEXT,
    user_recipe_values_json TEXT,
    provider_name TEXT,
    model_config_json TEXT,
    goose_mode TEXT NOT NULL DEFAULT 'auto',
    archived_at TIMESTAMP,
    project_id TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    role TEXT NOT NULL,
    content_json TEXT NOT NULL,
    created_timestamp INTEGER NOT NULL,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    tokens INTEGER,
    metadata_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_messages_session ON messages(session_id);
CREATE INDEX IF NOT EXISTS idx_sessions_updated ON sessions(updated_at DESC);
INSERT INTO schema_version (version) VALUES (13);
"""
# Schema 15 adds sessions.parent_session_id (kenn-io/agentsview
# internal/parser/goose_test.go at 538600744d1b87614d3746d36a0966c1f2ac1cad).
SCHEMA_15 = "ALTER TABLE sessions ADD COLUMN parent_session_id TEXT;"

T0 = 1_790_000_000.0
MODEL = "gpt-4o"
DAY = datetime.fromtimestamp(T0, UTC).strftime("%Y%m%d")


def _sql_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


class GooseDB:
    """``sessions.db`` written the way goose's SessionStorage writes it."""

    def __init__(self, path: Path, schema_15: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")  # storage.rs create_pool
        self.conn.executescript(DDL + (SCHEMA_15 if schema_15 else ""))
        self.n = 0

    def session(
        self, cwd: Path, at: float, name: str = "CLI Session", kind: str = "user", **extra: str
    ) -> str:
        self.n += 1
        sid = f"{DAY}_{self.n}"
        config = json.dumps({"model_name": MODEL, "context_limit": None, "toolshim": False})
        cols = {
            "id": sid,
            "name": name,
            "session_type": kind,
            "working_dir": str(cwd),
            "created_at": _sql_time(at),
            "updated_at": _sql_time(at),
            "provider_name": "openai",
            "model_config_json": config,
            **extra,
        }
        self.conn.execute(
            f"INSERT INTO sessions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            tuple(cols.values()),
        )
        return sid

    def rename(self, sid: str, name: str, at: float) -> None:
        self.conn.execute(
            "UPDATE sessions SET name = ?, updated_at = ? WHERE id = ?", (name, _sql_time(at), sid)
        )

    def add(self, sid: str, role: str, at: float, *items: dict) -> None:
        content = list(items) or [{"type": "text", "text": "…"}]
        self.conn.execute(
            "INSERT INTO messages (message_id, session_id, role, content_json, created_timestamp) "
            "VALUES (?, ?, ?, ?, ?)",
            (f"msg_{sid}_{at}", sid, role, json.dumps(content), int(at)),
        )
        self.conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (_sql_time(at), sid))

    def clear(self, sid: str, at: float) -> None:
        """``/clear``: replace_conversation(empty), then the command and its notice."""
        self.conn.execute("DELETE FROM messages WHERE session_id = ?", (sid,))
        self.add(sid, "user", at, {"type": "text", "text": "/clear"})
        self.add(sid, "assistant", at, {"type": "text", "text": "Conversation cleared"})


REQUEST = {"type": "toolRequest", "id": "t1", "toolCall": {"status": "success", "value": {}}}
RESPONSE = {"type": "toolResponse", "id": "t1", "toolResult": {"status": "success"}}


def _project(tmp_path: Path) -> tuple[Path, Path, Path]:
    home = tmp_path / "home"
    project = home / "src" / "shop"
    project.mkdir(parents=True)
    return home, project, home / ".local" / "share" / "goose" / "sessions" / "sessions.db"


def _goose(pid: int, cwd: Path, start: float = T0, *args: str, **env: str) -> Rec:
    argv = ["goose", "session", *args]
    return Rec(pid, 1, "goose", "/usr/local/bin/goose", argv, str(cwd), start, env=env)


def _id(native: str, agent: str | None = None) -> str:
    return native_session_id(MACHINE, "goose", native, agent, uid=os.getuid())


def test_goose_start_prompt_name_idle_subagent_clear_new_conversation_and_exit(
    tmp_path: Path,
) -> None:
    home, project, path = _project(tmp_path)
    db = GooseDB(path)
    replay = Replay(home, T0, idle_after=30, readers=(goose.SPEC,))
    proc = [_goose(4242, project)]

    first = db.session(project, T0 + 0.5)  # the CLI creates its session as it starts
    replay.step(proc, T0 + 1)
    db.add(first, "user", T0 + 5)
    replay.step(proc, T0 + 6)
    db.rename(first, "Refactor the parser", T0 + 8)
    replay.step(proc, T0 + 9)
    db.add(first, "assistant", T0 + 10, REQUEST)  # one iteration: the call and its result
    db.add(first, "user", T0 + 10, RESPONSE)
    replay.step(proc, T0 + 11)
    db.add(first, "assistant", T0 + 12)
    replay.step(proc, T0 + 13)
    replay.restart()
    replay.step(proc, T0 + 14)
    replay.step(proc, T0 + 50)  # quiet: idle
    # A delegated task: a sub_agent session with its parent (schema 15).
    db.add(first, "user", T0 + 60)
    child = db.session(
        project, T0 + 61, "Delegated task", kind="sub_agent", parent_session_id=first
    )
    db.add(child, "user", T0 + 61)
    replay.step(proc, T0 + 62)
    replay.restart()
    replay.step(proc, T0 + 63)
    db.add(child, "assistant", T0 + 70)
    replay.step(proc, T0 + 71)
    db.add(first, "assistant", T0 + 72, REQUEST)
    db.add(first, "user", T0 + 72, RESPONSE)
    db.add(first, "assistant", T0 + 73)
    replay.step(proc, T0 + 74)
    db.clear(first, T0 + 80)  # same session id: the same conversation
    replay.step(proc, T0 + 81)
    # A new conversation in the same process (goose acp: session/new).
    second = db.session(project, T0 + 90, "New Chat", kind="acp")
    replay.step(proc, T0 + 91)
    replay.step([], T0 + 95)

    assert story(replay.events) == [
        ("s1", "active", "shop", MODEL, None),  # named at once: the session exists
        ("s1", "active", "Refactor the parser", MODEL, None),
        ("s1", "idle", "Refactor the parser", MODEL, None),
        ("s1", "active", "Refactor the parser", MODEL, None),
        ("s2", "active", "Delegated task", MODEL, "s1"),
        ("s2", "ended", "Delegated task", MODEL, "s1"),  # it answered
        ("s3", "active", "shop", MODEL, None),
        ("s1", "ended", "Refactor the parser", MODEL, None),
        ("s3", "ended", "shop", MODEL, None),
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids == [_id(first), _id(first, child), _id(second)]


def test_goose_busy_and_idle_from_the_last_message(tmp_path: Path) -> None:
    home, project, path = _project(tmp_path)
    db = GooseDB(path)
    replay = Replay(home, T0, readers=(goose.SPEC,))
    sid = db.session(project, T0 + 0.5)
    replay.step([_goose(4242, project)], T0 + 1)

    def status() -> str | None:
        facts, _ = replay.sources.observe(replay.agents)
        found = facts.get(4242)
        assert isinstance(found, ConversationFacts)
        return found.status

    seen = [status()]
    db.add(sid, "user", T0 + 2)
    seen.append(status())  # the model works: nothing written until the iteration ends
    db.add(sid, "assistant", T0 + 3, {"type": "text", "text": "let me look"}, REQUEST)
    seen.append(status())  # a tool request, no result yet
    db.add(sid, "user", T0 + 3, RESPONSE)
    seen.append(status())
    db.add(sid, "assistant", T0 + 4)
    seen.append(status())
    assert seen == ["idle", "busy", "busy", "busy", "idle"]


def test_goose_a_killed_goose_left_a_prompt_a_resume_says_idle(tmp_path: Path) -> None:
    home, project, path = _project(tmp_path)
    db = GooseDB(path)
    old = db.session(project, T0 - 900, "Old work")
    db.add(old, "user", T0 - 890)  # never answered: that goose was killed
    replay = Replay(home, T0, readers=(goose.SPEC,))
    proc = [_goose(4242, project, T0, "--resume", "--session-id", old)]
    db.rename(old, "Old work", T0 + 1)  # resumed: the provider is set again
    replay.step(proc, T0 + 2)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[4242]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.name, found.status) == (old, "Old work", "idle")


def test_goose_sub_agent_without_a_parent_column(tmp_path: Path) -> None:
    """Schema 13 records no parent: a sub_agent session begun in the directory of the one
    goose running there, after its conversation, is that conversation's."""
    home, project, path = _project(tmp_path)
    other = home / "src" / "other"
    other.mkdir()
    db = GooseDB(path, schema_15=False)
    first = db.session(project, T0 + 0.5)
    elsewhere = db.session(other, T0 + 0.5)
    replay = Replay(home, T0, readers=(goose.SPEC,))
    procs = [_goose(4242, project), _goose(4343, other)]
    replay.step(procs, T0 + 1)
    db.add(first, "user", T0 + 5)
    child = db.session(project, T0 + 6, "Delegated task", kind="sub_agent")
    db.add(child, "user", T0 + 6)
    replay.step(procs, T0 + 7)
    db.add(child, "assistant", T0 + 8)
    replay.step(procs, T0 + 9)
    assert story(replay.events) == [
        ("s1", "active", "shop", MODEL, None),
        ("s2", "active", "other", MODEL, None),
        ("s3", "active", "Delegated task", MODEL, "s1"),
        ("s3", "ended", "Delegated task", MODEL, "s1"),
    ]
    assert [e.session_id for e in replay.events[:2]] == [_id(first), _id(elsewhere)]


def test_goose_path_root_override(tmp_path: Path) -> None:
    home, project, _ = _project(tmp_path)
    root = tmp_path / "goose-root"
    db = GooseDB(root / "data" / "sessions" / "sessions.db")
    db.session(project, T0 + 0.5, "Rooted")
    replay = Replay(home, T0, readers=(goose.SPEC,))
    replay.step([_goose(4242, project, T0, GOOSE_PATH_ROOT=str(root))], T0 + 1)
    assert story(replay.events) == [("s1", "active", "Rooted", MODEL, None)]


@pytest.mark.parametrize(
    "ddl",
    [
        # working_dir renamed: nothing can be matched
        "CREATE TABLE sessions (id TEXT, cwd TEXT, updated_at TEXT);"
        "CREATE TABLE messages (session_id TEXT, role TEXT);",
        # no time column at all
        "CREATE TABLE sessions (id TEXT, working_dir TEXT);"
        "CREATE TABLE messages (session_id TEXT, role TEXT);",
        # no messages table
        "CREATE TABLE sessions (id TEXT, working_dir TEXT, updated_at TEXT);",
    ],
)
def test_goose_missing_columns_fall_back_to_the_process(tmp_path: Path, ddl: str) -> None:
    home, project, path = _project(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(ddl)
    conn.close()
    replay = Replay(home, T0, readers=(goose.SPEC,))
    replay.step([_goose(4242, project)], T0 + 4)  # older than the 3 s wait for its state
    assert story(replay.events) == [("s1", "active", "shop", None, None)]
    assert replay.sources.errors == 0
    state = next(iter(replay.sources._states.values()))
    assert state.stats.garbage == 1


def test_goose_garbage_rows_are_skipped(tmp_path: Path) -> None:
    home, project, path = _project(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE sessions (id TEXT, name TEXT, working_dir TEXT, created_at TEXT,"
        " updated_at TEXT, model_config_json TEXT);"
        "CREATE TABLE messages (session_id TEXT, role TEXT, content_json BLOB);"
    )
    rows = [
        ("bad id!", "x", str(project), _sql_time(T0 + 1), _sql_time(T0 + 1), "{}"),
        ("a_1", "Kept", str(project), "yesterday-ish", _sql_time(T0 + 1), "[[[[not json"),
        ("a_2", "No time", str(project), None, "not a time", None),
    ]
    conn.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO messages VALUES ('a_1', 'assistant', x'ff00ff')")
    conn.commit()
    conn.close()
    replay = Replay(home, T0, readers=(goose.SPEC,))
    replay.step([_goose(4242, project)], T0 + 2)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[4242]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.name, found.model, found.status) == ("a_1", "Kept", None, None)
    assert replay.sources.errors == 0


def test_goose_times_in_every_form() -> None:
    assert parse_time("2026-09-22 10:00:00") == datetime(2026, 9, 22, 10, tzinfo=UTC).timestamp()
    assert parse_time("2026-09-22T10:00:00.123456789Z") == pytest.approx(
        datetime(2026, 9, 22, 10, tzinfo=UTC).timestamp() + 0.123456, abs=1e-3
    )
    assert parse_time(1_790_000_000_000) == 1_790_000_000.0
    assert parse_time(None) is None
    assert parse_time("x" * 100) is None


def test_goose_no_query_while_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project, path = _project(tmp_path)
    db = GooseDB(path)
    sid = db.session(project, T0 + 0.5)
    replay = Replay(home, T0, readers=(goose.SPEC,))
    replay.step([_goose(4242, project)], T0 + 1)
    reads = []
    real = sqlite_sessions.read_database
    monkeypatch.setattr(sqlite_sessions, "read_database", lambda *a: reads.append(1) or real(*a))
    for _ in range(3):
        replay.advance(5)
    assert reads == []  # an lstat of the database and its -wal per pass, no query
    db.add(sid, "user", T0 + 20)
    replay.advance(1)
    assert reads == [1]


def test_goose_a_message_the_reader_cannot_judge_still_counts_as_work(tmp_path: Path) -> None:
    """An answer whose content cannot be read says no status: that it was written (a new
    row, or one replaced with the same count and second) is the work seen."""
    home, project, path = _project(tmp_path)
    db = GooseDB(path)
    sid = db.session(project, T0 + 0.5)
    db.add(sid, "user", T0 + 1)
    replay = Replay(home, T0, readers=(goose.SPEC,))
    replay.step([_goose(4242, project)], T0 + 2)

    def last_write() -> float | None:
        facts, _ = replay.sources.observe(replay.agents)
        found = facts[4242]
        assert isinstance(found, ConversationFacts)
        assert found.status in (None, "busy")
        return found.last_write

    first = last_write()
    db.conn.execute(
        "INSERT INTO messages (session_id, role, content_json, created_timestamp) "
        "VALUES (?, 'assistant', '[[[not json', ?)",
        (sid, int(T0 + 3)),
    )
    replay.advance(1)
    second = last_write()
    assert second is not None and second != first
    # The newest row replaced (same count, same second): a new rowid is new work.
    db.conn.execute("DELETE FROM messages WHERE rowid = (SELECT max(rowid) FROM messages)")
    db.conn.execute(
        "INSERT INTO messages (session_id, role, content_json, created_timestamp) "
        "VALUES (?, 'assistant', '[[[still not json', ?)",
        (sid, int(T0 + 3)),
    )
    replay.advance(1)
    third = last_write()
    assert third is not None and third != second


def test_goose_the_edges_of_the_horizon_the_columns_and_the_model_cap(tmp_path: Path) -> None:
    """A session touched exactly at the horizon (the start less CLOCK_SLACK_S) is read; a
    messages table with only the two columns needed is enough; a model_config_json past
    64 KiB is not parsed."""
    home, project, path = _project(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE sessions (id TEXT, name TEXT, working_dir TEXT, created_at TEXT,"
        " updated_at TEXT, model_config_json TEXT);"
        "CREATE TABLE messages (session_id TEXT, role TEXT);"
    )
    big = json.dumps({"model_name": MODEL, "pad": "x" * (64 * 1024 - 40)})
    assert 64 * 1024 - 20 < len(big) <= 64 * 1024
    conn.execute(
        "INSERT INTO sessions VALUES ('a_1', 'At the edge', ?, ?, ?, ?)",
        (str(project), _sql_time(T0 - CLOCK_SLACK_S), _sql_time(T0 - CLOCK_SLACK_S), big),
    )
    conn.execute("INSERT INTO messages VALUES ('a_1', 'user')")
    replay = Replay(home, T0, readers=(goose.SPEC,))
    replay.step([_goose(4242, project, T0, "--session-id", "a_1")], T0 + 1)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[4242]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.name, found.model) == ("a_1", "At the edge", MODEL)
    assert found.status == "busy"  # no created_timestamp: assumed this process's

    too_big = json.dumps({"model_name": MODEL, "pad": "x" * (64 * 1024 - 20)})
    assert 64 * 1024 < len(too_big) < 64 * 1024 + 20
    conn.execute("UPDATE sessions SET model_config_json = ?", (too_big,))
    replay.advance(1)
    facts, _ = replay.sources.observe(replay.agents)
    assert facts[4242].model is None  # type: ignore[union-attr]
    conn.close()


def test_goose_a_prompt_just_before_the_start_is_the_process_own(tmp_path: Path) -> None:
    """Written START_SLACK_S before the process started: its own (busy); earlier: left by
    a killed goose (idle)."""
    home, project, path = _project(tmp_path)
    db = GooseDB(path)
    start = T0 + 10
    sid = db.session(project, start - 5)
    db.add(sid, "user", start - START_SLACK_S)  # written as the process started
    other = home / "src" / "other"
    other.mkdir()
    later = db.session(other, start - 5)
    db.add(later, "user", start - START_SLACK_S - 1)  # before it: a killed goose's
    for pid, which, cwd in ((4242, sid, project), (4343, later, other)):
        replay = Replay(home, T0, readers=(goose.SPEC,))
        proc = _goose(pid, cwd, start, "--session-id", which)
        replay.step([proc], start + 1)
        facts, _ = replay.sources.observe(replay.agents)
        found = facts[pid]
        assert isinstance(found, ConversationFacts)
        assert (found.native_id, found.status) == (which, "busy" if which == sid else "idle")


def test_goose_xdg_data_home_and_the_overrides_it_refuses(tmp_path: Path) -> None:
    """``XDG_DATA_HOME`` (absolute) moves the database; a relative one, or a
    ``GOOSE_PATH_ROOT`` that is relative, is ignored; a linked directory is not the user's
    own and is not read."""
    home, project, default = _project(tmp_path)
    xdg = tmp_path / "xdg"
    moved = GooseDB(xdg / "goose" / "sessions" / "sessions.db")
    moved.session(project, T0 + 0.5, "Moved")
    GooseDB(default).session(project, T0 + 0.5, "Default")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "goose").symlink_to(xdg / "goose")

    def named(**env: str) -> str | None:
        replay = Replay(home, T0, readers=(goose.SPEC,))
        replay.step([_goose(4242, project, T0, **env)], T0 + 1)
        facts, _ = replay.sources.observe(replay.agents)
        found = facts.get(4242)
        return found.name if isinstance(found, ConversationFacts) else None

    assert named(XDG_DATA_HOME=str(xdg)) == "Moved"
    assert named(XDG_DATA_HOME="relative/xdg") == "Default"
    assert named(GOOSE_PATH_ROOT="relative/root", XDG_DATA_HOME=str(xdg)) == "Moved"
    assert named(XDG_DATA_HOME=str(linked)) is None
    others = tmp_path / "others"
    GooseDB(others / "goose" / "sessions" / "sessions.db").session(project, T0 + 0.5, "Theirs")
    os.chown(others / "goose", 65534, 65534)  # another user's directory
    assert named(XDG_DATA_HOME=str(others)) is None
    assert named(XDG_DATA_HOME=str(home / ".local" / "share")) == "Default"


def test_goose_an_orphan_sub_agent_begun_just_before_its_conversation(tmp_path: Path) -> None:
    """Schema 13: a sub_agent session begun up to START_SLACK_S before the conversation
    is its own; one begun earlier, or in a directory two gooses run in, is nobody's. A
    goose there reading another database does not count."""
    home, project, path = _project(tmp_path)
    db = GooseDB(path, schema_15=False)
    first = db.session(project, T0 + 10)
    edge = db.session(project, T0 + 10 - START_SLACK_S, "Delegated task", kind="sub_agent")
    early = db.session(project, T0 + 10 - START_SLACK_S - 1, "Too early", kind="sub_agent")
    for sid in (first, edge, early):
        db.add(sid, "user", T0 + 11)
    replay = Replay(home, T0, readers=(goose.SPEC,))
    one = _goose(4242, project, T0, "--session-id", first)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "goose").symlink_to(path.parent.parent)
    elsewhere = _goose(4444, project, T0, XDG_DATA_HOME=str(linked))  # refused: a link
    replay.step([one, elsewhere], T0 + 12)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[4242]
    assert isinstance(found, ConversationFacts) and found.native_id == first
    assert [s.agent_id for s in found.subagents] == [edge]
    assert replay.sources.errors == 0
    replay.step([one, _goose(4343, project, T0 + 1)], T0 + 13)
    facts, _ = replay.sources.observe(replay.agents)
    assert all(not getattr(f, "subagents", ()) for f in facts.values())
