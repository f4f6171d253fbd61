"""OpenCode, as the real CLI behaved (``../shared/fixtures/opencode``): every recorded step
replayed in order with its process tree (tests/replay.py), the exact events asserted; the
real WAL files read as they were left; then what the run did not show (two processes in one
directory, ``opencode -s``, a conversation busy in the background, ``XDG_DATA_HOME`` and
``OPENCODE_DB``, garbage), built on copies of the real database.

The story: start (no conversation until the first prompt), a prompt, a tool, a sub-agent (a
child session), a rename, ``/new`` (nothing written), a prompt (a new session row),
``/exit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from conftest import Agents, fake_agent, needs_fixtures, wait_until
from replay import MACHINE, Rec, Replay, load_processes, parse_started, story

from quintd.identity import native_session_id, process_session_id
from quintd.model import ConversationFacts
from quintd.scanner import Scanner
from quintd.sources import opencode, opencode_db, opencode_queries
from quintd.sources.files import ReadStats
from quintd.sources.manager import SourceManager
from quintd.sources.opencode import SPEC, OpenCodeState
from quintd.sources.sqlite_sessions import MissingColumns

FIXTURES = needs_fixtures("opencode")
DATA = ".local/share/opencode"
DB = f"{DATA}/opencode.db"
PROJECT = "/home/dev2/src/shop-api"
START = parse_started("2026-11-29T03:25:32.000Z")  # the TUI (README; log: 03:25:32.149)
TUI = 11826
FIRST, CHILD, SECOND = (
    "ses_ddaa9b9f2ffec1Jfw8ORfIWUMF",
    "ses_ddaa980f8ffe4AYGyekVMe3SPh",
    "ses_ddaa95cebffeXz6sVpSsBbbzvg",
)
PLAN = [  # step (a snapshot of the database, if it has one), the process tree recorded then
    ("00-started", "00-started-idle"),
    ("01-first-prompt-busy", "01-first-prompt-busy"),
    ("02-first-prompt-idle", "01-first-prompt-busy"),
    ("03-tool-running", "03-tool-running"),
    ("04-subagent-running", "04-subagent-running"),
    ("05-subagent-done", "04-subagent-running"),
    ("06-renamed", "04-subagent-running"),
    ("07-after-new", "04-subagent-running"),
    ("08-second-conversation-busy", "09-second-conversation-idle"),
    ("09-second-conversation-idle", "09-second-conversation-idle"),
    ("10-after-exit", "10-after-exit"),
]


def _latest(db: Path) -> float:
    """The newest time the database records: when that step was taken."""
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        latest = max(
            conn.execute(f"SELECT max(time_updated) FROM {table}").fetchone()[0] or 0
            for table in ("session", "message", "part")
        )
    finally:
        conn.close()
    return float(latest) / 1000


def _tree(name: str) -> list[Rec]:
    return load_processes(FIXTURES / "processes" / f"{name}.json", {TUI: START})


def _replay(
    home: Path, restart_after: str | None = None, idle_after: float = 3600.0
) -> Iterator[tuple[str, Replay, list[object]]]:
    """Each step's database copied over the home (a consistent single-file copy, as the
    snapshots hold them), then one pass with that step's process tree."""
    replay = Replay(home, START, idle_after=idle_after, readers=(SPEC,))
    at = START + 5.0
    for step, tree in PLAN:
        snapshot = FIXTURES / "snapshots" / step / "home" / DB
        if snapshot.exists():
            (home / DB).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(snapshot, home / DB)
            at = max(at + 1.0, _latest(home / DB) + 0.5)
        else:
            at += 2.0  # after /exit: nothing changed on disk
        events = replay.step(_tree(tree), at)
        yield step, replay, list(events)
        if step == restart_after:
            replay.restart()


def _state(replay: Replay) -> OpenCodeState:
    [state] = replay.sources._states.values()
    assert isinstance(state, OpenCodeState)
    return state


def _facts(replay: Replay, pid: int = TUI) -> object:
    facts, _pending = replay.sources.observe(replay.agents)
    return facts.get(pid)


@pytest.mark.parametrize(
    "restart_after",
    [None, "01-first-prompt-busy", "04-subagent-running", "07-after-new"],
)
def test_opencode_story_replayed_step_by_step(tmp_path: Path, restart_after: str | None) -> None:
    """With a restart of quintd in the middle, nothing changes: same ids, same events."""
    home = tmp_path / "home"
    per_step = {}
    for step, replay, events in _replay(home, restart_after):
        per_step[step] = events
        # The TUI is the agent; its shell and the bash tool's `sleep` are not.
        assert [(a.pid, a.platform) for a in replay.agents] == (
            [] if step == "10-after-exit" else [(TUI, "opencode")]
        )
    uid = os.getuid()
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # no conversation before the first prompt
        ("s1", "active", "Fix auth middleware token expiry", "stand-in-coder", None),
        ("s2", "active", "Survey the project (@general subagent)", "stand-in-coder", "s1"),
        ("s2", "ended", "Survey the project (@general subagent)", "stand-in-coder", "s1"),
        ("s1", "active", "Token expiry fix", "stand-in-coder", None),  # renamed
        ("s3", "active", "Add rate limiting to the API", "stand-in-coder", None),
        ("s1", "ended", "Token expiry fix", "stand-in-coder", None),  # /new, at its prompt
        ("s3", "ended", "Add rate limiting to the API", "stand-in-coder", None),  # /exit
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids == [
        # The first conversation took over the session its process was announced under.
        process_session_id(MACHINE, "opencode", TUI, round(START * 1000)),
        native_session_id(MACHINE, "opencode", FIRST, CHILD, uid=uid),
        native_session_id(MACHINE, "opencode", SECOND, uid=uid),
    ]
    assert [e.state for e in per_step["07-after-new"]] == []  # /new writes nothing
    assert [e.state for e in per_step["08-second-conversation-busy"]] == ["active", "ended"]
    assert [e.state for e in per_step["10-after-exit"]] == ["ended"]
    assert all(e.signing_id for e in replay.events)


def test_busy_and_idle_follow_the_messages_and_tools(tmp_path: Path) -> None:
    seen = {}
    for step, replay, _events in _replay(tmp_path / "home"):
        found = _facts(replay)
        if isinstance(found, ConversationFacts):
            subs = [(s.agent_id, s.status, s.done) for s in found.subagents]
            seen[step] = (found.native_id, found.status, subs)
        else:
            seen[step] = found
    child_done = [(CHILD, "idle", True)]
    assert seen == {
        "00-started": None,  # no conversation yet: it waits for its first prompt
        "01-first-prompt-busy": (FIRST, "busy", []),  # an answer not finished
        "02-first-prompt-idle": (FIRST, "idle", []),
        "03-tool-running": (FIRST, "busy", []),  # the bash tool running
        "04-subagent-running": (FIRST, "busy", [(CHILD, "busy", False)]),
        "05-subagent-done": (FIRST, "idle", child_done),
        "06-renamed": (FIRST, "idle", child_done),
        "07-after-new": (FIRST, "idle", child_done),
        "08-second-conversation-busy": (SECOND, "busy", []),
        "09-second-conversation-idle": (SECOND, "idle", []),
        "10-after-exit": None,
    }


