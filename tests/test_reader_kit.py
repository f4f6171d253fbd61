"""The reader kit on its own: the time parser, the pass and its one tree walk, which process
a lock's pid is of, the first-conversation window, flag values, directory listings, the
change diff and trusted directories."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import (
    Pass,
    first_conversation,
    flag_value,
    flag_values,
    latest,
    owner_of,
    subcommand,
)
from quintd.sources.changes import Changes, diff_writes, listing
from quintd.sources.files import ReadStats, trusted_dir
from quintd.sources.processes import MAX_TREE_DEPTH, TcpSocket, descendants
from quintd.sources.spec import ReaderContext
from quintd.sources.sqlite_sessions import (
    RETRY_S,
    Database,
    MissingColumns,
    Session,
    SessionDatabases,
    WatchedDatabase,
    children,
    lstat_identity,
)
from quintd.sources.times import CLOCK_SLACK_S, START_SLACK_S, parse_time

T0 = 1_790_000_000.0


def _proc(pid: int, start: float = T0, cwd: str | None = "/p") -> AgentProcess:
    return AgentProcess("claude-code", pid, 1, start, "u", None, cwd, "claude", "exe")


class View:
    """A process table of parent -> children, counting the children asked for."""

    def __init__(self, tree: dict[int, list[int]]) -> None:
        self.tree = tree
        self.asked: list[int] = []

    def children(self, pid: int) -> list[int]:
        self.asked.append(pid)
        return self.tree.get(pid, [])

    def uid(self, pid: int) -> int | None:
        return 0

    def environ(self, pid: int) -> dict[str, str] | None:
        return {}

    def start_ticks(self, pid: int) -> str | None:
        return None

    def exe(self, pid: int) -> str | None:
        return None

    def argv(self, pid: int) -> list[str]:
        return []

    def open_files(self, pid: int) -> set[str]:
        return {f"/open/{pid}"}

    def tcp(self, pid: int) -> list[TcpSocket]:
        return []


def test_parse_time_forms() -> None:
    assert parse_time(T0) == T0
    assert parse_time(int(T0 * 1000)) == T0  # milliseconds
    assert parse_time(str(int(T0))) == T0  # digits
    assert parse_time("2026-09-21T12:26:40Z") == parse_time("2026-09-21T12:26:40+00:00")
    assert parse_time("2026-09-21 12:26:40") == parse_time("2026-09-21T12:26:40Z")  # UTC
    assert (
        parse_time(datetime(2026, 9, 21, tzinfo=UTC))
        == datetime(2026, 9, 21, tzinfo=UTC).timestamp()
    )
    for bad in (True, None, 0, -5, 1e13 * 1000, "x" * 70, "not a time", [], {}):
        assert parse_time(bad) is None


def test_parse_time_edges() -> None:
    """Each bound of the parser, on both sides, and texts read for the moment they name."""
    noon = datetime(2026, 9, 21, 12, 26, 40, tzinfo=UTC).timestamp()
    assert parse_time("2026-09-21T12:26:40Z") == noon
    assert parse_time("2026-09-21T14:26:40+02:00") == noon  # an offset is honoured
    # Digits: up to 19 of them (more is no time, and int() of a long text costs).
    assert parse_time("0" * 9 + str(int(T0))) == T0
    assert parse_time("0" * 10 + str(int(T0))) is None
    # Milliseconds only above 1e11 (1e11 itself is seconds: beyond the last second taken).
    assert parse_time(1e11) is None
    assert parse_time(1e11 + 1) == (1e11 + 1) / 1000
    # Seconds: above 0, below 1e10.
    assert parse_time(1) == 1.0
    assert parse_time(0.5) == 0.5
    assert parse_time(1e10 - 1) == 1e10 - 1
    assert parse_time(1e10) is None
    # A text of 63 characters is read, one of 64 is not (a time is never that long).
    assert parse_time(" " * 43 + "2026-09-21T12:26:40Z") == noon
    assert parse_time(" " * 44 + "2026-09-21T12:26:40Z") is None


def test_the_pass_walks_each_tree_once_and_only_as_deep_as_asked() -> None:
    view = View({1: [2, 3], 2: [4], 4: [5]})
    now = Pass.of([_proc(1)], view, lambda: 5.0)
    assert now.now == 5.0 and now.horizon == T0 - CLOCK_SLACK_S
    assert now.tree(1, depth=1) == [2, 3]
    assert view.asked == [1]  # one level: only the process's own children
    assert now.tree(1) == [2, 3, 4, 5]
    assert now.tree(1) == [2, 3, 4, 5]
    assert sorted(view.asked) == [1, 2, 3, 4, 5]  # each process asked once
    assert now.family(_proc(1)) == (1, 2, 3, 4, 5)
    assert now.holding(_proc(1), family=False) == {1: {"/open/1"}}
    assert set(now.holding(_proc(1))) == {1, 2, 3, 4, 5}
    assert list(now) == [_proc(1)] and len(now) == 1 and now.keys == {_proc(1).key}


def test_the_walk_is_bounded_and_survives_cycles() -> None:
    chain = {i: [i + 1] for i in range(1, 50)}
    assert len(descendants(View(chain), 1)) == MAX_TREE_DEPTH
    wide = {1: list(range(2, 1000))}
    assert len(descendants(View(wide), 1, limit=10)) == 10
    assert descendants(View({1: [2], 2: [1, 3]}), 1) == [2, 3]


def test_a_pid_belongs_to_the_process_it_runs_under_unless_older() -> None:
    view = View({10: [11], 11: [12], 20: []})
    a, b = _proc(10, T0), _proc(20, T0 + 100)
    now = Pass.of([a, b], view, lambda: 0.0)
    assert now.runner(10) == a and now.runner(12) == a and now.runner(20) == b
    assert now.runner(99) is None
    assert now.runner(12, written=T0 + 1) == a
    assert now.runner(12, written=T0 - START_SLACK_S + 0.5) == a  # the same moment
    assert now.runner(12, written=T0 - START_SLACK_S - 1) is None  # a dead process's


def test_owner_of_and_first_conversation() -> None:
    early, late = _proc(1, T0), _proc(2, T0 + 100)
    assert owner_of(T0 + 50, T0 + 60, [early, late]) == early  # late was not running
    assert owner_of(T0 + 150, T0 + 160, [early, late]) == late  # begun after both: the later
    assert owner_of(T0 - 500, T0 + 160, [early, late]) == late  # resumed: the last started
    assert owner_of(T0 - 500, T0 - 400, [early, late]) is None  # nobody ran then
    assert first_conversation(T0 + 5, [early, late], taken=[]) == [early]
    assert first_conversation(T0 + 5, [early], taken=[early.key]) == []
    assert first_conversation(T0 + 11, [early], taken=[]) == []  # past the window
    assert first_conversation(T0 - 1, [early], taken=[]) == [early]  # within the slack


@dataclass
class _Conv:
    native_id: str
    written: float
    last_write: float | None = None


def test_latest_claim_per_process_and_the_diff_of_writes() -> None:
    a, b = _proc(1), _proc(2, T0 + 1)
    found = latest(
        [(a, _Conv("x", 1)), (a, _Conv("y", 3)), (b, _Conv("z", 2))], lambda c: c.written
    )
    assert found == {a.key: ("y", a.start_time), b.key: ("z", b.start_time)}
    before = {"same": _Conv("same", 1, 7.0), "moved": _Conv("moved", 1, 7.0)}
    after = {"same": _Conv("same", 1), "moved": _Conv("moved", 2), "new": _Conv("new", 1)}
    diff_writes(before, after, 9.0, False, lambda old, new: old.written != new.written)
    assert [after[k].last_write for k in ("same", "moved", "new")] == [7.0, 9.0, 9.0]
    first = {"new": _Conv("new", 1)}
    diff_writes({}, first, 9.0, True, lambda old, new: True)
    assert first["new"].last_write is None  # the first read is history


def test_flags_and_subcommands() -> None:
    argv = ["crush", "-s", "one", "--session=two", "--session", "three", "-s"]
    assert flag_values(argv, ("-s", "--session")) == ["one", "two", "three"]
    assert flag_value(argv, ("--session",)) == "two"
    assert flag_value(["x", "-s=no"], ("-s",)) is None  # `=` only for long flags
    assert flag_value(["x", "-s", "a\x00b"], ("-s",)) is None  # no NUL in a path
    assert subcommand(["node", "run.js", "-c", "/p", "server"], ("-c",)) == "server"
    assert subcommand(["node", "run.js", "--yolo"], ()) is None


def test_listing_and_trusted_dirs(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("")
    (tmp_path / "d" / "new").mkdir()
    (tmp_path / "d" / "link").symlink_to(tmp_path / "d" / "new")
    os.utime(tmp_path / "d" / "old", (T0, T0))
    assert sorted(name for name, _ in listing(tmp_path / "d")) == ["link", "new", "old"]
    assert [n for n, _ in listing(tmp_path / "d", kind=stat.S_ISDIR)] == ["new"]  # no link
    assert sorted(n for n, _ in listing(tmp_path / "d", newer_than=T0 + 1)) == ["link", "new"]
    assert [n for n, _ in listing(tmp_path / "d", limit=1)] == ["link"]
    (tmp_path / "via").symlink_to(tmp_path / "d")
    assert listing(tmp_path / "via") == []  # never listed through a link
    assert listing(tmp_path / "absent") == []
    uid = os.getuid()
    assert trusted_dir(tmp_path / "d", uid)
    assert not trusted_dir(tmp_path / "d", uid + 1)
    assert not trusted_dir(tmp_path / "via", uid)
    assert not trusted_dir(tmp_path / "d" / "old", uid)
    assert not trusted_dir(tmp_path / "absent", uid)
    assert trusted_dir(tmp_path / "absent", uid, absent=True)


def test_changes_marks_and_polls(tmp_path: Path) -> None:
    changes = Changes()
    changes.mark(tmp_path / "a")
    assert changes.take() == {tmp_path / "a"} and changes.take() == set()
    changes.scanned = True
    changes.poll([tmp_path / "b"])
    assert not changes.scanned and changes.take() == {tmp_path / "b"}


@pytest.mark.parametrize("missing", ["sessions", "messages"])
def test_a_database_without_its_columns_is_counted_and_gives_nothing(
    tmp_path: Path, missing: str
) -> None:
    """The SQLite base: a database of another version (a table without the columns the
    reader needs) gives no facts, counted once per change as garbage, never raised."""
    import sqlite3

    from quintd.sources.goose import SPEC
    from quintd.sources.spec import ReaderContext

    root = tmp_path / "goose"
    (root / "sessions").mkdir(parents=True)
    conn = sqlite3.connect(root / "sessions" / "sessions.db")
    conn.execute(
        "CREATE TABLE sessions (id TEXT)"
        if missing == "sessions"
        else "CREATE TABLE sessions (id TEXT, working_dir TEXT, updated_at TEXT)"
    )
    conn.execute("CREATE TABLE messages (id INTEGER)")
    conn.commit()
    conn.close()
    view = View({})
    reader = SPEC.factory(root, ReaderContext(lambda: 0.0, view))
    agent = _proc(1, T0)
    for _ in range(3):
        reader.prepare([agent])
        assert reader.facts(agent) is None
    assert reader.stats.garbage == 1


def test_a_watched_database_is_read_once_per_change_and_backs_off(tmp_path: Path) -> None:
    import sqlite3

    from quintd.sources.files import ReadStats
    from quintd.sources.sqlite_sessions import WatchedDatabase, lstat_identity

    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    db = WatchedDatabase(tmp_path, path, ReadStats(), identity=lstat_identity)

    def count(c: sqlite3.Connection) -> int:
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])

    seen = db.due(0.0)
    assert seen is not None and db.read(seen, 0.0, count) == 0 and db.owner == os.getuid()
    assert db.due(1.0) is None  # nothing marked it
    db.poll()
    assert db.due(1.0) is None  # looked at: unchanged
    assert db.due(1.0, force=True) == seen  # forced: whatever it is
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    db.poll()
    changed = db.due(2.0)
    assert changed is not None and db.read(changed, 2.0, count) == 1 and db.reads == 2
    # Garbage: counted once, tried again only after the back-off (or a change).
    garbage = tmp_path / "b.db"
    garbage.write_bytes(b"\x00not a database" * 100)
    bad = WatchedDatabase(
        tmp_path, garbage, ReadStats(), backoff=(1.0, 4.0), identity=lstat_identity
    )
    first = bad.due(0.0)
    assert bad.read(first, 0.0, count) is None
    assert bad.schema_errors + bad.unreadable == 1
    assert bad.due(0.5) is None  # failed a moment ago, unchanged
    assert bad.due(1.5) is not None  # the back-off is over


# -- the bounds, exactly (written for the survivors of the mutation run) -------------------


def test_the_slacks_and_windows_include_their_bounds() -> None:
    view = View({10: [11]})
    a = _proc(10, T0)
    now = Pass.of([a], view, lambda: 0.0)
    assert now.runner(11, written=T0 - START_SLACK_S) == a  # at the slack's edge: its own
    early, late = _proc(1, T0), _proc(2, T0 + 100)
    # Running by the time it was touched: started at most START_SLACK_S after.
    assert owner_of(T0 - 500, T0 - START_SLACK_S, [early]) == early
    assert owner_of(T0 - 500, T0 - 1, [early]) == early
    # Begun after the later one started (up to the slack): the later one's.
    assert owner_of(T0 + 100 - START_SLACK_S, T0 + 200, [early, late]) == late
    assert owner_of(T0 + 99, T0 + 200, [early, late]) == late
    assert owner_of(T0 + 97, T0 + 200, [early, late]) == early
    assert first_conversation(T0 - START_SLACK_S, [early], taken=[]) == [early]
    assert first_conversation(T0 + 10.0, [early], taken=[]) == [early]  # the window's end


def test_the_first_claim_wins_a_tie() -> None:
    a = _proc(1)
    found = latest([(a, _Conv("x", 2)), (a, _Conv("y", 2))], lambda c: c.written)
    assert found == {a.key: ("x", a.start_time)}


def test_a_flag_value_as_the_last_word_and_a_first_subcommand() -> None:
    assert flag_values(["x", "-s", "v"], ("-s",)) == ["v"]
    assert subcommand(["codex", "exec"]) == "exec"
    assert subcommand(["codex", "-c", "k=v", "resume"], ("-c",)) == "resume"


# -- the SQLite base, exactly (written for the survivors of the mutation run) --------------


class Notes(SessionDatabases[Session]):
    """The smallest reader on the SQLite base: ``notes.db`` under the root, a table
    ``notes(id, created, updated, parent, work)``; its database is found once the root's
    ``ready`` file exists, and counted each time it is looked for."""

    session_flags = ("--note",)
    marker = "notes.db"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self.looked = 0
        self.urgent = False
        self.serves: set[int] = set()  # pids of servers: never a session's
        self.reads: list[int] = []  # sessions per read (after_read)
        self.sessions: dict[str, Session] = {}  # the last read's

    def find(self, proc: AgentProcess, argv: list[str]) -> tuple[Path, Path] | None:
        self.looked += 1
        return (self.root, self.root / "notes.db") if (self.root / "ready").exists() else None

    def look_again(self, proc: AgentProcess) -> bool:
        return self.urgent or super().look_again(proc)

    def query(
        self, conn: sqlite3.Connection, db: Database[Session], horizon: float
    ) -> list[Session]:
        try:
            rows = conn.execute("SELECT id, created, updated, parent, work FROM notes").fetchall()
        except sqlite3.OperationalError as exc:
            raise MissingColumns(str(exc)) from None
        return [Session(r[0], r[1], r[2], r[3]) for r in rows if r[2] >= horizon]

    def worked(self, old: Session, new: Session) -> bool:
        return old.updated != new.updated

    def after_read(self, db: Database[Session]) -> None:
        self.reads.append(len(db.sessions))
        self.sessions = dict(db.sessions)

    def candidates(self, db: Database[Session], members: list[AgentProcess]) -> list[AgentProcess]:
        return [p for p in members if p.pid not in self.serves]

    def conversation_facts(
        self, proc: AgentProcess, db: Database[Session], session: Session, since: float
    ) -> ConversationFacts:
        return ConversationFacts(
            session.native_id, last_write=session.last_write, owner_uid=db.owner
        )


class ArgvView(View):
    def __init__(self, argvs: dict[int, list[str]]) -> None:
        super().__init__({})
        self.argvs = argvs

    def argv(self, pid: int) -> list[str]:
        return self.argvs.get(pid, [])


class NotesHome:
    def __init__(self, root: Path, argvs: dict[int, list[str]] | None = None) -> None:
        root.mkdir()
        self.root = root
        self.clock = 100.0
        self.reader = Notes(root, ReaderContext(lambda: self.clock, ArgvView(argvs or {})))

    def note(self, native_id: str, created: float, updated: float, parent: str = "") -> None:
        row = (native_id, created, updated, parent or None, 0)
        self.sql(
            ("CREATE TABLE IF NOT EXISTS notes (id, created, updated, parent, work)", ()),
            ("DELETE FROM notes WHERE id = ?", (native_id,)),
            ("INSERT INTO notes VALUES (?, ?, ?, ?, ?)", row),
        )

    def sql(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        """Run and commit these, and grow the file: its size tells the change even where
        two writes fall in one tick of the file system's clock."""
        conn = sqlite3.connect(self.root / "notes.db")
        for statement, values in statements:
            conn.execute(statement, values)
        conn.execute("CREATE TABLE IF NOT EXISTS pad (x)")
        conn.execute("INSERT INTO pad VALUES (zeroblob(8192))")
        conn.commit()
        conn.close()

    def step(self, *procs: AgentProcess, after: float = 1.0) -> dict[int, str | None]:
        self.clock += after
        self.reader.prepare(procs)
        found = {p.pid: self.reader.facts(p) for p in procs}
        for facts in found.values():
            assert facts is None or facts.owner_uid == os.getuid()
        return {pid: f.native_id if f else None for pid, f in found.items()}


