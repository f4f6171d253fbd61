"""Sessions and their lifecycle: a state machine with no I/O and an injected clock.

Observations in (the agent processes found by one scan), lifecycle events out:
- a new agent process is a new session, announced ``active``;
- ``active -> idle`` after ``idle_after`` seconds without a sign of work;
- ``idle -> active`` on the first sign of work (today: the process tree's CPU time
  grew faster than ``busy_cpu_ratio`` of wall time);
- ``ended`` exactly once, last, when the process is gone;
- something learned later (today: the signing identity, found in the background) is
  sent once as an update: an event with the current state.

After a restart, :meth:`SessionTracker.restore` hands back the sessions the
database holds; the first observation adopts those whose process still runs
(same pid, same start time: no event) and ends the others, stamped with the last
time quintd saw them alive.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Literal, Protocol

from quintd.identity import process_session_id
from quintd.scanner import AgentProcess

State = Literal["active", "idle", "ended"]
# Why an event exists; not sent. The queue's bound policy keeps "start" and "end" always.
Kind = Literal["start", "transition", "update", "end"]
STATES: tuple[State, ...] = ("active", "idle", "ended")
# Start times read twice can differ by a clock tick, and by more when the wall clock
# was stepped between two reads of the boot time: adopt within this tolerance.
_START_TOLERANCE_MS = 2000
_MIN_BUSY_CPU_S = 0.01


class Clock(Protocol):
    def wall(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def wall(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def format_timestamp(moment: datetime) -> str:
    """ISO 8601, UTC, millisecond precision, with a ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class LifecycleEvent:
    session_id: str
    state: State
    timestamp: datetime
    platform: str | None = None
    session_name: str | None = None
    model: str | None = None
    signing_id: str | None = None
    parent_id: str | None = None
    kind: Kind = field(default="transition", compare=False)

    def wire(self) -> dict[str, object]:
        """Exactly the fields of the ingest contract; optional ones only when known."""
        body: dict[str, object] = {
            "session_id": self.session_id,
            "state": self.state,
            "timestamp": format_timestamp(self.timestamp),
            "parent_id": self.parent_id,
        }
        for key in ("session_name", "model", "signing_id", "platform"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body

    def body(self) -> bytes:
        text = json.dumps(self.wire(), separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "replace")  # never fail on a stray surrogate


@dataclass
class Session:
    session_id: str
    platform: str
    pid: int
    start_time_ms: int
    state: State
    started_at: datetime
    last_seen: datetime
    session_name: str | None = None
    model: str | None = None
    signing_id: str | None = None
    parent_id: str | None = None
    # In-memory only: activity bookkeeping on the monotonic clock.
    cpu_time: float = field(default=0.0, compare=False)
    observed_at: float = field(default=0.0, compare=False)
    quiet_since: float = field(default=0.0, compare=False)

    def event(self, state: State, moment: datetime, kind: Kind = "transition") -> LifecycleEvent:
        return LifecycleEvent(
            session_id=self.session_id,
            state=state,
            timestamp=moment,
            platform=self.platform,
            session_name=self.session_name,
            model=self.model,
            signing_id=self.signing_id,
            parent_id=self.parent_id,
            kind=kind,
        )


@dataclass
class Changes:
    """What one observation changed, for the store to write in one transaction."""

    events: list[LifecycleEvent] = field(default_factory=list)
    upserts: list[Session] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)


def project_name(cwd: str | None) -> str | None:
    if not cwd:
        return None
    name = PurePath(cwd).name
    return name or None


