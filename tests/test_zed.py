"""Zed's agent panel threads. No editor runs here: ``threads.db`` is written the way Zed's
own source writes it (tests/zed_threads.py), starting from a fixture of a long history
(tests/fixtures/zed), and read through the real scanner (a spawned process standing for the
editor), source manager and tracker; the finer cases replay hand-made process records
(tests/replay.py). Unverified against a running editor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import zstandard
from conftest import Agents, clean_env, fake_agent, wait_until
from replay import MACHINE, Clock, Rec, Replay, story
from zed_threads import MODEL, Thread, ZedThreads, rfc3339

from quintd.identity import native_session_id
from quintd.model import AgentProcess, ConversationFacts, LifecycleEvent
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.scanner import Scanner
from quintd.sources import zed, zed_db, zstd_json
from quintd.sources.files import PASS_BUDGET
from quintd.sources.manager import SourceManager, SourceSettings
from quintd.tracker import SessionTracker

HISTORY = Path(__file__).parent / "fixtures" / "zed" / "history" / "threads.db"
DATA = Path(".local/share/zed")
T0 = 1_790_000_000.0
PROJECT = "/home/dev/src/shop"


def _home(tmp_path: Path, history: bool = True) -> tuple[Path, ZedThreads]:
    home = tmp_path / "home"
    target = home / DATA / "threads" / "threads.db"
    target.parent.mkdir(parents=True)
    if history:
        shutil.copyfile(HISTORY, target)
    return home, ZedThreads(target)


def _zed(pid: int = 5151, start: float = T0, *args: str, **env: str) -> Rec:
    argv = ["/usr/libexec/zed-editor", *args]
    return Rec(pid, 1, "zed-editor", "/usr/libexec/zed-editor", argv, PROJECT, start, env=env)


def _id(native: str, agent: str | None = None) -> str:
    return native_session_id(MACHINE, "zed", native, agent, uid=os.getuid())


def _convs(found: object) -> list[ConversationFacts]:
    if found is None:
        return []
    return [found] if isinstance(found, ConversationFacts) else list(found)  # type: ignore[arg-type]


# -- the story, with a real process standing for the editor -----------------------------------


def test_zed_story_through_the_scanner_manager_and_tracker(tmp_path: Path, agents: Agents) -> None:
    """Zed starts with months of history (none of it a session), a thread is started and
    generates, goes idle, a second thread, a sub-agent of it, a thread deleted, the editor
    quits."""
    home, db = _home(tmp_path)
    project = tmp_path / "shop"
    project.mkdir()
    fake_agent(tmp_path / "zed-editor")
    env = {k: v for k, v in clean_env().items() if k not in ("XDG_DATA_HOME",)}
    proc = agents.spawn(
        [str(tmp_path / "zed-editor"), "600"], cwd=project, env=env | {"HOME": str(home)}
    )
    scanner = Scanner()
    agent: AgentProcess = wait_until(
        lambda: next((a for a in scanner.scan() if a.pid == proc.pid and a.signing_settled), None),
        what="zed",
    )
    assert agent.platform == "zed"
    clock = Clock(time.time())
    manager = SourceManager(SourceSettings(watch=False), clock=clock.monotonic, readers=(zed.SPEC,))
    tracker = SessionTracker(MACHINE, idle_after=30, clock=clock)
    seen: list[LifecycleEvent] = []

    def step(
        after: float = 0.0, procs: list[AgentProcess] | None = None
    ) -> list[tuple[object, ...]]:
        clock.t += after
        running = [agent] if procs is None else procs
        facts, pending = manager.observe(running)
        changes = tracker.observe(running, facts, pending, manager.waiting)
        seen.extend(changes.events)
        return [e[:2] + e[3:4] + e[4:] for e in story(seen)[len(seen) - len(changes.events) :]]

    def now() -> float:
        return time.time()

    try:
        # Started: the editor is a session of its own; none of the 302 old threads is one.
        assert step() == [("s1", "active", None, None)]
        assert tracker.sessions[0].native_id is None
        # A new thread, its first prompt: saved with the time the thread was made.
        first = Thread(title="", updated_at=now())
        first.prompt("Why does the build fail?")
        db.save(first)
        assert step(1) == [("s1", "active", "claude-sonnet-4-5", None)]  # the model learned
        assert [s.native_id for s in tracker.sessions] == [first.id]  # the editor's session
        # Generating: the answer streams (Zed rewrites the row with each batch), tools run.
        first.answer(now(), calls=1)
        db.save(first)
        assert step(20) == []
        assert step(20) == []  # a tool runs for long, nothing written: still busy
        first.answer(now())  # the turn ends
        first.title = "Build failure in CI"  # generated: never sent
        db.save(first)
        assert step(1) == []
        assert step(31) == [("s1", "idle", "claude-sonnet-4-5", None)]
        # A second thread, with another model.
        second = Thread(updated_at=now(), model={"provider": "openai", "model": "gpt-5"})
        second.prompt("Add a test for the parser")
        db.save(second)
        assert step(1) == [("s2", "active", "gpt-5", None)]
        assert tracker.sessions[1].session_id == _id(second.id)
        # A sub-agent of it (SubagentTool: a thread with parent_id).
        second.answer(now(), calls=1)
        db.save(second)
        child = Thread(updated_at=now(), parent=second.id)
        child.prompt("Find the parser's tests")
        db.save(child)
        assert step(1) == [("s3", "active", "claude-sonnet-4-5", "s2")]
        assert tracker.sessions[2].session_id == _id(second.id, child.id)
        child.answer(now())  # its turn ended: done
        db.save(child)
        # (A thread's data is decoded at most every DECODE_EVERY_S.)
        assert step(zed_db.DECODE_EVERY_S) == [("s3", "ended", "claude-sonnet-4-5", "s2")]
        # The first thread deleted from the history panel: it ends, the editor goes on.
        db.delete(first.id)
        assert step(1) == [("s1", "ended", "claude-sonnet-4-5", None)]
        second.answer(now())
        db.save(second)
        assert step(1) == []
        assert step(31) == [("s2", "idle", "gpt-5", None)]
        # The editor quits.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        wait_until(lambda: all(a.pid != proc.pid for a in scanner.scan()), what="zed's exit")
        assert step(1, procs=[]) == [("s2", "ended", "gpt-5", None)]
        assert tracker.sessions == []
    finally:
        manager.close()
        db.close()


# -- what the story did not show ---------------------------------------------------------------


def test_a_busy_answer_with_tool_calls_and_a_cancelled_one() -> None:
    thread = Thread()
    assert zed_db._status(thread.data()["messages"]) == "idle"  # nothing yet
    thread.prompt("go")
    assert zed_db._status(thread.data()["messages"]) == "busy"
    thread.answer(T0, calls=2)
    assert zed_db._status(thread.data()["messages"]) == "busy"  # the results go back
    thread.answer(T0, calls=1, cancel=True)
    assert zed_db._status(thread.data()["messages"]) == "idle"  # the user stopped it
    thread.answer(T0)
    assert zed_db._status(thread.data()["messages"]) == "idle"
    thread.messages.append("Resume")  # a retry after an error
    assert zed_db._status(thread.data()["messages"]) == "busy"
    for garbage in (None, {}, [1], [{"Agent": 1}], [{"Agent": {"content": 1}}], [{"X": {}}]):
        assert zed_db._status(garbage) is None
    # A call without its result yet (never stored so; a cancelled call is stored cancelled)
    odd = [{"Agent": {"content": [{"ToolUse": {"id": "t"}}], "tool_results": "x"}}]
    assert zed_db._status(odd) == "busy"
    plain = [{"Agent": {"content": [{"ToolUse": {"id": "t"}}], "tool_results": {"t": {}}}}]
    assert zed_db._status(plain) == "busy"
    assert zed_db._cancelled({"content": zed_db.CANCELLED})
    assert not zed_db._cancelled({"content": {"Text": "fn main() {}"}})
    assert not zed_db._cancelled(None)


def test_a_daemon_restart_keeps_the_sessions_and_an_old_busy_claim_expires(
    tmp_path: Path,
) -> None:
    home, db = _home(tmp_path)
    replay = Replay(home, T0, idle_after=30, readers=(zed.SPEC,))
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    db.save(thread)
    events = replay.step([_zed()], T0 + 6)
    assert story(events) == [("s1", "active", PROJECT.rsplit("/", 1)[1], "claude-sonnet-4-5", None)]
    replay.restart()
    assert replay.step([_zed()], T0 + 7) == []  # adopted, no event
    assert replay.step([_zed()], T0 + 300) == []  # the prompt waits for its answer: busy
    # The turn failed without an answer: the prompt stays last, the claim expires.
    events = replay.step([_zed()], T0 + 7 + zed.BUSY_HOLD_S + 1)
    assert [e.state for e in events] == ["idle"]


def test_an_old_thread_prompted_again_is_live_before_its_first_answer(tmp_path: Path) -> None:
    home, db = _home(tmp_path)
    replay = Replay(home, T0, idle_after=30, readers=(zed.SPEC,))
    old = Thread(id="0b7f5c1e-0000-4000-8000-000000000299", updated_at=1_751_076_400.0)
    old.prompt("Question 299")
    old.answer(1_751_076_400.0)
    assert [e.state for e in replay.step([_zed()], T0 + 1)] == ["active"]  # the editor
    assert _convs(_facts(replay)) == []
    old.title = "Old thread 299"
    db.save(old)  # opened again: rewritten as it was (its last message an answer)
    replay.step([_zed()], T0 + 2)
    assert _convs(_facts(replay)) == []
    old.prompt("One more question")
    db.save(old)  # the prompt: updated_at still months old
    replay.step([_zed()], T0 + 2 + zed_db.DECODE_EVERY_S)
    [conv] = _convs(_facts(replay))
    assert (conv.native_id, conv.status) == (old.id, "busy")
    old.answer(T0 + 10)
    db.save(old)
    replay.step([_zed()], T0 + 20)
    [conv] = _convs(_facts(replay))
    assert (conv.native_id, conv.status) == (old.id, "idle")


def _facts(replay: Replay) -> object:
    facts, _ = replay.sources.observe(replay.agents)
    return facts.get(replay.agents[0].pid) if replay.agents else None


def test_threads_go_to_the_editor_of_their_data_directory(tmp_path: Path) -> None:
    """``--user-data-dir`` and ``XDG_DATA_HOME`` name other data directories; of two Zed
    processes on one directory (a dev build beside the release), a thread goes to the one
    running when it was made."""
    home, db = _home(tmp_path, history=False)
    custom = home / "zed-profile"
    xdg = home / "xdg"
    other = ZedThreads(custom / "threads" / "threads.db")
    third = ZedThreads(xdg / "zed" / "threads" / "threads.db")
    replay = Replay(home, T0, readers=(zed.SPEC,))
    procs = [
        _zed(5101, T0),
        _zed(5102, T0 + 100),
        _zed(5103, T0, "--user-data-dir", str(custom)),
        _zed(5104, T0, XDG_DATA_HOME=str(xdg)),
        _zed(5105, T0, "--user-data-dir", "relative/dir"),
        _zed(5106, T0 - 50, XDG_DATA_HOME="relative"),
    ]
    threads = {}
    for name, target, at in (("a", db, T0 + 5), ("b", db, T0 + 105), ("c", other, T0 + 5)):
        threads[name] = Thread(updated_at=at)
        threads[name].prompt(name)
        target.save(threads[name])
    threads["d"] = Thread(updated_at=T0 + 5)
    threads["d"].prompt("d")
    third.save(threads["d"])
    replay.step(procs, T0 + 110)
    facts, _ = replay.sources.observe(replay.agents)
    found = {pid: [c.native_id for c in _convs(f)] for pid, f in facts.items()}
    assert found[5101] == [threads["a"].id]
    assert found[5102] == [threads["b"].id]
    assert found[5103] == [threads["c"].id]
    assert found[5104] == [threads["d"].id]
    # A relative --user-data-dir is the cwd's (none here); a relative XDG_DATA_HOME is
    # ignored (the default directory: its threads went to processes 1 and 2).
    assert 5105 not in found and 5106 not in found
    [state] = replay.sources._states.values()
    assert isinstance(state, zed.ZedState)
    assert state._database_of(replay.agents[5]) == db.path
    for each in (other, third):
        each.close()


def test_a_data_directory_through_a_link_is_not_read(tmp_path: Path) -> None:
    home, _db = _home(tmp_path, history=False)
    elsewhere = tmp_path / "elsewhere"
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    ZedThreads(elsewhere / "threads" / "threads.db").save(thread)
    (home / "profile").symlink_to(elsewhere)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    replay.step([_zed(5107, T0, "--user-data-dir", str(home / "profile"))], T0 + 6)
    [state] = replay.sources._states.values()
    assert isinstance(state, zed.ZedState)
    assert state._dbs == {} and _convs(_facts(replay)) == []


def test_zed_helpers_are_no_sessions() -> None:
    for args in (["--crash-handler", "zed-crash-handler.sock"], ["--askpass", "askpass.sock"]):
        match = match_process(
            BUILTIN_PLATFORMS,
            name="zed-editor",
            exe="/usr/libexec/zed-editor",
            argv=["/usr/libexec/zed-editor", *args],
        )
        assert match is not None and match.platform == "zed" and match.helper
    main = match_process(
        BUILTIN_PLATFORMS, name="zed-editor", exe="/usr/libexec/zed-editor", argv=["zed-editor"]
    )
    assert main is not None and not main.helper


# -- reading safely -----------------------------------------------------------------------------


def test_a_read_while_zed_writes_is_dropped_and_tried_again(tmp_path: Path) -> None:
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    db.save(thread)
    journal = db.path.with_name("threads.db-journal")
    journal.write_bytes(b"")  # a write under way (rollback journal)
    replay.step([_zed()], T0 + 6)
    [state] = replay.sources._states.values()
    [database] = state._dbs.values()  # type: ignore[attr-defined]
    assert database.watched.unreadable == 1 and _convs(_facts(replay)) == []
    journal.unlink()
    replay.step([_zed()], T0 + 7)
    assert [c.native_id for c in _convs(_facts(replay))] == [thread.id]


def test_only_changed_live_threads_are_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, db = _home(tmp_path)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    decoded: list[int] = []
    real = zstd_json.decompress

    def counting(blob: bytes, limit: int) -> bytes:
        decoded.append(len(blob))
        return real(blob, limit)

    monkeypatch.setattr(zed_db, "decompress", counting)
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    db.save(thread)
    replay.step([_zed()], T0 + 6)
    assert len(decoded) == 1  # the 302 old threads: plain columns only
    replay.step([_zed()], T0 + 7)
    assert len(decoded) == 1  # nothing changed: nothing read
    db.conn.execute("UPDATE threads SET summary = 'Renamed' WHERE id = ?", (thread.id,))
    replay.step([_zed()], T0 + 8)
    assert len(decoded) == 1  # read again, but the thread's data is as it was
    thread.answer(T0 + 9)
    db.save(thread)
    replay.step([_zed()], T0 + 10)
    assert len(decoded) == 1  # decoded 4 s ago: not yet (DECODE_EVERY_S)
    [state] = replay.sources._states.values()
    [database] = state._dbs.values()  # type: ignore[attr-defined]
    reads = database.watched.reads
    replay.step([_zed()], T0 + 10.5)
    assert database.watched.reads == reads  # nothing to read before the decode is due
    replay.step([_zed()], T0 + 6 + zed_db.DECODE_EVERY_S)
    assert len(decoded) == 2 and database.watched.reads == reads + 1
    db.conn.execute("UPDATE threads SET summary = 'Again' WHERE id = ?", (thread.id,))
    replay.step([_zed()], T0 + 30)
    assert len(decoded) == 2 and database.watched.reads == reads + 2


def test_without_zstandard_threads_are_still_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zstd_json, "_module", [None])
    home, db = _home(tmp_path)
    replay = Replay(home, T0, idle_after=30, readers=(zed.SPEC,))
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    db.save(thread)
    events = replay.step([_zed()], T0 + 6)
    assert [(e.state, e.model) for e in events] == [("active", None)]
    [conv] = _convs(_facts(replay))
    assert (conv.status, conv.model) == ("idle", None)  # the editor's CPU is no sign of work
    [state] = replay.sources._states.values()
    assert isinstance(state, zed.ZedState)
    assert state.unavailable == 1 and state.stats.garbage == 0
    thread.answer(T0 + 20)
    db.save(thread)
    assert replay.step([_zed()], T0 + 21) == []  # a write: work
    assert [e.state for e in replay.step([_zed()], T0 + 52)] == ["idle"]


def test_json_rows_bombs_and_garbage_data(tmp_path: Path) -> None:
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    legacy = Thread(updated_at=T0 + 5)
    legacy.prompt("go")
    db.raw(legacy.id, "", T0 + 5, "json", json.dumps(legacy.data()))
    bomb = zstandard.ZstdCompressor(level=19).compress(b"[" + b" " * (zed_db.MAX_JSON_BYTES + 10))
    db.raw("11111111-0000-4000-8000-000000000001", "", T0 + 5, "zstd", bomb)
    db.raw("11111111-0000-4000-8000-000000000002", "", T0 + 5, "zstd", b"\x28\xb5\x2f\xfdjunk")
    db.raw("11111111-0000-4000-8000-000000000003", "", T0 + 5, "zstd", b"not zstd at all")
    huge = zstandard.ZstdCompressor(level=1).compress(os.urandom(zed_db.MAX_BLOB_BYTES + 1))
    db.raw("11111111-0000-4000-8000-000000000004", "", T0 + 5, "zstd", huge)
    db.raw("11111111-0000-4000-8000-000000000006", "", T0 + 5, "zstd", b"")  # no data: idle
    db.raw("../../etc/passwd", "", T0 + 5, "zstd", b"")  # no id
    db.raw("11111111-0000-4000-8000-000000000005", "", "yesterday", "zstd", b"")  # no time
    replay.step([_zed()], T0 + 6)
    convs = {c.native_id: c for c in _convs(_facts(replay))}
    assert (convs[legacy.id].status, convs[legacy.id].model) == ("busy", MODEL["model"])
    assert len(convs) == 6  # the undecodable ones are threads all the same, idle
    assert {c.status for i, c in convs.items() if i != legacy.id} == {"idle"}
    [state] = replay.sources._states.values()
    assert isinstance(state, zed.ZedState)
    assert state.undecodable == 3 and state.stats.garbage == 5  # + two rows skipped


def test_a_database_of_another_shape_gives_no_facts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / DATA / "threads" / "threads.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE threads (uuid TEXT, summary TEXT)")
    conn.commit()
    conn.close()
    replay = Replay(home, T0, readers=(zed.SPEC,))
    events = replay.step([_zed()], T0 + 1)
    assert [e.state for e in events] == ["active"]  # the editor, a session of its own
    [state] = replay.sources._states.values()
    assert state.stats.garbage == 1


def test_the_pass_budget_defers_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    db.save(thread)
    with monkeypatch.context() as spent:
        spent.setattr(PASS_BUDGET, "take", lambda wanted: 0)  # other readers took it all
        replay.step([_zed()], T0 + 6)
        [conv] = _convs(_facts(replay))
        assert conv.model is None  # not decoded in this pass
    replay.step([_zed()], T0 + 7)  # nothing changed, but the next pass reads it again
    [conv] = _convs(_facts(replay))
    assert conv.model == MODEL["model"]


def test_nested_sub_agents_and_a_sub_agent_without_its_data(tmp_path: Path) -> None:
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    top = Thread(updated_at=T0 + 5)
    top.prompt("go")
    top.answer(T0 + 6, calls=1)
    child = Thread(updated_at=T0 + 6, parent=top.id)
    child.prompt("look")
    child.answer(T0 + 7, calls=1)
    grandchild = Thread(updated_at=T0 + 7, parent=child.id)
    grandchild.prompt("deeper")
    for each in (top, child, grandchild):
        db.save(each)
    garbled = "22222222-0000-4000-8000-000000000001"
    db.raw(garbled, "", T0 + 7, "zstd", b"\x28\xb5\x2f\xfdjunk", top.id)
    replay.step([_zed()], T0 + 8)
    [conv] = _convs(_facts(replay))
    subs = {s.agent_id: (s.status, s.done) for s in conv.subagents}
    assert len(conv.subagents) == len(subs)
    assert subs == {
        child.id: ("busy", False),
        garbled: ("idle", False),  # unknown: not taken for done
        grandchild.id: ("busy", False),  # a sub-agent's sub-agent: the conversation's too
    }
    grandchild.answer(T0 + 9)
    db.save(grandchild)
    replay.step([_zed()], T0 + 8 + zed_db.DECODE_EVERY_S)
    [conv] = _convs(_facts(replay))
    assert {s.agent_id: s.done for s in conv.subagents}[grandchild.id] is True


def test_more_live_threads_than_one_read_decodes(tmp_path: Path) -> None:
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    many = [Thread(updated_at=T0 + 5 + n) for n in range(zed_db.MAX_DECODES + 3)]
    for thread in many:
        thread.prompt("go")
        db.save(thread)
    events = replay.step([_zed()], T0 + 50)
    assert [(e.state, e.model) for e in events] == [("active", MODEL["model"])] * 32
    events = replay.step([_zed()], T0 + 51)  # nothing changed: read again for the rest
    assert [(e.state, e.model) for e in events] == [("active", MODEL["model"])] * 3
    [state] = replay.sources._states.values()
    [database] = state._dbs.values()  # type: ignore[attr-defined]
    reads = database.watched.reads
    replay.step([_zed()], T0 + 52)
    assert database.watched.reads == reads  # all read: no more reads without a change


def test_a_threads_view_over_an_endless_query_is_refused(tmp_path: Path) -> None:
    """SQL is code: a user's ``threads`` made a view over an endless recursive query is
    refused by the guard (set aside, counted), never run to the end."""
    from quintd.sources import sqlite_files

    home = tmp_path / "home"
    path = home / DATA / "threads" / "threads.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE VIEW threads AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
        "SELECT printf('%d', n) AS id, '2026-09-21T00:00:00+00:00' AS updated_at, "
        "'zstd' AS data_type, zeroblob(10) AS data, NULL AS parent_id, NULL AS created_at FROM r"
    )
    conn.commit()
    conn.close()
    aside = sqlite_files.SET_ASIDE.count
    replay = Replay(home, T0, readers=(zed.SPEC,))
    started = time.monotonic()
    events = replay.step([_zed()], T0 + 1)
    assert time.monotonic() - started < sqlite_files.QUERY_DEADLINE_S + 1
    assert [e.state for e in events] == ["active"]  # the editor, a session of its own
    assert sqlite_files.SET_ASIDE.count == aside + 1
    assert _convs(_facts(replay)) == []


def test_the_only_thread_deleted_ends_and_the_editor_is_its_own_session_again(
    tmp_path: Path,
) -> None:
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    db.save(thread)
    [started] = replay.step([_zed()], T0 + 6)
    assert started.session_id == _id(thread.id)
    db.delete(thread.id)
    events = replay.step([_zed()], T0 + 7)
    assert sorted((e.state, e.session_id == started.session_id) for e in events) == [
        ("active", False),  # the editor, a session of its own as when it started
        ("ended", True),
    ]
    assert replay.step([_zed()], T0 + 8) == []  # closed once: nothing more
    [state] = replay.sources._states.values()
    assert isinstance(state, zed.ZedState)
    assert list(state._over.values()) == [{thread.id: None}]
    replay.step([], T0 + 9)  # the editor quits ...
    replay.step([_zed(5152, T0 + 10)], T0 + 11)  # ... the next pass here forgets it
    assert set(state._live) == set(state._over) == {(5152, round((T0 + 10) * 1000))}


def test_a_thread_of_the_zed_before_is_history(tmp_path: Path) -> None:
    """Answered just before this Zed started (within the start time's slack: the same
    moment) is live; earlier, it was the previous Zed's."""
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    same = Thread(updated_at=T0 - zed.START_SLACK_S)
    before = Thread(updated_at=T0 - zed.START_SLACK_S - 0.5)
    for each in (same, before):
        each.prompt("go")
        each.answer(each.updated_at)
        db.save(each)
    replay.step([_zed()], T0 + 1)
    assert [c.native_id for c in _convs(_facts(replay))] == [same.id]


