"""The Codex reader alone, on files written here and a process table of made-up processes
(tests/replay.py's ``RecordedProcesses``): the rules the recorded runs
(test_codex_replay.py) do not reach one at a time. Written for the survivors of the
mutation run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from replay import Rec, RecordedProcesses

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.codex import CAPABILITIES, LOCKS, CodexState
from quintd.sources.processes import TcpSocket
from quintd.sources.spec import ReaderContext
from quintd.sources.times import CLOCK_SLACK_S

T0 = 1_790_000_000.0
THREADS = [f"01a22595-0000-7000-8000-{n:012d}" for n in range(8)]


class Codex:
    """A CodexState over a temporary ~/.codex, with a settable clock and process table."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = 100.0
        self.view = RecordedProcesses(root.parent)
        self.state = CodexState(root, ReaderContext(lambda: self.now, self.view))
        (root / CAPABILITIES).mkdir(parents=True)
        self.day = root / "sessions" / "2026" / "09" / "21"
        self.day.mkdir(parents=True)

    def attach(self, thread: str, at: float, *, event: bool = True) -> Path:
        """A TUI attached ``thread`` at ``at`` (epoch seconds): its capability file."""
        path = self.root / CAPABILITIES / thread
        path.touch()
        os.utime(path, (at, at))
        if event:
            self.state.changed(path)
        return path

    def rollout(self, thread: str, records: list[dict[str, Any]], *, event: bool = True) -> Path:
        path = self.day / f"rollout-2026-09-21T12-00-00-{thread}.jsonl"
        with open(path, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        if event:
            self.state.changed(path)
        return path

    def index(self, *lines: dict[str, Any]) -> None:
        with open(self.root / "session_index.jsonl", "a") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in lines)

    def lock(self, thread: str) -> Path:
        (self.root / LOCKS).mkdir(exist_ok=True)
        path = self.root / LOCKS / f"{thread}.lock"
        path.touch()
        return path

    def run(self, *recs: Rec) -> list[AgentProcess]:
        """A pass with these processes (the agents: those the scanner would report, here
        the ones whose parent is init)."""
        self.view.show(recs)
        procs = [_agent(r) for r in recs if r.ppid == 1]
        self.state.prepare(procs)
        return procs

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        found = self.state.facts(proc)
        assert not isinstance(found, tuple)
        return found


def tui(pid: int, start: float = T0, tcp: list[TcpSocket] | None = None) -> Rec:
    return Rec(pid, 1, "codex", "/usr/local/bin/codex", ["codex"], "/p", start, tcp=tcp or [])


def host(pid: int, start: float, *held: Path) -> Rec:
    argv = ["codex", "exec", "fix it"]
    rec = Rec(pid, 1, "codex", "/usr/local/bin/codex", argv, "/p", start)
    rec.open_files = [str(p) for p in held]
    return rec


def _agent(rec: Rec) -> AgentProcess:
    return AgentProcess(
        "codex", rec.pid, rec.ppid, rec.start_time, "dev", rec.exe, rec.cwd, rec.comm, "exe",
        uid=os.getuid(),
    )  # fmt: skip


def _meta(thread: str, **payload: Any) -> dict[str, Any]:
    return {"type": "session_meta", "payload": {"id": thread, "cwd": "/p", **payload}}


def _event(kind: str, turn: str | None) -> dict[str, Any]:
    return {"type": "event_msg", "payload": {"type": kind, "turn_id": turn}}


@pytest.fixture
def codex(tmp_path: Path) -> Codex:
    return Codex(tmp_path / ".codex")


def test_what_is_watched(codex: Codex) -> None:
    assert codex.state.watch_dirs() == [codex.root / CAPABILITIES, codex.root / "sessions"]
    assert codex.state.has_registry_dir()
    (codex.root / CAPABILITIES).rmdir()
    assert not codex.state.has_registry_dir()  # no TUI ever ran here


def test_files_are_found_once_then_only_by_their_events(codex: Codex) -> None:
    a = codex.run(tui(10))[0]
    assert codex.facts(a) is None
    codex.attach(THREADS[0], T0 + 5, event=False)  # no event: not looked for
    codex.run(tui(10))
    assert codex.facts(a) is None
    codex.state.poll()  # where there are no events: everything is looked at again
    codex.run(tui(10))
    assert codex.facts(a).native_id == THREADS[0]  # type: ignore[union-attr]
    # Only thread names in the capability directory are attach events.
    codex.attach("notes.txt", T0 + 9)
    codex.run(tui(10))
    assert codex.facts(a).native_id == THREADS[0]  # type: ignore[union-attr]


