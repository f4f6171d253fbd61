"""The session state machine, driven by observations and a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from quintd.identity import process_session_id
from quintd.model import AgentProcess, LifecycleEvent, format_timestamp
from quintd.tracker import SessionTracker

MACHINE = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def proc(
    pid: int = 100,
    platform: str = "claude-code",
    cpu: float = 0.0,
    parent_pid: int | None = None,
    start: float = 1_700_000_000.0,
    cwd: str | None = "/home/dev/src/shop-api",
) -> AgentProcess:
    return AgentProcess(
        platform=platform,
        pid=pid,
        ppid=1,
        start_time=start,
        user="dev",
        exe="/usr/bin/claude",
        cwd=cwd,
        name="claude",
        matched_by="exe",
        parent_pid=parent_pid,
        cpu_time=cpu,
    )


def tracker(clock: FakeClock, idle_after: float = 60.0) -> SessionTracker:
    return SessionTracker(MACHINE, idle_after=idle_after, clock=clock)


def states(events: list[LifecycleEvent]) -> list[tuple[str, str]]:
    return [(e.platform or "", e.state) for e in events]


def test_new_process_is_active_with_v5_id_and_project_name() -> None:
    clock = FakeClock()
    t = tracker(clock)
    changes = t.observe([proc()])
    [event] = changes.events
    assert event.state == "active"
    assert event.session_id == process_session_id(MACHINE, "claude-code", 100, 1_700_000_000_000)
    assert event.session_name == "shop-api"
    assert event.timestamp == T0
    assert [s.session_id for s in changes.upserts] == [event.session_id]
    assert t.observe([proc()]).events == []  # nothing new


def test_gone_process_ends_exactly_once_at_that_moment() -> None:
    clock = FakeClock()
    t = tracker(clock)
    sid = t.observe([proc()]).events[0].session_id
    clock.advance(5)
    changes = t.observe([])
    assert [(e.session_id, e.state, e.timestamp) for e in changes.events] == [
        (sid, "ended", T0 + timedelta(seconds=5))
    ]
    assert changes.removals == [sid]
    assert t.observe([]).events == []
    assert t.sessions == []


def test_pid_reuse_is_a_new_session() -> None:
    clock = FakeClock()
    t = tracker(clock)
    first = t.observe([proc(start=1000.0)]).events[0].session_id
    clock.advance(1)
    events = t.observe([proc(start=2000.0)]).events
    assert {(e.session_id == first, e.state) for e in events} == {
        (True, "ended"),
        (False, "active"),
    }


def test_idle_after_quiet_and_active_on_cpu_work() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=60)
    t.observe([proc(cpu=1.0)])
    clock.advance(59)
    assert t.observe([proc(cpu=1.0)]).events == []
    clock.advance(1)
    [idle] = t.observe([proc(cpu=1.0)]).events
    assert idle.state == "idle" and idle.timestamp == T0 + timedelta(seconds=60)
    clock.advance(1)
    [active] = t.observe([proc(cpu=1.5)]).events
    assert active.state == "active"
    clock.advance(30)
    assert t.observe([proc(cpu=1.5)]).events == []  # the quiet clock restarted


def test_background_cpu_trickle_is_not_work() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=10)
    cpu = 0.0
    t.observe([proc(cpu=cpu)])
    events: list[LifecycleEvent] = []
    for _ in range(20):
        clock.advance(1)
        cpu += 0.005  # 0.5 % of a core: timers, not work
        events += t.observe([proc(cpu=cpu)]).events
    assert [e.state for e in events] == ["idle"]


def test_child_agent_gets_parent_session_id() -> None:
    clock = FakeClock()
    t = tracker(clock)
    parent = proc(pid=10, platform="codex", start=1000.0)
    child = proc(pid=11, platform="claude-code", parent_pid=10, start=1001.0)
    events = t.observe([child, parent]).events
    by_platform = {e.platform: e for e in events}
    assert by_platform["claude-code"].parent_id == by_platform["codex"].session_id
    assert by_platform["codex"].parent_id is None


def test_restore_adopts_live_sessions_silently_and_ends_dead_ones_at_last_seen() -> None:
    clock = FakeClock()
    first = tracker(clock)
    live, dead = proc(pid=1), proc(pid=2, platform="codex")
    first.observe([live, dead])
    clock.advance(10)
    first.observe([live, dead])  # last seen at T0+10
    saved = first.sessions

    clock.advance(100)  # the daemon was down
    second = tracker(clock)
    second.restore(saved)
    # The restarted OS reading of the start time may differ by a tick.
    changes = second.observe([replace(live, start_time=live.start_time + 0.01)])
    assert [(e.platform, e.state, e.timestamp) for e in changes.events] == [
        ("codex", "ended", T0 + timedelta(seconds=10))
    ]
    assert [s.pid for s in second.sessions] == [1]
    assert second.sessions[0].session_id == saved[0].session_id


def test_an_uncommitted_plan_replays_its_transitions() -> None:
    """A pass whose changes could not be stored is never committed: the next pass finds
    the same transitions again."""
    clock = FakeClock()
    t = tracker(clock)
    first = t.plan([proc()])  # the store failed: not committed
    again = t.observe([proc()])
    assert states(first.events) == states(again.events) == [("claude-code", "active")]


def test_wire_body_has_exactly_the_contract_fields() -> None:
    event = LifecycleEvent(session_id="s", state="active", timestamp=T0, platform="codex")
    assert event.wire() == {
        "session_id": "s",
        "state": "active",
        "timestamp": "2026-11-28T12:00:00.000Z",
        "parent_id": None,
        "platform": "codex",
    }
    assert event.body() == (
        b'{"session_id":"s","state":"active",'
        b'"timestamp":"2026-11-28T12:00:00.000Z","parent_id":null,'
        b'"platform":"codex"}'
    )


def test_timestamp_format() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-01-02T03:04:05.678Z"


# -- sessions from the agents' own state -------------------------------------------------

import itertools  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from quintd.identity import native_session_id  # noqa: E402
from quintd.model import ConversationFacts, SubagentFacts  # noqa: E402


def conv(
    native: str = "c1",
    status: str | None = "idle",
    name: str | None = None,
    model: str | None = None,
    last_write: float | None = None,
    subagents: tuple[SubagentFacts, ...] = (),
) -> ConversationFacts:
    return ConversationFacts(
        native_id=native,
        status=status,
        name=name,  # type: ignore[arg-type]
        model=model,
        last_write=last_write,
        subagents=subagents,
    )


def test_conversation_session_uses_the_native_id_and_learns_name_and_model() -> None:
    clock = FakeClock()
    t = tracker(clock)
    [start] = t.observe([proc()], {100: conv()}).events
    assert start.session_id == native_session_id(MACHINE, "claude-code", "c1")
    assert (start.state, start.session_name, start.model) == ("active", "shop-api", None)
    clock.advance(1)
    [update] = t.observe([proc()], {100: conv(name="Fix auth", model="m1", last_write=1)}).events
    assert (update.kind, update.state, update.session_name, update.model) == (
        "update",
        "active",
        "Fix auth",
        "m1",
    )
    clock.advance(1)
    assert t.observe([proc()], {100: conv(name="Fix auth", model="m1", last_write=1)}).events == []


def test_agent_status_and_transcript_writes_drive_idle_and_active() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=30)
    t.observe([proc(cpu=0)], {100: conv(status="busy")})
    clock.advance(40)
    # Busy says work, however quiet the CPU is.
    assert t.observe([proc(cpu=0)], {100: conv(status="busy")}).events == []
    clock.advance(10)
    assert t.observe([proc(cpu=0)], {100: conv(status="idle")}).events == []
    clock.advance(30)
    # The agent waits and nothing else moves (CPU is ignored when a status exists).
    [idle] = t.observe([proc(cpu=50)], {100: conv(status="idle")}).events
    assert idle.state == "idle"
    clock.advance(1)
    [active] = t.observe([proc(cpu=50)], {100: conv(status="idle", last_write=81)}).events
    assert active.state == "active"


def test_subagents_are_children_that_end_when_done_and_keep_the_parent_busy() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=30)
    parent_id = native_session_id(MACHINE, "claude-code", "c1")
    sub = SubagentFacts(agent_id="a1", name="sub task", last_write=0.0)
    events = t.observe([proc()], {100: conv(status="busy", subagents=(sub,))}).events
    child = next(e for e in events if e.session_id != parent_id)
    assert child.session_id == native_session_id(MACHINE, "claude-code", "c1", "a1")
    assert (child.parent_id, child.session_name, child.state) == (parent_id, "sub task", "active")
    # The parent's own status says idle, but its sub-agent still writes: not idle.
    for step in range(1, 5):
        clock.advance(10)
        running = SubagentFacts(agent_id="a1", name="sub task", last_write=float(step * 10))
        assert t.observe([proc()], {100: conv(status="idle", subagents=(running,))}).events == []
    clock.advance(1)
    done = SubagentFacts(agent_id="a1", name="sub task", done=True, last_write=40.0)
    [ended] = t.observe([proc()], {100: conv(status="idle", subagents=(done,))}).events
    assert (ended.session_id, ended.state) == (child.session_id, "ended")


def test_clear_ends_the_conversation_and_starts_another_under_the_same_process() -> None:
    clock = FakeClock()
    t = tracker(clock)
    t.observe([proc()], {100: conv("c1", subagents=(SubagentFacts("a1"),))})
    clock.advance(1)
    events = t.observe([proc()], {100: conv("c2")}).events
    got = {(e.session_id, e.state) for e in events}
    assert got == {
        (native_session_id(MACHINE, "claude-code", "c2"), "active"),
        (native_session_id(MACHINE, "claude-code", "c1"), "ended"),
        (native_session_id(MACHINE, "claude-code", "c1", "a1"), "ended"),  # with its parent
    }


def test_pending_process_gets_no_session_until_its_state_appears() -> None:
    clock = FakeClock()
    t = tracker(clock)
    assert t.observe([proc()], {}, pending={100}).events == []
    clock.advance(1)
    [start] = t.observe([proc()], {100: conv()}).events
    assert start.session_id == native_session_id(MACHINE, "claude-code", "c1")


def test_restored_conversation_is_adopted_by_its_id() -> None:
    clock = FakeClock()
    first = tracker(clock)
    first.observe([proc()], {100: conv(name="A")})
    saved = first.sessions
    second = tracker(clock)
    second.restore(saved)
    clock.advance(5)
    assert second.observe([proc()], {100: conv(name="A")}).events == []
    assert [s.session_id for s in second.sessions] == [saved[0].session_id]


# -- properties over random observation sequences -----------------------------------------

STEP = st.tuples(
    st.floats(0.0, 50.0),  # time passing before the observation
    st.booleans(),  # process present
    st.sampled_from(["c1", "c2", None]),  # the conversation it runs (None: no state)
    st.sampled_from([None, "busy", "idle", "waiting"]),
    st.booleans(),  # the transcript grew
    st.integers(0, 2),  # CPU seconds used since the last observation
    st.sampled_from([None, "A", "B"]),  # the title
    st.booleans(),  # a sub-agent exists
    st.booleans(),  # ... and is done
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=40), st.sampled_from([5.0, 30.0]))
def test_lifecycle_invariants(steps: list, idle_after: float) -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=idle_after)
    cpu, writes = 0.0, 0.0
    events: list[LifecycleEvent] = []
    quiet_since: dict[str, float] = {}
    for elapsed, present, native, status, wrote, used, title, has_sub, sub_done in steps:
        clock.advance(elapsed)
        cpu += used
        if wrote:
            writes = clock.t
        observed = [proc(cpu=cpu)] if present else []
        facts = {}
        if present and native is not None:
            subs = (SubagentFacts("a1", "sub", sub_done, writes),) if has_sub else ()
            facts = {100: conv(native, status, title, None, writes or None, subs)}
        new = t.observe(observed, facts).events
        for e in new:
            assert e.timestamp == T0 + timedelta(seconds=clock.t)
        events += new
        for e in new:
            # The last time each session was announced working: it may turn idle only
            # idle_after seconds of quiet later.
            if e.state == "active" and e.kind in ("start", "transition"):
                quiet_since[e.session_id] = clock.t
            elif e.state == "idle" and e.kind == "transition":
                assert clock.t - quiet_since[e.session_id] >= idle_after, (e, quiet_since)
    by_session: dict[str, list[LifecycleEvent]] = {}
    for e in events:
        by_session.setdefault(e.session_id, []).append(e)
    for story in by_session.values():
        assert story[0].state == "active" and story[0].kind == "start"  # first: active
        ends = [e for e in story if e.state == "ended"]
        assert len(ends) <= 1  # ended at most once ...
        if ends:
            assert story[-1].state == "ended"  # ... and last: nothing after it
        for before, after in itertools.pairwise(story):
            if after.kind == "transition":
                assert after.state != before.state  # a transition changes the state
            assert after.timestamp >= before.timestamp
    # Every session still tracked is one whose story has not ended, and vice versa.
    live = {s.session_id for s in t.sessions}
    for sid, story in by_session.items():
        assert (story[-1].state != "ended") == (sid in live)
    # With the process gone, everything ends.
    clock.advance(1)
    final = t.observe([], {}).events
    assert {e.session_id for e in final} == live
    assert all(e.state == "ended" for e in final)
    assert t.sessions == []


def test_a_stalled_subagent_does_not_keep_its_parent_busy_forever() -> None:
    clock = FakeClock()
    t = tracker(clock, idle_after=30)
    stalled = SubagentFacts(agent_id="a1", name="sub", last_write=0.0)
    t.observe([proc()], {100: conv(status="idle", subagents=(stalled,))})
    clock.advance(1)
    wrote = SubagentFacts(agent_id="a1", name="sub", last_write=1.0)
    assert t.observe([proc()], {100: conv(status="idle", subagents=(wrote,))}).events == []
    events: list[LifecycleEvent] = []
    for _ in range(4):  # no more writes from it
        clock.advance(10)
        events += t.observe([proc()], {100: conv(status="idle", subagents=(wrote,))}).events
    parent = native_session_id(MACHINE, "claude-code", "c1")
    assert [(e.session_id == parent, e.state) for e in events] == [(True, "idle"), (False, "idle")]