def test_short_idle_after_goes_idle_and_back(tmp_path: Path) -> None:
    """With idle_after shorter than the gaps between steps: idle after the first answer,
    active again at the next prompt (its own status, not the CPU)."""
    states = []
    for step, replay, events in _replay(tmp_path / "home", idle_after=1.0):
        if step == "02-first-prompt-idle":
            events += replay.advance(2.0)
        states += [(step, e.state) for e in events if e.kind == "transition"]
    assert ("02-first-prompt-idle", "idle") in states
    assert ("03-tool-running", "active") in states


# -- the real WAL files, as the CLI left them ---------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("with_shm", [True, False])
def test_the_real_wal_is_read_without_a_side_file(tmp_path: Path, with_shm: bool) -> None:
    """Everything is in the 3.7 MB ``-wal`` (never checkpointed). With its ``-shm`` the
    database is read in place, read-only; without it a private copy is read. Either way
    nothing is added, removed or written in the agent's directory but the -shm index."""
    home = tmp_path / "home"
    (home / DATA).mkdir(parents=True)
    names = ["opencode.db", "opencode.db-wal"] + (["opencode.db-shm"] if with_shm else [])
    for name in names:
        shutil.copyfile(FIXTURES / "home" / DATA / name, home / DATA / name)
    digests = {n: _digest(home / DATA / n) for n in names[:2]}
    replay = Replay(home, START, readers=(SPEC,))
    events = replay.step(_tree("09-second-conversation-idle"), START + 40)
    assert story(events) == [
        ("s1", "active", "Add rate limiting to the API", "stand-in-coder", None)
    ]
    found = _facts(replay)
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.status, found.owner_uid) == (SECOND, "idle", os.getuid())
    assert sorted(os.listdir(home / DATA)) == sorted(names)
    assert {n: _digest(home / DATA / n) for n in names[:2]} == digests


# -- cost: read only what changed ---------------------------------------------------------


class _Rows:
    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    def fetchone(self) -> tuple[object, ...] | None:
        return self.rows[0] if self.rows else None