def test_an_attached_thread_without_a_rollout_is_named_by_the_index(codex: Codex) -> None:
    """Before the first prompt: the capability file's owner, the index's title; a later
    index line without a name keeps it, and an unchanged index is not read again."""
    reads = []
    real_read = codex.state._index.read_new

    def counted(budget: int = 1 << 20) -> Any:
        reads.append(budget)
        return real_read(budget)

    codex.state._index.read_new = counted  # type: ignore[method-assign]
    a = codex.run(tui(10))[0]
    assert reads == []  # no index at all: nothing to read
    codex.attach(THREADS[0], T0 + 5)
    codex.index({"id": THREADS[0], "thread_name": "Fix the login"}, {"id": THREADS[1]})
    codex.run(tui(10))
    facts = codex.facts(a)
    assert facts is not None
    assert (facts.native_id, facts.name, facts.status) == (THREADS[0], "Fix the login", "idle")
    assert facts.owner_uid == os.getuid() and facts.model is None
    count = len(reads)
    codex.run(tui(10))
    assert len(reads) == count  # unchanged: not read
    codex.index({"id": THREADS[0]}, {"id": THREADS[0], "thread_name": 5})
    codex.run(tui(10))
    assert codex.facts(a).name == "Fix the login"  # type: ignore[union-attr]
    assert THREADS[1] not in codex.state._titles  # a thread nobody runs: not kept


def test_a_thread_attached_at_the_horizon_is_kept_and_older_ones_forgotten(
    codex: Codex,
) -> None:
    old = tui(10, T0)
    young = tui(11, T0 + 100)
    codex.attach(THREADS[0], T0 - CLOCK_SLACK_S)  # exactly the horizon: can be its
    codex.rollout(THREADS[0], [_meta(THREADS[0])])
    codex.index({"id": THREADS[0], "thread_name": "Old work"})
    a = codex.run(old)[0]
    facts = codex.facts(a)
    assert facts is not None and facts.native_id == THREADS[0]
    assert facts.owner_uid == os.getuid()
    # The old TUI exits: the horizon moves to the young one's start, and what only the
    # old one could have run is forgotten.
    codex.run(young)
    for known in (
        codex.state._attached,
        codex.state._cap_owner,
        codex.state._rollouts,
        codex.state._titles,
    ):
        assert THREADS[0] not in known
    assert codex.state._bound == {}  # nothing kept of a TUI that is gone


def test_the_host_of_a_rollout_it_holds(codex: Codex) -> None:
    """``codex exec``: its conversation is the rollout it holds open (read though no
    event came for it), the owner the rollout's; files it holds that are no rollout of
    this home are not."""
    start = T0 + 50
    codex.run(host(20, start))
    rollout = codex.rollout(
        THREADS[1],
        [
            _meta(THREADS[1], timestamp="2026-09-21T12:00:00Z"),
            {"type": "turn_context", "payload": {"model": "gpt-6"}},
        ],
        event=False,
    )
    elsewhere = codex.root.parent / "copy" / rollout.name.replace(THREADS[1], THREADS[2])
    elsewhere.parent.mkdir()
    elsewhere.write_text(rollout.read_text())
    index = codex.root / "session_index.jsonl"
    index.write_text("")
    [proc] = codex.run(host(20, start, rollout, elsewhere, index))
    found = codex.state.facts(proc)
    assert isinstance(found, tuple)
    [facts] = found
    assert (facts.native_id, facts.model, facts.owner_uid) == (THREADS[1], "gpt-6", os.getuid())
    assert codex.state.stats.garbage == 0 and codex.state.stats.refused == 0


def test_a_rollout_out_of_the_home_is_never_read(codex: Codex) -> None:
    a = codex.run(tui(10))[0]
    codex.attach(THREADS[0], T0 + 5)
    outside = codex.root.parent / f"rollout-2026-09-21T12-00-00-{THREADS[0]}.jsonl"
    outside.write_text(json.dumps({"type": "turn_context", "payload": {"model": "x"}}) + "\n")
    codex.state.changed(outside)
    codex.run(tui(10))
    facts = codex.facts(a)
    assert facts is not None and facts.model is None
    assert codex.state.stats.refused == 0  # not even tried


