"""The state machine's finer rules, one test each, driven by observations and a fake clock:
who may claim a conversation, what waits for a signing identity, what a restart adopts,
which ids a session may take, and what each signal does to busy and idle.

Written for the survivors of the mutation run on quintd/tracker.py (tests/bench/mutation.py):
each test pins a rule that a one-token change of the code broke without any test failing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_sessions import MACHINE, FakeClock, conv, proc, tracker

from quintd import tracker as tracker_module
from quintd.identity import native_session_id, process_session_id
from quintd.model import SubagentFacts
from quintd.tracker import SessionTracker, TrackerSettings

START_MS = 1_700_000_000_000  # proc()'s default start time, in ms
DEV, OTHER = 1000, 1001


def native(conv_id: str = "c1", uid: int | None = DEV, resumed: int = 0) -> str:
    return native_session_id(MACHINE, "claude-code", conv_id, None, resumed, uid)


# -- settings ------------------------------------------------------------------------------


def test_idle_after_defaults_to_two_minutes_and_follows_reconfigure() -> None:
    clock = FakeClock()
    t = SessionTracker(MACHINE, clock=clock)
    assert t.idle_after == 120.0
    t.observe([proc()])
    t.reconfigure(TrackerSettings(idle_after=5.0))
    assert t.idle_after == 5.0
    clock.advance(5)
    assert [e.state for e in t.observe([proc()]).events] == ["idle"]


# -- who may claim a conversation ------------------------------------------------------------


def test_another_users_file_cannot_claim_a_conversation() -> None:
    clock = FakeClock()
    t = tracker(clock)
    mine = replace(proc(), uid=DEV)
    foreign = replace(conv(name="SPOOFED"), owner_uid=OTHER)
    [start] = t.observe([mine], {100: foreign}).events
    # A process session (as if no state were read), under the cwd's name.
    assert start.session_id == process_session_id(MACHINE, "claude-code", 100, START_MS)
    assert start.session_name == "shop-api"
    assert t.foreign_claims == 1
    clock.advance(1)
    assert t.observe([mine], {100: foreign}).events == []
    assert t.foreign_claims == 2  # counted every pass, added up


def test_a_conversation_counts_for_its_owner_or_when_an_owner_is_unknown() -> None:
    for uid, owner in ((DEV, DEV), (DEV, None), (None, OTHER)):
        t = tracker(FakeClock())
        facts = replace(conv(name="Fix auth"), owner_uid=owner)
        [start] = t.observe([replace(proc(), uid=uid)], {100: facts}).events
        assert start.session_id == native(uid=uid), (uid, owner)
        assert start.session_name == "Fix auth"
        assert t.foreign_claims == 0


def test_two_processes_naming_one_conversation_leave_it_to_the_oldest() -> None:
    clock = FakeClock()
    t = tracker(clock)
    old, young = (
        replace(proc(pid=100, start=1000.0), uid=DEV),
        replace(proc(pid=101, start=2000.0), uid=DEV),
    )
    events = t.observe([young, old], {100: conv(name="A"), 101: conv(name="B")}).events
    by_id = {e.session_id: e for e in events}
    assert by_id[native()].session_name == "A"
    assert by_id[native()].session_id == native()
    young_sid = process_session_id(MACHINE, "claude-code", 101, 2_000_000)
    assert by_id[young_sid].session_name == "shop-api"
    assert len(events) == 2 and t.foreign_claims == 1
    clock.advance(1)
    # The young one's title never reaches the old one's session: no flip, no update.
    assert t.observe([young, old], {100: conv(name="A"), 101: conv(name="B")}).events == []


# -- the ids a session may take ------------------------------------------------------------


def test_ended_ids_are_remembered_up_to_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "MAX_ENDED_IDS", 3)
    clock = FakeClock()
    t = tracker(clock)
    ended = []
    for pid in range(1, 5):
        ended.append(t.observe([proc(pid=pid)]).events[0].session_id)
        clock.advance(1)
        t.observe([])
    # Exactly the bound, the oldest forgotten first (the set must not grow with history).
    assert list(t._ended) == ended[1:]


def test_a_change_set_planned_before_the_last_commit_is_refused() -> None:
    t = tracker(FakeClock())
    stale = t.plan([proc()])
    t.commit(t.plan([proc()]))
    with pytest.raises(RuntimeError, match="planned before the last commit"):
        t.commit(stale)


def test_an_id_that_ended_before_a_restart_is_not_used_again() -> None:
    clock = FakeClock()
    t = tracker(clock)
    t.restore([], ended=[native("c1", uid=None)])
    [start] = t.observe([proc()], {100: conv()}).events
    assert start.session_id == native("c1", uid=None, resumed=1)


def test_resumed_ids_count_up_one_by_one() -> None:
    clock = FakeClock()
    t = tracker(clock)
    got = []
    for _ in range(3):  # c1, /clear to c2, back to c1 ... (the ended c1 comes back)
        events = t.observe([proc()], {100: conv("c1")}).events
        got.append(next(e.session_id for e in events if e.state == "active"))
        clock.advance(1)
        t.observe([proc()], {100: conv("c2")})
        clock.advance(1)
    assert got == [native("c1", None, r) for r in range(3)]


def test_a_process_declared_dead_and_seen_again_gets_the_next_id() -> None:
    """A restored session whose process was not there is over; should the same process
    appear later (a racing scan), its id is not used again."""
    clock = FakeClock()
    first = tracker(clock)
    sid = first.observe([proc()]).events[0].session_id
    second = tracker(clock)
    second.restore(first.sessions)
    clock.advance(1)
    gone = second.observe([])
    assert [(e.session_id, e.state) for e in gone.events] == [(sid, "ended")]
    assert gone.removals == [sid]
    assert gone.pids == {sid: 100}  # the log line names its process
    clock.advance(1)
    [again] = second.observe([proc()]).events
    assert again.session_id == process_session_id(MACHINE, "claude-code", 100, START_MS, 1)


def test_every_event_names_its_process() -> None:
    t = tracker(FakeClock())
    changes = t.observe([proc(pid=7)], {7: conv()})
    assert changes.pids == {native(uid=None): 7}
    assert changes.uids == {native(uid=None): None}


def test_every_event_names_its_processs_owner() -> None:
    t = tracker(FakeClock())
    changes = t.observe([replace(proc(pid=7), uid=1234)])
    [sid] = changes.pids
    assert changes.uids == {sid: 1234}  # the log line says whose agent it is


# -- what waits for a signing identity -------------------------------------------------------


def test_a_new_agent_and_its_children_wait_for_the_signing_identity() -> None:
    clock = FakeClock()
    t = tracker(clock)
    parent = replace(proc(pid=10, start=1000.0), signing_settled=False)
    child = proc(pid=11, parent_pid=10, start=1001.0)
    assert t.observe([parent, child]).events == []
    clock.advance(1)
    settled = replace(parent, signing_settled=True, signing_id="com.anthropic.claude-code")
    events = t.observe([settled, child]).events
    assert [(e.state, e.parent_id is None) for e in events] == [("active", True), ("active", False)]
    assert events[0].signing_id == "com.anthropic.claude-code"


def test_a_known_session_does_not_wait_for_an_identity_again() -> None:
    """An agent already announced is not held back when its identity is examined again
    (a new binary at the same path): holding it would end its session."""
    clock = FakeClock()
    t = tracker(clock)
    t.observe([proc()])
    clock.advance(1)
    assert t.observe([replace(proc(), signing_settled=False)]).events == []
    # Its conversation, resumed in a new process whose identity is not settled yet.
    t.observe([proc()], {100: conv()})
    clock.advance(1)
    moved = replace(proc(pid=200, start=1_700_000_100.0), signing_settled=False)
    assert t.observe([moved], {200: conv()}).events == []
    assert [s.pid for s in t.sessions] == [200]


def test_a_session_from_before_a_restart_does_not_wait_for_an_identity() -> None:
    clock = FakeClock()
    for facts in ({}, {100: conv()}):
        first = tracker(clock)
        first.observe([proc()], facts)
        second = tracker(clock)
        second.restore(first.sessions)
        clock.advance(1)
        unsettled = replace(proc(), signing_settled=False)
        assert second.observe([unsettled], facts).events == [], facts
        assert [s.session_id for s in second.sessions] == [s.session_id for s in first.sessions]


# -- what a restart adopts ---------------------------------------------------------------------


def test_a_restart_adopts_a_start_time_read_up_to_two_seconds_apart() -> None:
    clock = FakeClock()
    first = tracker(clock)
    sid = first.observe([proc()]).events[0].session_id
    for shift, adopted in ((2.0, True), (2.001, False)):
        second = tracker(clock)
        second.restore(first.sessions)
        events = second.observe([proc(start=1_700_000_000.0 + shift)]).events
        assert (events == []) is adopted, shift
        assert (second.sessions[0].session_id == sid) is adopted


def test_a_restart_adopts_only_the_same_platform() -> None:
    clock = FakeClock()
    first = tracker(clock)
    first.observe([proc()])
    second = tracker(clock)
    second.restore(first.sessions)
    events = second.observe([proc(platform="codex")]).events
    assert sorted(e.state for e in events) == ["active", "ended"]


def test_an_adopted_row_without_an_owner_records_it_silently() -> None:
    clock = FakeClock()
    first = tracker(clock)
    first.observe([proc()])  # uid unknown: a row from before owners were recorded
    second = tracker(clock)
    second.restore(first.sessions)
    changes = second.observe([replace(proc(), uid=DEV)])
    assert changes.events == []
    assert [(s.session_id, s.uid) for s in changes.upserts] == [(first.sessions[0].session_id, DEV)]
    known = tracker(clock)
    known.restore(second.sessions)
    assert known.observe([replace(proc(), uid=DEV)]).upserts == []


@pytest.mark.parametrize("saved_state", ["active", "idle"])
def test_an_adopted_session_measures_work_from_the_restart(saved_state: str) -> None:
    """The CPU time and clocks of the daemon before the restart mean nothing now: the
    adopted session starts counting from the first observation after it."""
    clock = FakeClock()
    first = tracker(clock, idle_after=30)
    first.observe([proc(cpu=1.0)])
    if saved_state == "idle":
        clock.advance(30)
        first.observe([proc(cpu=1.0)])
    saved = first.sessions
    assert saved[0].state == saved_state
    clock.advance(10_000)  # a monotonic clock far from the old daemon's
    second = tracker(clock, idle_after=30)
    second.restore(saved)
    assert second.observe([proc(cpu=500.0)]).events == []  # the process's CPU since boot
    assert second.sessions[0].state_since == clock.t
    clock.advance(29)
    assert second.observe([proc(cpu=500.0)]).events == []  # quiet 29 s since the restart
    clock.advance(1)
    expected = ["idle"] if saved_state == "active" else []
    assert [e.state for e in second.observe([proc(cpu=500.0)]).events] == expected
    clock.advance(1)
    [active] = second.observe([proc(cpu=500.1)]).events  # 0.1 s in 1 s: work
    assert active.state == "active"


# -- a conversation that moves or is taken over -------------------------------------------


def test_a_conversation_resumed_in_another_process_follows_it() -> None:
    clock = FakeClock()
    t = tracker(clock)
    t.observe([proc()], {100: conv()})
    clock.advance(1)
    moved = proc(pid=200, start=1_700_000_100.0)
    t.observe([moved], {200: conv()})
    [session] = t.sessions
    assert (session.pid, session.start_time_ms) == (200, 1_700_000_100_000)
    clock.advance(1)
    assert [e.state for e in t.observe([]).events] == ["ended"]


def test_the_first_conversation_takes_the_process_session_over_and_records_it() -> None:
    clock = FakeClock()
    t = tracker(clock)
    [start] = t.observe([proc()]).events
    clock.advance(1)
    changes = t.observe([proc()], {100: conv()})
    assert changes.events == []  # the same session: nothing to tell the cloud
    assert [(s.session_id, s.native_id) for s in changes.upserts] == [(start.session_id, "c1")]


# -- signals of work ---------------------------------------------------------------------------


def test_a_transcript_that_stopped_growing_is_quiet() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=60)
    t.observe([proc()], {100: conv(last_write=1.0)})
    clock.advance(30)
    assert t.observe([proc()], {100: conv(last_write=1.0)}).events == []
    clock.advance(30)
    assert [e.state for e in t.observe([proc()], {100: conv(last_write=1.0)}).events] == ["idle"]


def test_the_last_write_is_kept_when_a_pass_reads_none() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=60)
    t.observe([proc()], {100: conv(last_write=1.0)})
    clock.advance(10)
    assert t.observe([proc()], {100: conv(last_write=5.0)}).events == []  # grew: work
    clock.advance(20)
    assert t.observe([proc()], {100: conv(last_write=None)}).events == []
    clock.advance(20)
    assert t.observe([proc()], {100: conv(last_write=5.0)}).events == []  # not newer
    clock.advance(20)
    assert [e.state for e in t.observe([proc()], {100: conv(last_write=5.0)}).events] == ["idle"]


def test_a_finished_subagent_writing_is_not_work_for_its_parent() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=30)
    done = SubagentFacts(agent_id="a1", done=True, last_write=0.0)
    t.observe([proc()], {100: conv(subagents=(done,))})
    for step in (10, 20):
        clock.advance(10)
        late = replace(done, last_write=float(step))
        assert t.observe([proc()], {100: conv(subagents=(late,))}).events == []
    clock.advance(10)
    late = replace(done, last_write=30.0)
    assert [e.state for e in t.observe([proc()], {100: conv(subagents=(late,))}).events] == ["idle"]


def test_a_subagent_is_idle_when_its_transcript_stops_whatever_the_cpu() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=30)
    sub = SubagentFacts(agent_id="a1", last_write=1.0)
    child = native_session_id(MACHINE, "claude-code", "c1", "a1")
    t.observe([proc(cpu=0.0)], {100: conv(status="busy", subagents=(sub,))})
    clock.advance(10)
    assert t.observe([proc(cpu=5.0)], {100: conv(status="busy", subagents=(sub,))}).events == []
    clock.advance(20)
    events = t.observe([proc(cpu=10.0)], {100: conv(status="busy", subagents=(sub,))}).events
    assert [(e.session_id, e.state) for e in events] == [(child, "idle")]


def test_a_subagent_takes_the_conversations_model_unless_it_names_its_own() -> None:
    t = tracker(FakeClock())
    own = SubagentFacts(agent_id="a1", model="small")
    inherits = SubagentFacts(agent_id="a2")
    events = t.observe([proc()], {100: conv(model="large", subagents=(own, inherits))}).events
    models = {e.session_id: e.model for e in events}
    assert models[native_session_id(MACHINE, "claude-code", "c1", "a1")] == "small"
    assert models[native_session_id(MACHINE, "claude-code", "c1", "a2")] == "large"


def test_only_the_current_conversation_counts_cpu() -> None:
    """A process running two conversations (the last is its current one): its CPU is work
    for the current one only; the other goes idle."""
    clock = FakeClock()
    t = tracker(clock, idle_after=30)
    both = (conv("old", status=None), conv("new", status=None))
    t.observe([proc(cpu=0.0)], {100: both})
    for cpu in (5.0, 10.0, 15.0):
        clock.advance(10)
        events = t.observe([proc(cpu=cpu)], {100: both}).events
    assert [(e.session_id, e.state) for e in events] == [(native("old", None), "idle")]


def test_cpu_just_at_the_floor_is_not_work() -> None:
    clock = FakeClock()
    settings = TrackerSettings(idle_after=10, busy_cpu_ratio=0.05)
    t = SessionTracker(MACHINE, clock=clock, settings=settings)
    t.observe([proc(cpu=0.0)])
    clock.advance(10)
    assert [e.state for e in t.observe([proc(cpu=0.0)]).events] == ["idle"]
    # Observed again at the same instant (a pass brought forward): no time passed, so
    # the ratio asks nothing, and 10 ms is the floor.
    assert t.observe([proc(cpu=0.01)]).events == []
    [active] = t.observe([proc(cpu=0.03)]).events
    assert active.state == "active"


def test_a_signing_identity_learned_later_is_an_update() -> None:
    clock = FakeClock()
    t = tracker(clock)
    t.observe([proc()])
    clock.advance(1)
    signed = replace(proc(), signing_id="com.anthropic.claude-code")
    [update] = t.observe([signed]).events
    assert (update.kind, update.state, update.signing_id) == (
        "update",
        "active",
        "com.anthropic.claude-code",
    )
    clock.advance(1)
    assert t.observe([signed]).events == []


def test_state_since_moves_with_the_state_only() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=10)
    t.observe([proc()], {100: conv()})
    clock.advance(10)
    t.observe([proc()], {100: conv()})
    assert t.sessions[0].state == "idle" and t.sessions[0].state_since == 10
    clock.advance(5)
    [update] = t.observe([proc()], {100: conv(name="Named")}).events
    assert update.kind == "update"
    assert t.sessions[0].state_since == 10  # still idle since then


def test_each_event_names_its_own_process() -> None:
    t = tracker(FakeClock())
    changes = t.observe([proc(pid=7, start=1000.0), proc(pid=8, start=2000.0)])
    assert sorted(changes.pids.values()) == [7, 8]
    for event in changes.events:
        [session] = [s for s in t.sessions if s.session_id == event.session_id]
        assert changes.pids[event.session_id] == session.pid


def test_a_conversation_resumed_in_a_new_process_across_a_restart_does_not_wait() -> None:
    """Its session is known (by its conversation) even though the process is new: holding
    it for its signing identity would end the conversation."""
    clock = FakeClock()
    first = tracker(clock)
    first.observe([proc()], {100: conv()})
    second = tracker(clock)
    second.restore(first.sessions)
    clock.advance(1)
    moved = replace(proc(pid=200, start=1_700_000_100.0), signing_settled=False)
    assert second.observe([moved], {200: conv()}).events == []
    assert [(s.session_id, s.pid) for s in second.sessions] == [(native(uid=None), 200)]


def test_a_new_conversation_in_a_new_process_waits_although_others_were_restored() -> None:
    clock = FakeClock()
    first = tracker(clock)
    first.observe([proc()], {100: conv("c1")})
    second = tracker(clock)
    second.restore(first.sessions)
    clock.advance(1)
    new = replace(proc(pid=300, start=1_700_000_300.0), signing_settled=False)
    events = second.observe([new], {300: conv("c9")}).events
    assert [(e.session_id, e.state) for e in events] == [(native("c1", None), "ended")]


# -- an agent whose state names no conversation of it: waiting, whatever its CPU ---------


def test_an_agent_waiting_for_its_first_prompt_is_idle_whatever_its_cpu() -> None:
    """Its state directory is there and names no conversation of it (OpenCode, Crush and
    Cline write nothing before the first prompt): it waits. An idle TUI redraws (2-4 % of a
    CPU, seen with OpenCode), which once flipped it active/idle every few seconds."""
    clock = FakeClock()
    t = tracker(clock, idle_after=2.0)
    cpu = 0.0
    seen = [e.state for e in t.observe([proc(cpu=cpu)], waiting={100}).events]
    for _ in range(20):
        clock.advance(1.0)
        cpu += 0.04  # 4 % of a CPU
        seen += [e.state for e in t.observe([proc(cpu=cpu)], waiting={100}).events]
    assert seen == ["active", "idle"]


def test_an_agent_with_no_state_to_read_is_judged_by_its_cpu() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=2.0)
    t.observe([proc(cpu=0.0)])
    clock.advance(3.0)
    assert [e.state for e in t.observe([proc(cpu=0.0)]).events] == ["idle"]
    clock.advance(1.0)
    assert [e.state for e in t.observe([proc(cpu=0.5)]).events] == ["active"]


def test_quitting_after_closing_its_conversation_is_no_work() -> None:
    """Claude Code deletes its registry, Copilot CLI writes session.shutdown, a moment
    before the process exits; the exit's own CPU was sent as an `active` just before the
    `ended`."""
    clock = FakeClock()
    t = tracker(clock, idle_after=2.0)
    t.observe([proc(cpu=0.0)], {100: conv(status="idle")})
    clock.advance(3.0)
    assert [e.state for e in t.observe([proc(cpu=0.0)], {100: conv(status="idle")}).events] == [
        "idle"
    ]
    clock.advance(0.5)
    assert t.observe([proc(cpu=0.4)], waiting={100}).events == []  # closed, quitting: busy CPU
    clock.advance(0.2)
    assert [e.state for e in t.observe([]).events] == ["ended"]


def test_a_conversation_the_agent_closed_ends_and_the_next_one_takes_the_process_over() -> None:
    """Cline's /clear marks its row completed at once and writes the next conversation only
    at the next prompt: the closed one ends then (not at the next prompt), and the process
    goes on as a session of its own, which its next conversation takes over."""
    clock = FakeClock()
    t = tracker(clock, idle_after=2.0)
    [first] = t.observe([proc()], {100: conv("c1", status="idle")}).events
    clock.advance(1.0)
    closed = replace(conv("c1", status="idle"), over=True)
    events = t.observe([proc(cpu=5.0)], {100: closed}).events
    assert [(e.session_id == first.session_id, e.state) for e in events] == [
        (False, "active"),  # the process, waiting for its next conversation
        (True, "ended"),  # the closed conversation, at once
    ]
    waiting = events[0].session_id
    clock.advance(3.0)
    assert [e.state for e in t.observe([proc(cpu=9.0)], {100: closed}).events] == ["idle"]
    clock.advance(1.0)
    events = t.observe([proc(cpu=9.0)], {100: conv("c2", status="busy", name="Next")}).events
    assert [(e.session_id, e.state, e.session_name) for e in events] == [
        (waiting, "active", "Next")  # the next conversation took the process's session
    ]
    clock.advance(1.0)
    assert [(e.session_id, e.state) for e in t.observe([]).events] == [(waiting, "ended")]


def test_one_users_new_sessions_wait_beyond_its_budget_and_none_is_lost() -> None:
    """300 copies of `sleep` named like agents once gave 302 sessions at once; the
    organisation's limit is shared by the fleet. Beyond a user's budget a new session
    waits (held, counted), and is announced as the minute allows; another user's agent is
    announced at once."""
    clock = FakeClock()
    t = SessionTracker(MACHINE, clock=clock, settings=TrackerSettings(new_per_user_per_minute=5))
    flood = [replace(proc(pid=1000 + i, start=1_700_000_000.0 + i), uid=1001) for i in range(8)]
    first = t.observe(flood).events
    assert len(first) == 5 and t.deferred == {1001: 3}
    clock.advance(1.0)
    other = replace(proc(pid=50, start=1_700_000_100.0), uid=1002)
    events = t.observe([*flood, other]).events
    assert [e.session_id for e in events] == [
        process_session_id(MACHINE, "claude-code", 50, 1_700_000_100_000)
    ]
    assert t.deferred == {1001: 3}
    clock.advance(60.0)  # the window moved on: the three are announced now
    later = t.observe([*flood, other]).events
    assert len(later) == 3 and all(e.state == "active" for e in later)
    assert t.deferred == {}


def test_an_agent_that_ends_waiting_its_turn_is_still_announced_with_its_times() -> None:
    """A user floods the budget, then runs a real agent that ends before its turn: it is
    not lost (hiding an agent behind a flood would otherwise work). Its session is
    announced when the budget allows, started when first seen and ended when last seen;
    one still running when its turn comes starts when first seen too."""
    clock = FakeClock()
    t = SessionTracker(MACHINE, clock=clock, settings=TrackerSettings(new_per_user_per_minute=2))
    flood = [replace(proc(pid=2000 + i, start=1_700_000_000.0 + i), uid=1001) for i in range(2)]
    real = replace(proc(pid=3000, start=1_700_000_010.0), uid=1001)
    later = replace(proc(pid=3001, start=1_700_000_011.0), uid=1001)
    assert len(t.observe([*flood, real, later]).events) == 2
    first_seen = clock.wall()
    assert t.queued == 2
    clock.advance(5.0)
    t.observe([*flood, real, later])
    last_seen = clock.wall()
    clock.advance(5.0)
    assert t.observe([*flood, later]).events == []  # the real one ended, before its turn
    assert t.queued == 2
    clock.advance(60.0)
    events = t.observe([*flood, later]).events
    ended_first = process_session_id(MACHINE, "claude-code", 3000, 1_700_000_010_000)
    waited = process_session_id(MACHINE, "claude-code", 3001, 1_700_000_011_000)
    assert [(e.session_id, e.state, e.timestamp) for e in events] == [
        (ended_first, "active", first_seen),
        (ended_first, "ended", last_seen),
        (waited, "active", first_seen),
    ]
    assert t.queued == 0 and t.overflow == 0
    clock.advance(1.0)
    assert t.observe([*flood, later]).events == []  # announced once


def test_the_queue_of_waiting_agents_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "MAX_QUEUED", 3)
    t = SessionTracker(
        MACHINE, clock=FakeClock(), settings=TrackerSettings(new_per_user_per_minute=1)
    )
    flood = [replace(proc(pid=4000 + i, start=1_700_000_000.0 + i), uid=1001) for i in range(6)]
    assert len(t.observe(flood).events) == 1
    assert t.queued == 3 and t.overflow == 2 and t.deferred == {1001: 5}