def test_an_orphaned_sub_agent_and_a_minimal_table(tmp_path: Path) -> None:
    """A sub-agent whose parent is gone is a conversation of its own; a table with only
    ``id`` and ``updated_at`` still gives its threads (idle, no model)."""
    home, db = _home(tmp_path, history=False)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    orphan = Thread(updated_at=T0 + 5, parent="44444444-0000-4000-8000-000000000001")
    orphan.prompt("go")
    db.save(orphan)
    replay.step([_zed()], T0 + 6)
    assert [(c.native_id, c.status) for c in _convs(_facts(replay))] == [(orphan.id, "busy")]
    other = tmp_path / "other"
    path = other / DATA / "threads" / "threads.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE threads (id TEXT PRIMARY KEY, updated_at TEXT)")
    conn.execute(
        "INSERT INTO threads VALUES ('55555555-0000-4000-8000-000000000001', ?)",
        (rfc3339(T0 + 5),),
    )
    conn.commit()
    conn.close()
    minimal = Replay(other, T0, readers=(zed.SPEC,))
    minimal.step([_zed()], T0 + 6)
    [conv] = _convs(_facts(minimal))
    assert (conv.native_id, conv.status, conv.model) == (
        "55555555-0000-4000-8000-000000000001",
        "idle",
        None,
    )


def test_a_relative_data_directory_is_the_editors_cwd(tmp_path: Path) -> None:
    home, _db = _home(tmp_path, history=False)
    project = tmp_path / "project"
    thread = Thread(updated_at=T0 + 5)
    thread.prompt("go")
    ZedThreads(project / "profile" / "threads" / "threads.db").save(thread)
    replay = Replay(home, T0, readers=(zed.SPEC,))
    rec = _zed(5108, T0, "--user-data-dir", "profile")
    rec.cwd = str(project)
    replay.step([rec], T0 + 6)
    assert [c.native_id for c in _convs(_facts(replay))] == [thread.id]