class SessionTracker:
    def __init__(
        self,
        machine_id: str,
        *,
        idle_after: float,
        clock: Clock | None = None,
        busy_cpu_ratio: float = 0.01,
    ) -> None:
        self._machine_id = machine_id
        self.idle_after = idle_after
        self._clock = clock or SystemClock()
        self._busy_cpu_ratio = busy_cpu_ratio
        self._sessions: dict[str, Session] = {}
        self._by_process: dict[tuple[int, int], str] = {}
        self._restored: list[Session] = []

    # -- state ------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: (s.started_at, s.session_id))

    def restore(self, sessions: Iterable[Session]) -> None:
        """Sessions that were live when the daemon last stopped; reconciled by the next
        :meth:`observe`."""
        self._restored = [s for s in sessions if s.state != "ended"]

    def snapshot(self) -> object:
        return copy.deepcopy((self._sessions, self._by_process, self._restored))

    def rollback(self, snapshot: object) -> None:
        """Undo an observation whose changes could not be stored."""
        self._sessions, self._by_process, self._restored = copy.deepcopy(snapshot)  # type: ignore[misc]

    # -- transitions --------------------------------------------------------------

    def observe(self, processes: Sequence[AgentProcess]) -> Changes:
        now = self._clock.wall()
        mono = self._clock.monotonic()
        changes = Changes()
        present: set[str] = set()
        by_pid: dict[int, str] = {}
        for proc in sorted(processes, key=lambda p: (p.start_time, p.pid)):
            session_id = self._by_process.get(proc.key) or self._adopt(proc, mono)
            if session_id is None:
                parent = by_pid.get(proc.parent_pid) if proc.parent_pid is not None else None
                session = self._start(proc, parent, now, mono)
                changes.events.append(session.event("active", now, "start"))
                changes.upserts.append(session)
                session_id = session.session_id
            else:
                self._observe_activity(self._sessions[session_id], proc, now, mono, changes)
            present.add(session_id)
            by_pid[proc.pid] = session_id
        for session in self._restored:  # died while quintd was down
            changes.events.append(session.event("ended", session.last_seen, "end"))
            changes.removals.append(session.session_id)
        self._restored = []
        for session_id in list(self._sessions.keys() - present):
            session = self._sessions.pop(session_id)
            self._by_process.pop((session.pid, session.start_time_ms), None)
            changes.events.append(session.event("ended", now, "end"))
            changes.removals.append(session_id)
        for session_id in present:
            self._sessions[session_id].last_seen = now
        return changes

    def _adopt(self, proc: AgentProcess, mono: float) -> str | None:
        for index, session in enumerate(self._restored):
            if (
                session.platform == proc.platform
                and session.pid == proc.pid
                and abs(session.start_time_ms - proc.start_time_ms) <= _START_TOLERANCE_MS
            ):
                del self._restored[index]
                session.cpu_time = proc.cpu_time
                session.observed_at = mono
                session.quiet_since = mono
                self._sessions[session.session_id] = session
                self._by_process[proc.key] = session.session_id
                return session.session_id
        return None

    def _start(
        self, proc: AgentProcess, parent_id: str | None, now: datetime, mono: float
    ) -> Session:
        session = Session(
            session_id=process_session_id(
                self._machine_id, proc.platform, proc.pid, proc.start_time_ms
            ),
            platform=proc.platform,
            pid=proc.pid,
            start_time_ms=proc.start_time_ms,
            state="active",
            started_at=now,
            last_seen=now,
            session_name=project_name(proc.cwd),
            signing_id=proc.signing_id,
            parent_id=parent_id,
            cpu_time=proc.cpu_time,
            observed_at=mono,
            quiet_since=mono,
        )
        self._sessions[session.session_id] = session
        self._by_process[proc.key] = session.session_id
        return session

    def _observe_activity(
        self, session: Session, proc: AgentProcess, now: datetime, mono: float, changes: Changes
    ) -> None:
        learned = proc.signing_id is not None and proc.signing_id != session.signing_id
        if learned:
            session.signing_id = proc.signing_id
        elapsed = max(mono - session.observed_at, 0.0)
        busy = proc.cpu_time - session.cpu_time > max(
            _MIN_BUSY_CPU_S, self._busy_cpu_ratio * elapsed
        )
        session.cpu_time = proc.cpu_time
        session.observed_at = mono
        if busy:
            session.quiet_since = mono
            if session.state == "idle":
                self._transition(session, "active", now, changes)
                return
        elif session.state == "active" and mono - session.quiet_since >= self.idle_after:
            self._transition(session, "idle", now, changes)
            return
        if learned:  # an update: the current state, carrying what was learned
            self._transition(session, session.state, now, changes, "update")

    @staticmethod
    def _transition(
        session: Session,
        state: State,
        now: datetime,
        changes: Changes,
        kind: Kind = "transition",
    ) -> None:
        session.state = state
        changes.events.append(session.event(state, now, kind))
        changes.upserts.append(session)