def _serve(path: str, pipe: Connection) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    while (ask := pipe.recv()) is not None:
        sql, args = ask
        try:
            pipe.send(conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            pipe.send(exc)
    conn.close()


class _WriterProcess:
    """A connection held by another process, as OpenCode holds its database. In the test's
    own process, quintd's reads (which open and close the -shm) would release the writer's
    POSIX locks on it (they are per process), and a later checkpoint could truncate the
    -shm under the writer's mapping: SIGBUS, in about one run in five."""

    def __init__(self, path: Path) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._proc = context.Process(target=_serve, args=(str(path), theirs), daemon=True)
        self._proc.start()

    def execute(self, sql: str, args: tuple[object, ...] = ()) -> _Rows:
        self._pipe.send((sql, args))
        answer = self._pipe.recv()
        if isinstance(answer, Exception):
            raise answer
        return _Rows(answer)

    def close(self) -> None:
        self._pipe.send(None)
        self._proc.join(10)


class LiveDatabase:
    """The real database, open for writing in WAL mode as OpenCode holds it (by another
    process), changed the way OpenCode changes it: a row, and an event naming its
    session, in one transaction."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("opencode.db", "opencode.db-wal", "opencode.db-shm"):
            shutil.copyfile(FIXTURES / "home" / DATA / name, directory / name)
        self.path = directory / "opencode.db"
        self.conn = _WriterProcess(self.path)
        row = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()
        assert row is not None and row[0] == "wal"
        self.n = 0

    def close(self) -> None:
        self.conn.close()

    def _event(self, session: str) -> None:
        self.n += 1
        row = self.conn.execute(
            "SELECT coalesce(max(seq), -1) + 1 FROM event WHERE aggregate_id = ?", (session,)
        ).fetchone()
        assert row is not None
        seq = row[0]
        self.conn.execute(
            "INSERT INTO event (id, aggregate_id, seq, type, data) VALUES (?, ?, ?, ?, '{}')",
            (f"evt_test{self.n:06d}", session, seq, "session.updated.1"),
        )

    def change(self, session: str, sql: str, *args: object) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(sql, args)
        self._event(session)
        self.conn.execute("COMMIT")

    def rename(self, session: str, title: str, at: float) -> None:
        self.change(
            session,
            "UPDATE session SET title = ?, time_updated = ? WHERE id = ?",
            title,
            int(at * 1000),
            session,
        )

    def new_session(
        self, session: str, directory: str, at: float, title: str, parent: str | None = None
    ) -> None:
        self.change(
            session,
            "INSERT INTO session (id, project_id, parent_id, slug, directory, title, version,"
            " model, time_created, time_updated) VALUES (?, 'p', ?, 'slug', ?, ?, '1.18.33',"
            ' \'{"id":"stand-in-coder","providerID":"loopback"}\', ?, ?)',
            session,
            parent,
            directory,
            title,
            int(at * 1000),
            int(at * 1000),
        )

    def message(
        self,
        session: str,
        message: str,
        role: str,
        at: float,
        completed: float | None = None,
        finish: str | None = None,
        error: dict[str, object] | None = None,
    ) -> None:
        data: dict[str, object] = {"role": role, "time": {"created": int(at * 1000)}}
        if role == "assistant":
            data.update(modelID="stand-in-coder", providerID="loopback")
            if completed is not None:
                data["time"] = {"created": int(at * 1000), "completed": int(completed * 1000)}
            if finish:
                data["finish"] = finish
            if error is not None:
                data["error"] = error
        self.change(
            session,
            "INSERT OR REPLACE INTO message (id, session_id, time_created, time_updated, data)"
            " VALUES (?, ?, ?, ?, ?)",
            message,
            session,
            int(at * 1000),
            int(at * 1000),
            json.dumps(data),
        )

    def tool(
        self,
        session: str,
        message: str,
        part: str,
        tool: str,
        status: str,
        at: float,
        child: str | None = None,
    ) -> None:
        state: dict[str, object] = {"status": status, "input": {}, "time": {"start": 1}}
        if child:
            state["metadata"] = {"sessionId": child}
        data = {"type": "tool", "tool": tool, "callID": part, "state": state}
        self.change(
            session,
            "INSERT OR REPLACE INTO part (id, message_id, session_id, time_created,"
            " time_updated, data) VALUES (?, ?, ?, ?, ?, ?)",
            part,
            message,
            session,
            int(at * 1000),
            int(at * 1000),
            json.dumps(data),
        )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveDatabase]:
    db = LiveDatabase(tmp_path / "home" / DATA)
    yield db
    db.close()


def _database(replay: Replay) -> opencode_db.Database:
    [db] = _state(replay)._dbs.values()
    return db


def test_idle_passes_read_nothing_and_a_change_reads_only_its_session(
    tmp_path: Path, live: LiveDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    activity = opencode_queries.read_activity

    def counted(conn: sqlite3.Connection, sid: str) -> opencode_queries.Activity:
        asked.append(sid)
        return activity(conn, sid)

    monkeypatch.setattr(opencode_queries, "read_activity", counted)
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    at = START + 40
    replay.step(_tree("09-second-conversation-idle"), at)
    db = _database(replay)
    assert db.reads == 1 and sorted(asked) == sorted([FIRST, CHILD, SECOND])
    for _ in range(5):  # no file events here (watch off): a stat-like look per pass
        assert replay.advance(1.0) == []
    _state(replay).changed(live.path.with_name("opencode.db-wal"))  # quintd's own open
    replay.advance(1.0)
    assert db.reads == 1
    asked.clear()
    live.rename(SECOND, "Rate limits", at + 8)
    events = replay.advance(1.0)
    assert story(events) == [("s1", "active", "Rate limits", "stand-in-coder", None)]
    assert db.reads == 2 and asked == [SECOND]  # the one session the new event names
    replay.advance(1.0)
    assert db.reads == 2


def test_manager_watches_the_wal_of_a_real_process(
    tmp_path: Path, agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real path: the database from the process's own environment, its changes seen
    by watchdog, and quintd's own reads (which open the files: file events) read nothing
    more."""
    home = tmp_path / "home"
    project = tmp_path / "project"
    project.mkdir()
    live = LiveDatabase(home / DATA)
    fake_agent(tmp_path / "opencode")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_DATA_HOME", "OPENCODE_DB")}
    proc = agents.spawn(
        [str(tmp_path / "opencode"), "600"], cwd=project, env=env | {"HOME": str(home)}
    )
    scanner = Scanner()
    agent = wait_until(
        lambda: next((a for a in scanner.scan() if a.pid == proc.pid), None), what="opencode"
    )
    assert agent.platform == "opencode"
    manager = SourceManager(readers=(SPEC,))  # not in the registry yet
    try:
        facts, pending = manager.observe([agent])
        assert facts == {} and pending == set()  # nothing in its directory yet
        [state] = manager._states.values()
        assert isinstance(state, OpenCodeState)
        [db] = state._dbs.values()
        now = agent.start_time + 1.0
        live.new_session("ses_live1", os.path.realpath(project), now, "Live one")
        live.message("ses_live1", "msg_live1", "user", now)
        found = wait_until(lambda: manager.observe([agent])[0].get(agent.pid), what="the WAL")
        assert isinstance(found, ConversationFacts)
        assert (found.native_id, found.name, found.status) == ("ses_live1", "Live one", "busy")
        live.message("ses_live1", "msg_live2", "assistant", now + 0.1, completed=now + 0.2)
        wait_until(
            lambda: getattr(manager.observe([agent])[0].get(agent.pid), "status", None) == "idle",
            what="the answer via watchdog",
        )
        # quintd's own read opens the database and its WAL: that must not lead to another
        # read (else an idle agent would be read every pass). The manager drops the
        # open/close-without-write events; the reader would not re-read on them either.
        db.dirty, db._read_as = True, None
        reads = db.reads
        manager.observe([agent])
        assert db.reads == reads + 1
        for _ in range(5):
            manager.observe([agent])
            db.dirty = True  # as if an event of no consequence had come
        manager.observe([agent])
        assert db.reads == reads + 1
        assert manager.stats()["watched_dirs"] >= 1
    finally:
        manager.close()
        live.close()


# -- what the run did not show --------------------------------------------------------------


def _rec(pid: int, start: float, cwd: str = PROJECT, argv: list[str] | None = None) -> Rec:
    return Rec(
        pid=pid,
        ppid=1,
        comm="opencode",
        exe="/home/dev2/.npm-global/lib/node_modules/opencode-ai/bin/opencode.exe",
        argv=argv or ["/home/dev2/.npm-global/bin/opencode"],
        cwd=cwd,
        start_time=start,
    )


def _native(found: object) -> list[tuple[str, str | None]]:
    convs = found if isinstance(found, tuple) else (found,) if found is not None else ()
    return [(c.native_id, c.status) for c in convs]


def test_two_processes_in_one_directory_and_one_elsewhere(
    tmp_path: Path, live: LiveDatabase
) -> None:
    """A conversation belongs to the process in its directory that started last before
    it was created."""
    second_start = START + 20  # after FIRST was created (03:25:40), before SECOND (03:26:04)
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    recs = [_rec(TUI, START), _rec(20001, second_start), _rec(20002, START + 1, "/elsewhere")]
    replay.step(recs, START + 40)
    facts, _ = replay.sources.observe(replay.agents)
    assert {pid: _native(f) for pid, f in facts.items()} == {
        TUI: [(FIRST, "idle")],
        20001: [(SECOND, "idle")],
    }
    # A new conversation in the first process, created after both started: the later one.
    live.new_session("ses_third", PROJECT, START + 45, "Third")
    replay.step(recs, START + 46)
    facts, _ = replay.sources.observe(replay.agents)
    assert _native(facts[20001]) == [("ses_third", "idle")]
    assert _native(facts[TUI]) == [(FIRST, "idle")]


def test_a_conversation_continued_with_its_id_on_the_command_line(
    tmp_path: Path, live: LiveDatabase
) -> None:
    """``opencode -s <id>`` the next day: that conversation from the start (an old one,
    never read before), then the conversation prompted last."""
    later = START + 86400
    replay = Replay(tmp_path / "home", later, readers=(SPEC,))
    recs = [_rec(30001, later, argv=["/home/dev2/.npm-global/bin/opencode", "-s", FIRST])]
    events = replay.step(recs, later + 1)
    assert story(events) == [("s1", "active", "Token expiry fix", "stand-in-coder", None)]
    assert events[0].session_id == native_session_id(MACHINE, "opencode", FIRST, uid=os.getuid())
    assert set(_database(replay).sessions) == {FIRST}  # history is not read
    live.new_session("ses_next", PROJECT, later + 5, "Next")
    live.message("ses_next", "msg_next", "user", later + 5)
    replay.step(recs, later + 6)
    assert story(replay.events)[1:] == [
        ("s2", "active", "Next", "stand-in-coder", None),  # busy: prompted, not answered
        ("s1", "ended", "Token expiry fix", "stand-in-coder", None),
    ]


def test_a_conversation_still_busy_after_new_stays_open(tmp_path: Path, live: LiveDatabase) -> None:
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    at = START + 40
    # FIRST prompted again (03:26:00), still working at /new and SECOND's prompt (03:26:04).
    live.message(FIRST, "msg_bg1", "user", START + 28)
    live.message(FIRST, "msg_bg2", "assistant", START + 28.1)
    live.tool(FIRST, "msg_bg2", "prt_bg1", "bash", "running", START + 28.2)
    replay.step(_tree("09-second-conversation-idle"), at)
    assert _native(_facts(replay)) == [(FIRST, "busy"), (SECOND, "idle")]
    live.tool(FIRST, "msg_bg2", "prt_bg1", "bash", "completed", at + 1)
    live.message(FIRST, "msg_bg2", "assistant", START + 28.1, completed=at + 1.1, finish="stop")
    events = replay.step(_tree("09-second-conversation-idle"), at + 2)
    # Stopped a moment ago (an answer's steps leave such gaps): still open, idle.
    assert _native(_facts(replay)) == [(FIRST, "idle"), (SECOND, "idle")]
    assert events == []
    events = replay.advance(opencode.BACKGROUND_GRACE_S)
    assert _native(_facts(replay)) == [(SECOND, "idle")]
    assert [(e.session_name, e.state) for e in events] == [("Token expiry fix", "ended")]


# What OpenCode writes on the assistant message when an answer stops short: Esc in the TUI
# (MessageAbortedError), or the provider's refusal (APIError). No `time.completed`.
ABORTED = {"name": "MessageAbortedError", "data": {"message": "The operation was aborted."}}
API_ERROR = {
    "name": "APIError",
    "data": {"message": "Overloaded", "statusCode": 529, "isRetryable": False},
}


@pytest.mark.parametrize("error", [ABORTED, API_ERROR], ids=["aborted", "api-error"])
def test_an_aborted_or_failed_answer_is_over(
    tmp_path: Path, live: LiveDatabase, error: dict[str, object]
) -> None:
    """An answer that stopped with an ``error`` and no ``time.completed`` (Esc, an API
    error) is over: the conversation is idle at once, and goes idle after idle_after, not
    busy until the next prompt."""
    replay = Replay(tmp_path / "home", START, idle_after=1.0, readers=(SPEC,))
    at = START + 40
    replay.step(_tree("09-second-conversation-idle"), at)
    live.message(SECOND, "msg_e1", "user", at + 1)
    live.message(SECOND, "msg_e2", "assistant", at + 1.1)  # the answer begun
    replay.step(_tree("09-second-conversation-idle"), at + 2)
    assert _native(_facts(replay)) == [(SECOND, "busy")]
    live.message(SECOND, "msg_e2", "assistant", at + 1.1, error=error)  # and stopped
    replay.step(_tree("09-second-conversation-idle"), at + 3)
    assert _native(_facts(replay)) == [(SECOND, "idle")]
    events = replay.advance(2.0)
    assert [(e.session_name, e.state) for e in events] == [("Add rate limiting to the API", "idle")]


def test_sub_agent_runs_while_its_task_runs(tmp_path: Path, live: LiveDatabase) -> None:
    """Between two steps of the sub-agent (its own answer finished) it is not done while
    the parent's task call for it still runs; it is when that call completed."""
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    at = START + 40
    replay.step(_tree("09-second-conversation-idle"), at)
    live.message(SECOND, "msg_p1", "user", at + 1)
    live.message(SECOND, "msg_p2", "assistant", at + 1.1)
    live.tool(SECOND, "msg_p2", "prt_t1", "task", "running", at + 1.2, child="ses_kid")
    live.new_session("ses_kid", PROJECT, at + 1.3, "Look around (@explore subagent)", SECOND)
    live.message("ses_kid", "msg_k1", "user", at + 1.3)
    live.message("ses_kid", "msg_k2", "assistant", at + 1.4, completed=at + 1.5, finish="stop")
    replay.step(_tree("09-second-conversation-idle"), at + 2)
    assert story(replay.events) == [
        ("s1", "active", "Add rate limiting to the API", "stand-in-coder", None),
        ("s2", "active", "Look around (@explore subagent)", "stand-in-coder", "s1"),
    ]
    found = _facts(replay)
    assert isinstance(found, ConversationFacts)
    [sub] = found.subagents
    assert (sub.agent_id, sub.done, sub.status) == ("ses_kid", False, "busy")
    live.tool(SECOND, "msg_p2", "prt_t1", "task", "completed", at + 3, child="ses_kid")
    events = replay.step(_tree("09-second-conversation-idle"), at + 4)
    assert [(e.session_name, e.state) for e in events] == [
        ("Look around (@explore subagent)", "ended")
    ]


def test_placeholder_titles_are_no_names(tmp_path: Path, live: LiveDatabase) -> None:
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    recs = [_rec(TUI, START)]
    replay.step(recs, START + 40)
    live.new_session("ses_fresh", PROJECT, START + 41, "New session - 2026-11-29T03:26:13.000Z")
    live.message("ses_fresh", "msg_f1", "user", START + 41)
    events = replay.step(recs, START + 42)
    assert story(events) == [
        ("s1", "active", "shop-api", "stand-in-coder", None),  # the placeholder: no name
        ("s2", "ended", "Add rate limiting to the API", "stand-in-coder", None),
    ]
    live.rename("ses_fresh", "Generated title", START + 43)
    events = replay.step(recs, START + 44)
    assert story(events) == [("s1", "active", "Generated title", "stand-in-coder", None)]


def test_data_directory_and_database_from_the_process_environment(tmp_path: Path) -> None:
    """``XDG_DATA_HOME`` (a database outside the state directory: read if the directory is
    the user's own, polled by a stat per pass), ``OPENCODE_DB`` (relative: in the data
    directory), ``:memory:`` (nothing on disk: the process session)."""
    home = tmp_path / "home"
    (home / DATA).mkdir(parents=True)
    LiveDatabase(tmp_path / "xdg" / "opencode").close()
    LiveDatabase(tmp_path / "other").close()
    # Closed: checkpointed into single files.
    shutil.copyfile(tmp_path / "other" / "opencode.db", home / DATA / "work.db")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "opencode").symlink_to(tmp_path / "xdg" / "opencode")
    replay = Replay(home, START, readers=(SPEC,))
    recs = [
        _rec(40001, START),
        _rec(40002, START),
        _rec(40003, START),
        _rec(40004, START),
    ]
    recs[0].env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    recs[1].env = {"OPENCODE_DB": "work.db"}
    recs[2].env = {"OPENCODE_DB": ":memory:"}
    recs[3].env = {"XDG_DATA_HOME": str(tmp_path / "linked")}
    replay.step(recs, START + 40)
    facts, _ = replay.sources.observe(replay.agents)
    assert {pid: _native(f) for pid, f in facts.items()} == {
        40001: [(SECOND, "idle")],
        40002: [(SECOND, "idle")],
    }
    state = _state(replay)
    assert sorted(str(p.relative_to(tmp_path)) for p in state._dbs) == [
        "home/.local/share/opencode/work.db",
        "xdg/opencode/opencode.db",
    ]
    assert state.refused == 1  # the linked directory