def test_a_database_not_found_is_looked_for_again_after_a_while(tmp_path: Path) -> None:
    home = NotesHome(tmp_path / "notes")
    agent = _proc(1, T0)
    assert not home.reader.has_registry_dir()
    assert home.step(agent) == {1: None} and home.reader.looked == 1
    (home.root / "ready").write_text("")
    home.step(agent, after=RETRY_S - 1.5)  # not yet
    assert home.reader.looked == 1
    home.step(agent, after=1.5)  # RETRY_S since it was last looked for
    assert home.reader.looked == 2
    home.step(agent, after=RETRY_S + 1)  # found: it stands
    assert home.reader.looked == 2
    # The database appears: read.
    home.note("a", T0 + 1, T0 + 2)
    assert home.reader.has_registry_dir()
    assert home.step(agent) == {1: "a"}
    # A process the reader says to look for at once is looked for at once.
    (home.root / "ready").unlink()
    other = _proc(2, T0)
    home.step(other)
    assert home.reader.looked == 3
    home.reader.urgent = True
    home.step(other)
    assert home.reader.looked == 4
    # A process gone is forgotten: back, it is looked for again from the start.
    home.step(agent)
    assert home.reader.looked == 5 and home.reader.argv(agent) == []
    home.reader.urgent = False
    home.step(agent)  # not found, and not urgent: not looked for before RETRY_S
    assert home.reader.looked == 5


