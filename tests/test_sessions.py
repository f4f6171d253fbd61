"""The session state machine, driven by observations and a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from quintd.identity import process_session_id
from quintd.scanner import AgentProcess
from quintd.sessions import LifecycleEvent, SessionTracker, format_timestamp

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


def test_rollback_replays_transitions() -> None:
    clock = FakeClock()
    t = tracker(clock)
    snapshot = t.snapshot()
    first = t.observe([proc()])
    t.rollback(snapshot)
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
