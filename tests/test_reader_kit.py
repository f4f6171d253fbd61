"""The reader kit on its own: the time parser, the pass and its one tree walk, which process
a lock's pid is of, the first-conversation window, flag values, directory listings, the
change diff and trusted directories."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quintd.model import AgentProcess
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
from quintd.sources.files import trusted_dir
from quintd.sources.processes import MAX_TREE_DEPTH, TcpSocket, descendants
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