def test_a_database_is_read_when_it_changed_and_its_first_read_is_history(
    tmp_path: Path,
) -> None:
    home = NotesHome(tmp_path / "notes")
    (home.root / "ready").write_text("")
    agent = _proc(1, T0)
    assert home.step(agent) == {1: None}  # no database yet: nothing read
    assert home.reader.reads == []
    home.note("a", T0 + 1, T0 + 2)
    home.note("old", T0 - 3600, T0 - 3600)  # before the horizon: not read
    assert home.step(agent) == {1: "a"} and home.reader.reads == [1]
    first = home.reader.facts(agent)
    assert first is not None and first.last_write is None  # found at the first read
    assert home.step(agent) == {1: "a"} and home.reader.reads == [1]  # unchanged: no read
    home.note("a", T0 + 1, T0 + 5)
    home.step(agent)
    worked = home.reader.facts(agent)
    assert worked is not None and worked.last_write == home.clock
    home.note("b", T0 + 6, T0 + 7)  # new since the first read: work, at once the latest
    assert home.step(agent) == {1: "b"}
    found = home.reader.facts(agent)
    assert found is not None and found.last_write == home.clock
    # Another version of the database: no facts, counted once.
    home.sql(("ALTER TABLE notes RENAME COLUMN work TO effort", ()))
    assert home.step(agent) == {1: None} and home.reader.stats.garbage == 1
    assert home.step(agent) == {1: None} and home.reader.stats.garbage == 1
    # Gone: no sessions, until it is there again.
    (home.root / "notes.db").unlink()
    assert home.step(agent) == {1: None}
    home.note("c", T0 + 8, T0 + 9)
    assert home.step(agent) == {1: "c"}
    # Used by no process, it is forgotten: its next read is a first read again (history).
    home.step()
    home.note("d", T0 + 10, T0 + 11)
    assert home.step(agent) == {1: "d"}
    again = home.reader.facts(agent)
    assert again is not None and again.last_write is None
    # Moved away: no sessions; moved back (the same file, the same signature): read again.
    (home.root / "notes.db").rename(home.root / "away.db")
    assert home.step(agent) == {1: None}
    (home.root / "away.db").rename(home.root / "notes.db")
    assert home.step(agent) == {1: "d"}