# -- untrusted input ------------------------------------------------------------------------


def _single_file(tmp_path: Path) -> Path:
    """The last snapshot's database (a single file) in the home, writable for the test."""
    target = tmp_path / "home" / DB
    target.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "snapshots" / "09-second-conversation-idle" / "home" / DB, target)
    return target


def test_garbage_rows_are_counted_and_cleaned(tmp_path: Path) -> None:
    db = _single_file(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE session SET title = ?, model = 'not json' WHERE id = ?",
        ("\x1b[31mRed\u202e alert\n" + "x" * 5000, SECOND),
    )
    conn.execute(
        "INSERT INTO session (id, project_id, slug, directory, title, version, time_created,"
        " time_updated) VALUES ('bad id!', 'p', 's', ?, 't', 'v', 1795922770000, 1795922770000)",
        (PROJECT,),
    )
    conn.execute(
        "INSERT INTO session (id, project_id, slug, directory, title, version, time_created,"
        " time_updated) VALUES ('ses_notime', 'p', 's', ?, 't', 'v', 'soon', 'later')",
        (PROJECT,),
    )
    conn.execute(
        "INSERT INTO message (id, session_id, time_created, time_updated, data)"
        " VALUES ('msg_zzz', ?, 1795922769000, 1795922769000, '{not json')",
        (SECOND,),
    )
    conn.commit()
    conn.close()
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    events = replay.step(_tree("09-second-conversation-idle"), START + 40)
    [(_label, _active, name, model, _parent)] = story(events)
    assert name is not None and name.startswith("[31mRed alert x") and len(name) == 200
    assert model is None  # the latest message is not JSON, the session's model is not JSON
    found = _facts(replay)
    assert isinstance(found, ConversationFacts) and found.native_id == SECOND
    assert _state(replay).stats.garbage == 2  # the two bad rows