def test_overlapping_turns_each_end_on_their_own(codex: Codex) -> None:
    a = codex.run(tui(10))[0]
    codex.attach(THREADS[0], T0 + 5)
    codex.rollout(
        THREADS[0],
        [_meta(THREADS[0]), _event("task_started", "t1"), _event("task_started", "t2")],
    )
    codex.run(tui(10))
    assert codex.facts(a).status == "busy"  # type: ignore[union-attr]
    codex.rollout(THREADS[0], [_event("task_complete", "t1")])
    codex.run(tui(10))
    assert codex.facts(a).status == "busy"  # type: ignore[union-attr]  # t2 runs on
    codex.rollout(THREADS[0], [_event("turn_aborted", "t2")])
    codex.run(tui(10))
    assert codex.facts(a).status == "idle"  # type: ignore[union-attr]
    assert codex.state.stats.garbage == 0  # a plain session_meta (source "cli") included


def test_sub_agents_in_the_order_they_started_both_forms_and_done_without_locks(
    codex: Codex,
) -> None:
    """Sub-agents: named by ``thread_spawn`` (0.90 on) or by a top-level
    ``parent_thread_id`` with ``thread_source: "subagent"`` (later); listed by their
    start (the meta's time, else the record's), read in whatever order; done once no
    turn is open and no writer lock holds them (here: no lock directory at all)."""
    parent = THREADS[0]
    a = codex.run(tui(10))[0]
    codex.attach(parent, T0 + 5)
    codex.rollout(parent, [_meta(parent, source="cli")])
    spawn = {"subagent": {"thread_spawn": {"parent_thread_id": parent, "agent_role": "a"}}}
    codex.rollout(
        THREADS[1],
        [
            _meta(THREADS[1], source=spawn, timestamp="2026-09-21T12:00:10Z"),
            _event("task_started", "x"),
        ],
    )
    codex.run(tui(10))
    later = {"thread_source": "subagent", "parent_thread_id": parent, "agent_nickname": "B"}
    codex.rollout(
        THREADS[2],
        [{"timestamp": "2026-09-21T12:00:05Z", **_meta(THREADS[2], **later)}],
    )
    # A top-level parent without thread_source "subagent" names no parent.
    codex.rollout(THREADS[3], [_meta(THREADS[3], parent_thread_id=parent, thread_source="cli")])
    codex.run(tui(10))
    facts = codex.facts(a)
    assert facts is not None and facts.native_id == parent
    assert [(s.agent_id, s.name, s.done) for s in facts.subagents] == [
        (THREADS[2], "B", True),
        (THREADS[1], "a", False),  # its turn is open
    ]
    assert codex.state.stats.garbage == 0


def _sockets(port: int, accepted: int, listen: bool = True, host: str = "127.0.0.1") -> list:
    found = [TcpSocket("LISTEN", f"{host}:{port}", "0.0.0.0:0")] if listen else []
    found += [TcpSocket("ESTAB", f"{host}:{port}", f"{host}:{50000 + n}") for n in range(accepted)]
    return found


def test_a_thread_goes_to_the_tui_with_a_spare_pair_of_loopback_connections(
    codex: Codex,
) -> None:
    """Two TUIs started long before the attach: only the daemon's connections to a TUI's
    own listening loopback port tell. The other one's connections do not count: accepted
    on a port it no longer listens on, or on a port that is not loopback, or its own
    outgoing ones."""
    a_tcp = _sockets(5000, 2)
    b_tcp = _sockets(6000, 2, listen=False) + _sockets(7000, 2, host="10.0.0.5")
    b_tcp.append(TcpSocket("ESTAB", "127.0.0.1:40000", "127.0.0.1:443"))
    procs = codex.run(tui(10, T0, a_tcp), tui(11, T0 + 1, b_tcp))
    codex.attach(THREADS[0], T0 + 600)
    codex.run(tui(10, T0, a_tcp), tui(11, T0 + 1, b_tcp))
    assert codex.facts(procs[0]).native_id == THREADS[0]  # type: ignore[union-attr]
    assert codex.facts(procs[1]) is None
    assert codex.state.ambiguous == 0
    # Neither has a spare pair now (A's is taken by its loaded thread): ambiguous, counted.
    codex.lock(THREADS[0])
    codex.attach(THREADS[1], T0 + 700)
    codex.run(tui(10, T0, a_tcp), tui(11, T0 + 1, b_tcp))
    assert codex.facts(procs[1]) is None
    assert codex.facts(procs[0]).native_id == THREADS[0]  # type: ignore[union-attr]
    assert codex.state.ambiguous == 1