def test_which_process_runs_which_session(tmp_path: Path) -> None:
    pinned, early, late, server = _proc(1, T0), _proc(2, T0 + 1), _proc(3, T0 + 100), _proc(4)
    home = NotesHome(tmp_path / "notes", {1: ["notes", "--note", "old"]})
    (home.root / "ready").write_text("")
    home.note("old", T0 - 5, T0 + 200)  # resumed by name
    home.note("mine", T0 + 50, T0 + 60)  # begun before late started: early's
    home.note("sub", T0 + 150, T0 + 300, parent="mine")  # a sub-agent: never a process's
    home.note("theirs", T0 + 150, T0 + 160)  # begun after late started: late's
    home.reader.serves = {4}
    found = home.step(pinned, early, late, server)
    assert found == {1: "old", 2: "mine", 3: "theirs", 4: None}
    assert [s.native_id for s in children(home.reader.sessions.values(), "mine")] == ["sub"]
    home.reader.serves = {1, 2, 3, 4}  # nobody may run them
    assert home.step(pinned, early, late, server) == {1: None, 2: None, 3: None, 4: None}


def test_a_failing_database_is_tried_again_doubling_the_wait_up_to_its_cap(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    stats = ReadStats()
    db = WatchedDatabase(tmp_path, path, stats, backoff=(1.0, 3.0), identity=lstat_identity)

    def broken(c: sqlite3.Connection) -> int:
        raise ValueError("a row of the wrong shape")

    def count(c: sqlite3.Connection) -> int:
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])

    at = 0.0
    for wait in (1.0, 2.0, 3.0, 3.0):  # doubling, up to the cap
        seen = db.due(at)
        assert seen is not None and db.read(seen, at, broken) is None
        assert db.due(at + wait - 0.1) is None
        at += wait
    assert (db.schema_errors, db.unreadable, stats.garbage) == (4, 0, 4)
    seen = db.due(at)
    assert seen is not None and db.read(seen, at, count) == 0
    # A success starts the wait over.
    forced = db.due(at, force=True)
    assert forced is not None and db.read(forced, at, broken) is None
    assert db.due(at + 0.9) is None and db.due(at + 1.0) is not None
    # Without a back-off: tried again at the next pass, after a success too.
    plain = WatchedDatabase(tmp_path, path, ReadStats(), identity=lstat_identity)
    for query in (broken, count, broken):
        seen = plain.due(5.0, force=True)
        assert seen is not None
        plain.read(seen, 5.0, query)
    assert plain.due(5.0) is not None