def test_missing_tables_and_columns(tmp_path: Path) -> None:
    """Older or newer schemas: without the event table every read is a full one; without
    the columns for names and models there are none; without a session table the process
    is a session of its own, counted once, not re-read each pass."""
    db = _single_file(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE event")
    conn.execute("ALTER TABLE session DROP COLUMN title")
    conn.execute("ALTER TABLE session DROP COLUMN model")
    conn.commit()
    conn.close()
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    events = replay.step(_tree("09-second-conversation-idle"), START + 40)
    assert story(events) == [("s1", "active", "shop-api", "stand-in-coder", None)]
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE session")
    conn.commit()
    conn.close()
    events = replay.step(_tree("09-second-conversation-idle"), START + 41)
    assert story(events) == []  # the conversation's facts are gone: its process session
    assert _facts(replay) is None
    state = _state(replay)
    database = _database(replay)
    assert database.schema_errors == 1 and state.stats.garbage == 1
    for _ in range(3):
        replay.advance(1.0)
    assert database.schema_errors == 1


def test_a_file_that_is_no_database_and_a_link(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / DATA).mkdir(parents=True)
    (home / DB).write_bytes(b"\x00garbage" * 1000)
    replay = Replay(home, START, readers=(SPEC,))
    replay.step(_tree("01-first-prompt-busy"), START + 1)
    for _ in range(4):
        replay.advance(0.1)
    database = _database(replay)
    assert _facts(replay) is None
    assert 1 <= database.reads <= 2  # tried again later, not every pass
    (home / DB).unlink()
    (home / DB).symlink_to(FIXTURES / "snapshots" / "09-second-conversation-idle" / "home" / DB)
    replay.advance(60.0)
    assert _facts(replay) is None
    assert _state(replay).stats.refused >= 1


def test_forgets_conversations_no_running_process_can_have(
    tmp_path: Path, live: LiveDatabase
) -> None:
    replay = Replay(tmp_path / "home", START, readers=(SPEC,))
    replay.step(_tree("09-second-conversation-idle"), START + 40)
    assert set(_database(replay).sessions) == {FIRST, CHILD, SECOND}
    later = START + 3600
    replay.step([_rec(50001, later)], later + 1)
    assert _database(replay).sessions == {}
    assert _facts(replay, 50001) is None


# -- the queries, on a copy of the real database ----------------------------------------------


@pytest.fixture
def writable(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A copy of the last snapshot's database (three sessions, 103 events), open for the
    test to change and for the queries to read."""
    conn = sqlite3.connect(_single_file(tmp_path), isolation_level=None)
    yield conn
    conn.close()


def _changes(
    conn: sqlite3.Connection,
    *,
    full: bool = False,
    horizon_ms: int = 0,
    event_rowid: int | None = 103,
    session_rowid: int = 3,
    wanted: set[str] | None = None,
    known: set[str] | None = None,
) -> opencode_queries.Batch:
    return opencode_queries.read_changes(
        conn,
        full=full,
        horizon_ms=horizon_ms,
        event_rowid=event_rowid,
        session_rowid=session_rowid,
        wanted=wanted or set(),
        known={FIRST, CHILD, SECOND} if known is None else known,
        json_ok=True,
    )


def _ids(batch: opencode_queries.Batch) -> list[str]:
    return sorted(row.id for row in batch.rows)


def test_a_read_after_the_last_one_reads_only_what_the_log_names(
    writable: sqlite3.Connection,
) -> None:
    first = _changes(writable, event_rowid=None, session_rowid=0)
    assert (first.full, first.event_rowid, first.session_rowid) == (True, 103, 3)
    assert _ids(first) == sorted([FIRST, CHILD, SECOND])
    same = _changes(writable)
    assert (same.full, same.rows, same.changed) == (False, [], set())
    writable.execute(
        "INSERT INTO event (id, aggregate_id, seq, type, data)"
        " VALUES ('evt_x', ?, 99, 'session.updated.1', '{}')",
        (CHILD,),
    )
    named = _changes(writable)
    assert (named.full, _ids(named), named.changed, named.event_rowid) == (
        False,
        [CHILD],
        {CHILD},
        104,
    )
    # A session added without an event (its rowid is new): read; one not known is no change.
    writable.execute(
        "INSERT INTO session (id, project_id, slug, directory, title, version, time_created,"
        " time_updated) VALUES ('ses_quiet', 'p', 's', ?, 't', 'v', 1795922770000,"
        " 1795922770000)",
        (PROJECT,),
    )
    added = _changes(writable, event_rowid=104)
    assert (added.full, _ids(added), added.changed, added.session_rowid) == (
        False,
        ["ses_quiet"],
        set(),
        4,
    )


@pytest.mark.parametrize(
    ("table", "left"),
    [("event", [FIRST, CHILD, SECOND]), ("session", [FIRST, CHILD])],
)
def test_rows_deleted_at_the_end_make_the_next_read_a_full_one(
    writable: sqlite3.Connection, table: str, left: list[str]
) -> None:
    """Rowids may then be used again: the marks are no longer to be trusted."""
    writable.execute(f"DELETE FROM {table} WHERE rowid = (SELECT max(rowid) FROM {table})")
    batch = _changes(writable)
    assert batch.full and _ids(batch) == sorted(left)


def _add_session(conn: sqlite3.Connection, sid: str, **columns: object) -> None:
    row: dict[str, object] = {
        "id": sid,
        "project_id": "p",
        "slug": "s",
        "directory": PROJECT,
        "title": "t",
        "version": "v",
        "time_created": 1795922770000,
        "time_updated": 1795922770000,
    }
    row.update(columns)
    names = ", ".join(row)
    marks = ", ".join("?" * len(row))
    conn.execute(f"INSERT INTO session ({names}) VALUES ({marks})", tuple(row.values()))


def test_asked_for_ids_are_read_in_chunks(writable: sqlite3.Connection) -> None:
    """More ids than one query may name: each chunk asked, the first id and the last."""
    _add_session(writable, "ses_zlast")
    unknown = {f"ses_e{i:04d}" for i in range(2 * opencode_queries.MAX_IDS_PER_QUERY)}
    batch = _changes(writable, session_rowid=4, wanted=unknown | {FIRST, "ses_zlast"})
    assert (batch.full, _ids(batch)) == (False, [FIRST, "ses_zlast"])


def test_a_full_read_reads_the_asked_for_ids_older_than_the_horizon(
    writable: sqlite3.Connection,
) -> None:
    future = 1795922770000 + 1
    assert _changes(writable, full=True, horizon_ms=future).rows == []
    batch = _changes(writable, full=True, horizon_ms=future, wanted={SECOND, "ses_gone"})
    assert (batch.full, _ids(batch)) == (True, [SECOND])
    [row] = batch.rows
    # Created, prompted (its first message), last written.
    assert (row.created, row.prompted, row.updated) == (
        1795922764.564,
        1795922764.58,
        1795922766.378,
    )
    # Found since the horizon and asked for: read once.
    batch = _changes(writable, full=True, wanted={SECOND})
    assert [row.id for row in batch.rows] == [FIRST, CHILD, SECOND]


def test_session_columns_are_cleaned(writable: sqlite3.Connection) -> None:
    """A time_updated before its creation counts as the creation; an archived one is
    archived; a sub-agent's placeholder title is no name; the session's own model."""
    _add_session(
        writable,
        "ses_odd",
        parent_id=SECOND,
        title="Child session - 2026-11-29T03:26:13.000Z",
        model='{"id":"own-model"}',
        time_created=1795922770000,
        time_updated=1795922760000,
        time_archived=1795922771000,
    )
    [row] = _changes(writable, session_rowid=3, event_rowid=103).rows
    assert (row.id, row.parent, row.directory, row.title, row.model) == (
        "ses_odd",
        SECOND,
        PROJECT,
        None,
        "own-model",
    )
    assert (row.created, row.updated, row.prompted, row.archived) == (
        1795922770.0,
        1795922770.0,
        1795922770.0,
        True,
    )
    assert not row.running and row.tasks == frozenset()


@pytest.mark.parametrize(("size", "model"), [(64 * 1024, "m"), (64 * 1024 + 1, None)])
def test_a_model_column_is_read_up_to_64_kib(
    writable: sqlite3.Connection, size: int, model: str | None
) -> None:
    value = '{"id":"m","pad":"' + "x" * size
    value = value[: size - 2] + '"}'
    assert len(value) == size and json.loads(value)["id"] == "m"
    _add_session(writable, "ses_big", model=value)
    [row] = _changes(writable).rows
    assert (row.id, row.model) == ("ses_big", model)


@pytest.mark.parametrize("column", ["id", "directory", "time_created"])
def test_a_session_table_without_a_required_column_is_missing_columns(
    writable: sqlite3.Connection, column: str
) -> None:
    writable.execute("DROP TABLE event")  # it names session ids too
    writable.execute(f"ALTER TABLE session RENAME COLUMN {column} TO other")
    with pytest.raises(MissingColumns):
        _changes(writable)


def test_an_event_table_without_session_ids_is_no_change_log(writable: sqlite3.Connection) -> None:
    writable.execute("ALTER TABLE event RENAME COLUMN aggregate_id TO other")
    batch = _changes(writable)
    assert (batch.full, batch.event_rowid, _ids(batch)) == (
        True,
        None,
        sorted([FIRST, CHILD, SECOND]),
    )


def test_an_emptied_event_log_starts_again_from_its_first_rowid(
    writable: sqlite3.Connection,
) -> None:
    writable.execute("DELETE FROM event")
    emptied = _changes(writable)
    assert (emptied.full, emptied.event_rowid, emptied.session_rowid) == (True, 0, 3)
    writable.execute(
        "INSERT INTO event (id, aggregate_id, seq, type, data)"
        " VALUES ('evt_1', ?, 0, 'session.updated.1', '{}')",
        (CHILD,),
    )
    batch = _changes(writable, event_rowid=0)
    assert (batch.full, _ids(batch), batch.event_rowid) == (False, [CHILD], 1)


def test_a_sqlite_without_json_functions_gives_rows_without_status(
    writable: sqlite3.Connection,
) -> None:
    """Stood in for by a ``message`` view whose every read fails in a JSON function."""
    writable.execute("ALTER TABLE message RENAME TO message_rows")
    writable.execute(
        "CREATE VIEW message AS SELECT id, session_id, time_created,"
        " json_extract('{not json', '$') AS data FROM message_rows"
    )
    batch = _changes(writable, full=True)
    assert batch.json_ok is False and _ids(batch) == sorted([FIRST, CHILD, SECOND])
    assert [(r.running, r.model, r.prompted == r.created) for r in batch.rows] == [
        (False, "stand-in-coder", True)
    ] * 3


def _message(conn: sqlite3.Connection, mid: str, data: dict[str, object]) -> None:
    conn.execute(
        "INSERT INTO message (id, session_id, time_created, time_updated, data)"
        " VALUES (?, ?, 1795922770000, 1795922770000, ?)",
        (mid, SECOND, json.dumps(data)),
    )


def _part(conn: sqlite3.Connection, pid: str, mid: str, tool: str, child: str) -> None:
    state = {"status": "running", "metadata": {"sessionId": child}}
    data = {"type": "tool", "tool": tool, "state": state}
    conn.execute(
        "INSERT INTO part (id, message_id, session_id, time_created, time_updated, data)"
        " VALUES (?, ?, ?, 1795922770000, 1795922770000, ?)",
        (pid, mid, SECOND, json.dumps(data)),
    )


def test_a_finished_answer_with_a_tool_still_running_is_busy(
    writable: sqlite3.Connection,
) -> None:
    """Only a running ``task`` call with a valid session id drives a sub-agent."""
    done = {"created": 1795922770000, "completed": 1795922770100}
    _message(writable, "msg_zdone", {"role": "assistant", "modelID": "other", "time": done})
    assert opencode_queries.read_activity(writable, SECOND) == opencode_queries.Activity(
        running=False, model="other", prompted=1795922764.58
    )
    _part(writable, "prt_1", "msg_zdone", "bash", "ses_notask")
    _part(writable, "prt_2", "msg_zdone", "task", "bad id!")
    _part(writable, "prt_3", "msg_zdone", "task", "ses_kid")
    found = opencode_queries.read_activity(writable, SECOND)
    assert (found.running, found.tasks) == (True, frozenset({"ses_kid"}))


# -- the database's sessions, kept and forgotten -------------------------------------------------


def _kept(sid: str, updated: float, parent: str | None = None) -> opencode_queries.Session:
    return opencode_queries.Session(
        id=sid,
        parent=parent,
        directory=PROJECT,
        title=sid,
        model=None,
        created=updated - 1,
        updated=updated,
        archived=False,
        prompted=updated - 1,
    )


def test_forgets_what_no_running_process_can_have_and_the_children_with_it(
    tmp_path: Path,
) -> None:
    db = opencode_db.Database(tmp_path, tmp_path / "opencode.db", True, ReadStats())
    rows = [
        _kept("ses_old", 90),
        _kept("ses_named", 90),  # old, but a command line names it
        _kept("ses_new", 110),
        _kept("ses_kid", 95, "ses_old"),
        _kept("ses_grandkid", 95, "ses_kid"),
        _kept("ses_busykid", 120, "ses_old"),  # written since: kept
        _kept("ses_newkid", 95, "ses_new"),
        _kept("ses_edge", 100),  # written at the horizon: may be a running process's
        _kept("ses_edgekid", 100, "ses_old"),
    ]
    db.sessions = {s.id: s for s in rows}
    db.forget(100.0, {"ses_named"})
    assert sorted(db.sessions) == [
        "ses_busykid",
        "ses_edge",
        "ses_edgekid",
        "ses_named",
        "ses_new",
        "ses_newkid",
    ]
    assert db.version == 1
    db.forget(101.0, {"ses_named"})
    assert "ses_edge" not in db.sessions and "ses_edgekid" not in db.sessions
    assert db.version == 2
    db.forget(101.5, {"ses_named"})
    assert db.version == 2  # nothing more to forget: unchanged


def test_keeps_the_newest_sessions_up_to_the_cap(tmp_path: Path) -> None:
    db = opencode_db.Database(tmp_path, tmp_path / "opencode.db", True, ReadStats())
    count = opencode_db.MAX_SESSIONS + 1
    db.sessions = {f"ses_{i:05d}": _kept(f"ses_{i:05d}", 200.0 + i) for i in range(count)}
    db.forget(100.0, set())
    assert len(db.sessions) == opencode_db.MAX_SESSIONS and "ses_00000" not in db.sessions
    assert db.version == 1


def test_a_rename_is_no_work_and_a_turn_is() -> None:
    old = _kept("ses_a", 100.0)
    renamed = dataclasses.replace(old, title="Renamed", updated=101.0)
    assert not opencode_db.worked(old, renamed)
    assert opencode_db.worked(old, dataclasses.replace(old, updated=101.0))
    assert opencode_db.worked(old, dataclasses.replace(old, running=True))
    assert opencode_db.worked(old, dataclasses.replace(old, model="m"))
    assert not opencode_db.worked(old, dataclasses.replace(old))


# -- Database.refresh on a real file: what is read, when, and what is kept ----------------------

HORIZON = 1795922750.0  # before the fixture's three sessions were last written


def _on_disk(tmp_path: Path) -> tuple[opencode_db.Database, sqlite3.Connection]:
    """The last snapshot's database, a Database reading it, and a connection to change it."""
    path = _single_file(tmp_path)
    db = opencode_db.Database(path.parent, path, True, ReadStats())
    conn = sqlite3.connect(path, isolation_level=None)
    return db, conn


def test_refresh_the_first_read_is_history_and_a_later_one_is_work(tmp_path: Path) -> None:
    db, conn = _on_disk(tmp_path)
    try:
        db.refresh(HORIZON, set(), 10.0)
        assert db.reads == 1 and set(db.sessions) == {FIRST, CHILD, SECOND}
        assert [s.last_write for s in db.sessions.values()] == [None] * 3
        _add_session(conn, "ses_new")
        db.poll()
        db.refresh(HORIZON, set(), 20.0)
        assert db.reads == 2 and db.sessions["ses_new"].last_write == 20.0
        assert db.sessions[SECOND].last_write is None  # not written since
    finally:
        conn.close()


def test_refresh_counts_the_rows_and_the_bad_ones(tmp_path: Path) -> None:
    db, conn = _on_disk(tmp_path)
    try:
        _add_session(conn, "bad id!")
        _add_session(conn, "ses_bad_time", time_created="soon")
        db.refresh(HORIZON, set(), 10.0)
        assert set(db.sessions) == {FIRST, CHILD, SECOND}
        assert (db.stats.lines, db.stats.garbage) == (5, 2)
    finally:
        conn.close()


def test_refresh_forces_a_read_only_for_ids_it_was_not_asked_for_yet(tmp_path: Path) -> None:
    db, conn = _on_disk(tmp_path)
    try:
        db.refresh(HORIZON, set(), 10.0)
        assert db.reads == 1
        db.refresh(HORIZON, {SECOND}, 11.0)  # known: no read of an unchanged database
        assert db.reads == 1
        db.refresh(HORIZON, {"ses_elsewhere"}, 12.0)  # not known: looked for, once
        assert db.reads == 2 and "ses_elsewhere" not in db.sessions
        db.refresh(HORIZON, {"ses_elsewhere", SECOND}, 13.0)
        assert db.reads == 2
    finally:
        conn.close()


def test_refresh_reaches_back_again_only_for_an_earlier_horizon(tmp_path: Path) -> None:
    """Up to a second earlier is the same horizon (the processes' start times jitter); further
    back is a full read, which finds what was written before the last horizon."""
    db, conn = _on_disk(tmp_path)
    try:
        older = int((HORIZON - 1.2) * 1000)
        _add_session(conn, "ses_older", time_created=older - 5000, time_updated=older)
        db.refresh(HORIZON, set(), 10.0)
        assert db.reads == 1 and "ses_older" not in db.sessions
        db.refresh(HORIZON - 1.0, set(), 11.0)
        assert db.reads == 1 and "ses_older" not in db.sessions
        db.refresh(HORIZON - 1.5, set(), 12.0)
        assert db.reads == 2 and "ses_older" in db.sessions
    finally:
        conn.close()


def test_refresh_of_a_database_without_a_session_table_is_not_repeated(
    tmp_path: Path,
) -> None:
    db, conn = _on_disk(tmp_path)
    try:
        conn.execute("DROP TABLE session")
        db.refresh(HORIZON, set(), 10.0)
        assert (db.reads, db.schema_errors, db.sessions) == (1, 1, {})
        db.refresh(HORIZON, set(), 11.0)  # nothing changed
        db.poll()
        db.refresh(HORIZON, set(), 12.0)  # a look: still nothing changed
        assert (db.reads, db.schema_errors) == (1, 1)
    finally:
        conn.close()


def test_refresh_remembers_an_sqlite_without_json_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such an SQLite fails in the first JSON function (a view cannot stand in for it here:
    the guard refuses views); after that, no status is asked of it again."""
    asked: list[str] = []

    def no_json(conn: sqlite3.Connection, sid: str) -> opencode_queries.Activity:
        asked.append(sid)
        raise sqlite3.OperationalError("no such function: json_valid")

    monkeypatch.setattr(opencode_queries, "read_activity", no_json)
    db, conn = _on_disk(tmp_path)
    try:
        db.refresh(HORIZON, set(), 10.0)
        assert db.json_ok is False and set(db.sessions) == {FIRST, CHILD, SECOND}
        assert len(asked) == 1  # the first row's failure says it for all
        _add_session(conn, "ses_new")
        db.poll()
        db.refresh(HORIZON, set(), 11.0)
        assert "ses_new" in db.sessions and len(asked) == 1
    finally:
        conn.close()


def test_refresh_drops_a_session_the_log_names_and_the_table_no_longer_has(
    tmp_path: Path,
) -> None:
    db, conn = _on_disk(tmp_path)
    try:
        db.refresh(HORIZON, set(), 10.0)
        conn.execute("DELETE FROM session WHERE id = ?", (FIRST,))  # not the last rowid
        conn.execute(
            "INSERT INTO event (id, aggregate_id, seq, type, data)"
            " VALUES ('evt_gone', ?, 99, 'session.deleted.1', '{}')",
            (FIRST,),
        )
        db.poll()
        db.refresh(HORIZON, set(), 11.0)
        assert db.reads == 2 and set(db.sessions) == {CHILD, SECOND}
    finally:
        conn.close()


def test_refresh_keeps_a_session_written_at_the_horizon(tmp_path: Path) -> None:
    db, conn = _on_disk(tmp_path)
    try:
        edge = int(HORIZON * 1000)
        _add_session(conn, "ses_edge", time_created=edge - 5000, time_updated=edge)
        _add_session(conn, "ses_before", time_created=edge - 5000, time_updated=edge - 1)
        db.refresh(HORIZON, set(), 10.0)
        assert set(db.sessions) == {FIRST, CHILD, SECOND, "ses_edge"}
    finally:
        conn.close()


def test_refresh_keeps_an_old_child_of_a_kept_session_when_the_log_names_it(
    tmp_path: Path,
) -> None:
    """A sub-agent last written before the horizon, named by a new event: kept, for its
    parent is; an old session of no kept parent, named too, is not."""
    db, conn = _on_disk(tmp_path)
    try:
        later = 1795922756.0  # after the child was last written, before its parent was
        _add_session(conn, "ses_lone", time_created=1795922740000, time_updated=1795922741000)
        db.refresh(later, set(), 10.0)
        assert set(db.sessions) == {FIRST, SECOND}
        for n, sid in enumerate([CHILD, "ses_lone"]):
            conn.execute(
                "INSERT INTO event (id, aggregate_id, seq, type, data)"
                " VALUES (?, ?, 99, 'session.updated.1', '{}')",
                (f"evt_{n}", sid),
            )
        db.poll()
        db.refresh(later, set(), 11.0)
        assert db.reads == 2 and set(db.sessions) == {FIRST, CHILD, SECOND}
    finally:
        conn.close()


def test_a_pass_that_reads_and_forgets_changes_the_version(tmp_path: Path) -> None:
    """The reader recomputes its facts when a database's version differs from the last
    pass's: one read and one forgetting in a pass must not cancel out."""
    db, conn = _on_disk(tmp_path)
    try:
        db.refresh(HORIZON, set(), 10.0)
        db.forget(HORIZON, set())
        before = db.version
        _add_session(conn, "ses_new")
        db.poll()
        later = 1795922760.0  # after the first conversation and its sub-agent were written
        db.refresh(later, set(), 11.0)
        db.forget(later, set())
        assert set(db.sessions) == {SECOND, "ses_new"} and db.version != before
    finally:
        conn.close()


def test_forgets_a_grandchild_held_before_its_parent(tmp_path: Path) -> None:
    """The children go however the sessions are ordered: another round for each level."""
    db = opencode_db.Database(tmp_path, tmp_path / "opencode.db", True, ReadStats())
    rows = [
        _kept("ses_grandkid", 95, "ses_kid"),
        _kept("ses_kid", 95, "ses_old"),
        _kept("ses_old", 90),
        _kept("ses_new", 110),
    ]
    db.sessions = {s.id: s for s in rows}
    db.forget(100.0, set())
    assert sorted(db.sessions) == ["ses_new"]


def test_a_full_read_after_forgetting_reaches_back_only_to_the_forgetting(
    tmp_path: Path,
) -> None:
    """Forgetting at a later horizon moves the full read's: a process that then appears,
    started in between, makes a full read that finds what was forgotten since."""
    db, conn = _on_disk(tmp_path)
    try:
        db.refresh(HORIZON, set(), 10.0)
        later = 1795922760.0
        db.forget(later, set())
        assert set(db.sessions) == {SECOND}
        between = 1795922756.0  # before the first conversation was last written
        db.refresh(between, set(), 11.0)
        assert db.reads == 2 and set(db.sessions) == {FIRST, SECOND}
    finally:
        conn.close()


def test_a_continued_conversation_prompted_again_after_new_is_current_again(
    tmp_path: Path, live: LiveDatabase
) -> None:
    """The conversation named on the command line counts as prompted at the start only
    until it is prompted after it: then that prompt orders it."""
    later = START + 86400
    replay = Replay(tmp_path / "home", later, readers=(SPEC,))
    recs = [_rec(30001, later, argv=["/home/dev2/.npm-global/bin/opencode", "-s", FIRST])]
    replay.step(recs, later + 1)
    live.new_session("ses_next", PROJECT, later + 5, "Next")
    live.message("ses_next", "msg_next", "user", later + 5)
    replay.step(recs, later + 6)
    assert _native(_facts(replay, 30001)) == [("ses_next", "busy")]
    live.message(FIRST, "msg_back", "user", later + 10)  # back to the first one
    replay.step(recs, later + 11)
    # The one left still works (busy): open, before the current one.
    assert _native(_facts(replay, 30001)) == [("ses_next", "busy"), (FIRST, "busy")]


def test_sub_agents_are_reported_eight_levels_deep() -> None:
    chain = [_kept("ses_root", 100.0)] + [
        _kept(f"ses_level{n}", 100.0, "ses_root" if n == 1 else f"ses_level{n - 1}")
        for n in range(1, 11)
    ]
    sessions = {s.id: s for s in chain}
    children: dict[str, list[opencode_queries.Session]] = {}
    for s in chain[1:]:
        assert s.parent is not None
        children.setdefault(s.parent, []).append(s)
    facts = opencode._facts(chain[0], children, sessions, None)
    assert [a.agent_id for a in facts.subagents] == [f"ses_level{n}" for n in range(1, 9)]