def test_without_connections_a_first_thread_goes_to_the_tui_just_started(codex: Codex) -> None:
    recs = (tui(10, T0), tui(11, T0 + 100))
    old, young = codex.run(*recs)
    codex.attach(THREADS[0], T0 + 103)  # 3 s after the young one started
    codex.run(*recs)
    assert codex.facts(young).native_id == THREADS[0]  # type: ignore[union-attr]
    assert codex.facts(old) is None


def test_one_tui_asks_for_no_connections(codex: Codex) -> None:
    asked = []
    real_tcp = codex.view.tcp

    def tcp(pid: int) -> list[TcpSocket]:
        asked.append(pid)
        return real_tcp(pid)

    codex.view.tcp = tcp  # type: ignore[method-assign]
    a = codex.run(tui(10))[0]
    for n in range(3):
        codex.attach(THREADS[n], T0 + 5 + n)
    codex.run(tui(10))
    assert codex.facts(a).native_id == THREADS[2]  # type: ignore[union-attr]
    assert asked == []  # one candidate: nothing to tell apart
    recs = (tui(10), tui(11, T0 + 1, _sockets(6000, 2)))
    codex.run(*recs)
    codex.attach(THREADS[3], T0 + 600)
    codex.attach(THREADS[4], T0 + 601)
    codex.run(*recs)
    assert sorted(asked) == [10, 11]  # two: asked once a pass, not once an attach


def test_attaches_before_their_tui_is_seen_wait_for_it_up_to_a_bound(codex: Codex) -> None:
    """A capability written while only a ``codex exec`` runs (no TUI seen yet) is placed
    once its TUI shows up; a thousand such at once are dropped, not kept."""
    exec_rec = host(20, T0)
    codex.run(exec_rec)
    codex.attach(THREADS[0], T0 + 30)
    codex.run(exec_rec)
    recs = (exec_rec, tui(10, T0 + 20))
    a = codex.run(*recs)[1]
    assert codex.facts(a).native_id == THREADS[0]  # type: ignore[union-attr]

    other = Codex(codex.root.parent / "other" / ".codex")
    other.run(exec_rec)
    for n in range(1000):
        other.attach(f"01a22595-0000-7000-9000-{n:012d}", T0 + 30)
    other.run(exec_rec)
    b = other.run(exec_rec, tui(10, T0 + 20))[1]
    assert other.facts(b) is None


def test_the_native_tui_is_the_wrappers_child_only(codex: Codex) -> None:
    """npm's ``node .../codex.js`` runs the native TUI as its child: that child's command
    line says what it is. A codex deeper down (a tool's ``codex exec``) says nothing of
    the wrapper."""
    wrapper = Rec(30, 1, "node", "/usr/bin/node", ["node", "/lib/codex.js"], "/p", T0)
    shell = Rec(31, 30, "bash", "/bin/bash", ["bash"], "/p", T0 + 1)
    deep = Rec(32, 31, "codex", "/usr/local/bin/codex", ["codex", "exec", "x"], "/p", T0 + 2)
    [proc] = codex.run(wrapper, shell, deep)
    assert proc.key in codex.state._tuis and proc.key not in codex.state._hosts


def test_the_owner_is_the_capability_files_when_the_rollout_cannot_be_read(
    codex: Codex,
) -> None:
    a = codex.run(tui(10))[0]
    codex.attach(THREADS[0], T0 + 5)
    target = codex.root.parent / "elsewhere.jsonl"
    target.write_text(json.dumps(_meta(THREADS[0])) + "\n")
    link = codex.day / f"rollout-2026-09-21T12-00-00-{THREADS[0]}.jsonl"
    link.symlink_to(target)  # a link: refused, never followed
    codex.state.changed(link)
    codex.run(tui(10))
    facts = codex.facts(a)
    assert facts is not None and facts.owner_uid == os.getuid()
    assert codex.state.stats.refused >= 1