def test_a_database_of_another_version_is_read_again_only_when_it_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    stats = ReadStats()
    db = WatchedDatabase(tmp_path, path, stats, identity=lstat_identity)

    def missing(c: sqlite3.Connection) -> int:
        raise MissingColumns("t.y")

    seen = db.due(0.0)
    assert seen is not None
    with pytest.raises(MissingColumns):
        db.read(seen, 0.0, missing)
    assert (db.schema_errors, stats.garbage, db.unreadable) == (1, 1, 0)
    db.poll()
    assert db.due(9.0) is None
    # Its -wal counts: a commit there is a change.
    Path(str(path) + "-wal").write_bytes(b"\x00" * 32)
    db.poll()
    assert db.due(9.0) is not None
    # One that cannot be opened at all is unreadable, not of another version.
    gone = WatchedDatabase(tmp_path, tmp_path / "absent.db", stats, identity=lstat_identity)
    seen = gone.due(0.0)
    assert gone.read(seen, 0.0, missing) is None
    assert (gone.unreadable, gone.schema_errors) == (1, 0)


def test_a_watched_database_is_looked_at_only_when_marked(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = WatchedDatabase(tmp_path, path, ReadStats(), identity=lstat_identity)
    absent = db.due(0.0)
    assert absent is not None
    db.skip(absent)  # nothing there: nothing to read until it changes
    db.poll()
    assert db.due(1.0) is None
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert db.due(2.0) is None  # changed, but nothing marked it: not looked at
    db.poll()
    seen = db.due(2.0)
    assert seen is not None and seen != absent
    assert db.read(seen, 2.0, lambda c: c.execute("SELECT 1").fetchone()[0]) == 1
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO t VALUES (zeroblob(8192))")  # grown: changed, on any clock
    conn.commit()
    conn.close()
    assert db.due(3.0) is None  # again: only once marked
    db.poll()
    assert db.due(3.0) is not None


def test_a_database_removed_while_its_query_failed_is_complained_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quintd.sources")
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    stats = ReadStats()
    db = WatchedDatabase(tmp_path, path, stats, identity=lstat_identity)

    def removed_then_failed(c: sqlite3.Connection) -> int:
        path.unlink()
        raise ValueError("a row of the wrong shape")

    seen = db.due(0.0)
    assert seen is not None and db.read(seen, 0.0, removed_then_failed) is None
    assert (db.schema_errors, stats.garbage) == (1, 1)
    assert "an unreadable database (a row of the wrong shape)" in caplog.text


def test_a_success_forgets_the_failure_before_it(tmp_path: Path) -> None:
    """Files whose identity comes back to one a read failed at (restored with their old
    times) are read at once when a read succeeded since."""
    identity = {"now": "x"}
    db = WatchedDatabase(
        tmp_path, tmp_path / "a.db", ReadStats(), (10.0, 10.0), lambda r, p: identity["now"]
    )
    assert db.read("x", 0.0, lambda c: 0) is None  # absent: unreadable, for 10 s
    identity["now"] = "y"
    db.poll()
    assert db.due(1.0) == "y"
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.close()
    assert db.read("y", 1.0, lambda c: 1) == 1
    identity["now"] = "x"
    db.poll()
    assert db.due(2.0) == "x"


# -- the JSONL-conversation base (sources/conversation_files.py), exactly -----------------


class _Records:
    """A record source handing out the records it is given, so many per read."""

    def __init__(self, path: Path, batches: list[tuple[list[dict[str, object]], bool]]) -> None:
        self.path = path
        self.offset = 0
        self.owner: int | None = None
        self.stats = ReadStats()
        self.batches = batches  # (records, whether more is left) per read

    def read_new(self, budget: int = 0) -> tuple[list[dict[str, object]], bool]:
        return self.batches.pop(0) if self.batches else ([], False)


def test_a_transcripts_first_read_is_history_and_what_follows_is_work() -> None:
    from quintd.sources.conversation_files import Transcript

    batches: list[tuple[list[dict[str, object]], bool]] = [
        ([{"n": 1}], True),
        ([{"n": 2}], True),
        ([], False),
        ([{"n": 3}], False),
        ([{"n": 4}], False),
    ]
    source = _Records(Path("t"), batches)
    transcript = Transcript(source)
    seen: list[object] = []
    work = lambda r: r["n"] != 4  # noqa: E731
    assert transcript.read(10.0, lambda r: seen.append(r["n"]), work)  # more left
    assert transcript.grew_at == 10.0 and transcript.last_write is None
    assert not transcript.read_once  # the first read has not reached the end yet
    transcript.read(11.0, lambda r: seen.append(r["n"]), work)
    assert transcript.last_write is None and transcript.grew_at == 11.0
    transcript.read(12.0, lambda r: seen.append(r["n"]), work)  # the end: history read
    assert transcript.read_once and transcript.grew_at == 11.0
    transcript.read(13.0, lambda r: seen.append(r["n"]), work)
    assert transcript.last_write == 13.0
    assert not transcript.read(14.0, lambda r: seen.append(r["n"]), work)
    assert transcript.last_write == 13.0 and transcript.grew_at == 14.0  # not work
    assert seen == [1, 2, 3, 4]


def test_a_record_the_rule_cannot_take_is_counted_not_raised() -> None:
    from quintd.sources.conversation_files import Transcript

    source = _Records(Path("t"), [([{"n": 1}, {"n": 2}, {"n": 3}], False)])
    transcript = Transcript(source)
    taken: list[object] = []

    def rule(record: dict[str, object]) -> None:
        if record["n"] == 2:
            raise ValueError("a record of the wrong shape")
        taken.append(record["n"])

    transcript.read(1.0, rule)
    assert taken == [1, 3] and source.stats.garbage == 1
    assert transcript.last_write is None  # no is_work: every record after history is work
    source.batches = [([{"n": 4}], False)]
    transcript.read(2.0, rule)
    assert transcript.last_write == 2.0

    def broken(record: dict[str, object]) -> None:
        raise RuntimeError("a bug is not garbage")

    source.batches = [([{"n": 5}], False)]
    with pytest.raises(RuntimeError):
        transcript.read(3.0, broken)


class OpenFilesView(View):
    def __init__(self, holding: dict[int, set[str]]) -> None:
        super().__init__({})
        self.holding = holding
        self.asked_open: list[int] = []

    def open_files(self, pid: int) -> set[str]:
        self.asked_open.append(pid)
        return self.holding.get(pid, set())


def _chats_reader(root: Path, view: View, clock: list[float]) -> Any:
    from quintd.sources.conversation_files import Conversation, ConversationFiles

    class Chats(ConversationFiles):
        """The smallest reader on the base: ``chat-*.jsonl`` or ``talk-*.jsonl`` under
        ``root/chats``; the first record names the conversation and its directory."""

        pattern = ("chat-*.jsonl", "talk-*.jsonl")

        def watch_dirs(self) -> list[Path]:
            return [self.root / "chats"]

        def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
            return conv.cwd == proc.cwd

        def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
            if "id" in record:
                conv.native_id = record["id"]
                conv.cwd = record["cwd"]
                conv.started = record.get("started")
            conv.title = record.get("title", conv.title)

    return Chats(root, ReaderContext(lambda: clock[0], view))


def _chat(path: Path, native_id: str | None, cwd: str = "/p", **more: object) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    first: dict[str, object] = {"cwd": cwd, **more}
    if native_id is not None:
        first["id"] = native_id
    path.write_text(json.dumps(first) + "\n")
    return path


def _started(ago: float, pid: int, cwd: str = "/p") -> AgentProcess:
    import time

    return _proc(pid, time.time() - ago, cwd)


def test_conversation_files_are_found_read_and_given_to_their_process(tmp_path: Path) -> None:
    chats = tmp_path / "chats"
    a = _chat(chats / "chat-a.jsonl", "a", "/p")
    b = _chat(chats / "deep" / "talk-b.jsonl", "b", "/q")
    _chat(chats / "other-c.jsonl", "c", "/p")  # not a conversation file's name
    _chat(chats / "chat-none.jsonl", None, "/p")  # names no conversation: no one's
    view = OpenFilesView({})
    clock = [50.0]
    reader = _chats_reader(tmp_path, view, clock)
    p, q = _started(100, 1, "/p"), _started(100, 2, "/r")
    reader.prepare([p, q])
    assert reader.facts(p).native_id == "a"
    assert reader.facts(q) is None
    assert reader.facts(p).owner_uid == os.getuid()
    q2 = _started(100, 2, "/q")
    reader.prepare([p, q2])
    assert reader.facts(q2).native_id == "b"
    # A file changes: marked (by its name), read on the next pass; work after history.
    with open(a, "a") as fh:
        fh.write('{"title": "renamed"}\n')
    reader.changed(chats / "other-c.jsonl")
    reader.changed(a)
    assert reader.changes.dirty == {a}
    clock[0] = 60.0
    reader.prepare([p, q2])
    facts = reader.facts(p)
    assert facts.name == "renamed" and facts.last_write == 60.0
    # No events: poll lists again and rereads the known files.
    with open(b, "a") as fh:
        fh.write('{"title": "b renamed"}\n')
    reader.poll()
    assert {a, b} <= reader.changes.dirty and not reader.changes.scanned
    reader.prepare([p, q2])
    assert reader.facts(q2).name == "b renamed"


def test_files_older_than_every_process_are_never_read_and_then_forgotten(
    tmp_path: Path,
) -> None:
    import time

    chats = tmp_path / "chats"
    old = _chat(chats / "chat-old.jsonl", "old")
    long_ago = time.time() - 10_000
    os.utime(old, (long_ago, long_ago))
    reader = _chats_reader(tmp_path, OpenFilesView({}), [1.0])
    p = _started(100, 1)
    reader.prepare([p])
    assert reader.facts(p) is None
    reader.changed(old)  # a change event for it: still older than the horizon
    reader.prepare([p])
    assert reader.facts(p) is None
    # A file read while recent is forgotten once it is older than every process.
    new = _chat(chats / "chat-new.jsonl", "new")
    reader.changed(new)
    reader.prepare([p])
    assert reader.facts(p).native_id == "new"
    os.utime(new, (long_ago, long_ago))
    reader.prepare([p])
    assert reader.facts(p) is None


def test_a_conversation_file_outside_the_root_is_not_read(tmp_path: Path) -> None:
    outside = _chat(tmp_path / "elsewhere" / "chat-x.jsonl", "x")
    (tmp_path / "root" / "chats").mkdir(parents=True)
    reader = _chats_reader(tmp_path / "root", OpenFilesView({}), [1.0])
    p = _started(100, 1)
    reader.changed(outside)
    reader.prepare([p])
    assert reader.facts(p) is None


def test_of_two_processes_the_holder_then_the_latest_started_runs_a_conversation(
    tmp_path: Path,
) -> None:
    path = _chat(tmp_path / "chats" / "chat-a.jsonl", "a")
    view = OpenFilesView({})
    reader = _chats_reader(tmp_path, view, [1.0])
    older, newer = _started(200, 1), _started(100, 2)
    reader.prepare([older])
    assert view.asked_open == []  # one process: whose file it is needs no asking
    assert reader.facts(older).native_id == "a"
    reader.prepare([older, newer])
    assert sorted(view.asked_open) == [1, 2]
    assert reader.facts(newer).native_id == "a" and reader.facts(older) is None
    view.holding[1] = {str(path)}  # the older one has it open: certain
    reader.prepare([older, newer])
    assert reader.facts(older).native_id == "a" and reader.facts(newer) is None
    view.holding[2] = {str(path)}  # both hold it: the latest started again
    reader.prepare([older, newer])
    assert reader.facts(newer).native_id == "a" and reader.facts(older) is None


def test_a_process_runs_the_conversation_started_last_else_written_last(
    tmp_path: Path,
) -> None:
    import time

    chats = tmp_path / "chats"
    now = time.time()
    first = _chat(chats / "chat-1.jsonl", "first", started=now - 50)
    second = _chat(chats / "chat-2.jsonl", "second", started=now - 60)
    os.utime(first, (now - 5, now - 5))
    os.utime(second, (now - 1, now - 1))
    reader = _chats_reader(tmp_path, OpenFilesView({}), [1.0])
    p = _started(100, 1)
    reader.prepare([p])
    assert reader.facts(p).native_id == "first"  # started later, though written earlier
    third = _chat(chats / "chat-3.jsonl", "third")  # no start: by its writes
    fourth = _chat(chats / "chat-4.jsonl", "fourth")
    os.utime(third, (now - 3, now - 3))
    os.utime(fourth, (now - 2, now - 2))
    for path in (first, second):
        path.unlink()
    reader.poll()
    reader.prepare([p])
    assert reader.facts(p).native_id == "fourth"


def test_one_pass_reads_conversations_newest_first_within_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from quintd.sources import conversation_files

    chats = tmp_path / "chats"
    now = time.time()
    newer = _chat(chats / "chat-new.jsonl", "new", "/new")
    older = _chat(chats / "chat-old.jsonl", "old", "/old")
    os.utime(newer, (now - 1, now - 1))
    os.utime(older, (now - 2, now - 2))
    size = newer.stat().st_size
    assert older.stat().st_size == size
    monkeypatch.setattr(conversation_files, "PASS_BUDGET_BYTES", size)
    reader = _chats_reader(tmp_path, OpenFilesView({}), [1.0])
    p, q = _started(100, 1, "/new"), _started(100, 2, "/old")
    reader.prepare([p, q])
    assert reader.facts(p).native_id == "new" and reader.facts(q) is None
    assert reader.changes.dirty == {older}  # the next pass goes on
    reader.prepare([p, q])
    assert reader.facts(q).native_id == "old" and reader.changes.dirty == set()
    # A file larger than a pass's budget is read over several passes.
    monkeypatch.setattr(conversation_files, "PASS_BUDGET_BYTES", size - 1)
    late = _chat(chats / "chat-late.jsonl", "late", "/late")
    r = _started(100, 3, "/late")
    reader.changed(late)
    reader.prepare([p, q, r])
    assert reader.facts(r) is None and reader.changes.dirty == {late}
    reader.prepare([p, q, r])
    assert reader.facts(r).native_id == "late"


def test_conversation_files_are_listed_once_then_found_by_their_changes(
    tmp_path: Path,
) -> None:
    _chat(tmp_path / "chats" / "chat-a.jsonl", "a")
    reader = _chats_reader(tmp_path, OpenFilesView({}), [1.0])
    p = _started(100, 1)
    reader.prepare([p])
    assert reader.facts(p).native_id == "a"
    later = _chat(tmp_path / "chats" / "chat-b.jsonl", "b", started=1e10)
    reader.prepare([p])  # no change event for it: not listed again
    assert reader.facts(p).native_id == "a"
    reader.changed(later)
    reader.prepare([p])
    assert reader.facts(p).native_id == "b"


def test_a_watched_directory_that_is_a_link_is_not_listed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _chat(elsewhere / "chat-a.jsonl", "a")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "chats").symlink_to(elsewhere)
    reader = _chats_reader(tmp_path / "root", OpenFilesView({}), [1.0])
    p = _started(100, 1)
    reader.prepare([p])
    assert reader.facts(p) is None
    # Not even tried (a read through the link would be refused, and counted).
    assert reader.stats.refused == 0 and reader.stats.lines == 0
