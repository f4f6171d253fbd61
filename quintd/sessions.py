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
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Literal, Protocol

from quintd.identity import native_session_id, process_session_id
from quintd.scanner import AgentProcess

State = Literal["active", "idle", "ended"]
# Why an event exists; not sent. The queue's bound policy keeps "start" and "end" always.
Kind = Literal["start", "transition", "update", "end"]
STATES: tuple[State, ...] = ("active", "idle", "ended")
# Start times read twice can differ by a clock tick, and by more when the wall clock
# was stepped between two reads of the boot time: adopt within this tolerance.
_START_TOLERANCE_MS = 2000
_MIN_BUSY_CPU_S = 0.01
_MAX_ENDED_IDS = 100_000


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
    native_id: str | None = None  # the agent's own conversation id, if the session is one
    # In-memory only: activity bookkeeping on the monotonic clock.
    last_write: float | None = field(default=None, compare=False)
    sub_last_write: float | None = field(default=None, compare=False)
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


Status = Literal["busy", "idle", "waiting"]


@dataclass(frozen=True)
class SubagentFacts:
    """A sub-agent of a conversation, as the agent's own files describe it."""

    agent_id: str
    name: str | None = None
    done: bool = False  # its result is in the parent's transcript
    last_write: float | None = None  # monotonic time its transcript last grew


@dataclass(frozen=True)
class ConversationFacts:
    """What an agent's own state says about the conversation a process runs now."""

    native_id: str
    status: Status | None = None  # the agent's own busy/idle/waiting, if it records one
    name: str | None = None
    model: str | None = None
    last_write: float | None = None  # monotonic time the transcript last grew
    subagents: tuple[SubagentFacts, ...] = ()


class SessionTracker:
    """Sessions from observations. A process whose agent records its own conversation
    (``facts``) is that conversation's session, and its sub-agents are child sessions;
    any other agent process is a session of its own."""

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
        self._by_process: dict[tuple[int, int], str] = {}  # process-level sessions
        self._restored: dict[str, Session] = {}
        # Ids that have ended (and so may never be used again), oldest first.
        self._ended: dict[str, None] = {}

    # -- state ------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: (s.started_at, s.session_id))

    def restore(self, sessions: Iterable[Session], ended: Iterable[str] = ()) -> None:
        """Sessions that were live when the daemon last stopped, reconciled by the next
        :meth:`observe`; and the ids that have ended, never to be used again."""
        self._restored = {s.session_id: s for s in sessions if s.state != "ended"}
        self._ended = dict.fromkeys(ended)

    def snapshot(self) -> object:
        return copy.deepcopy((self._sessions, self._by_process, self._restored, self._ended))

    def rollback(self, snapshot: object) -> None:
        """Undo an observation whose changes could not be stored."""
        (self._sessions, self._by_process, self._restored, self._ended) = copy.deepcopy(  # type: ignore[misc]
            snapshot
        )

    # -- transitions --------------------------------------------------------------

    def observe(
        self,
        processes: Sequence[AgentProcess],
        facts: Mapping[int, ConversationFacts] | None = None,
        pending: Set[int] = frozenset(),
    ) -> Changes:
        """One observation. ``facts``: the conversation each process runs, by pid, for
        agents whose state could be read. ``pending``: pids whose agent state may still
        appear (a young process): no session is started for them yet."""
        facts = facts or {}
        now = self._clock.wall()
        mono = self._clock.monotonic()
        changes = Changes()
        present: set[str] = set()
        by_pid: dict[int, str] = {}
        for proc in sorted(processes, key=lambda p: (p.start_time, p.pid)):
            parent = by_pid.get(proc.parent_pid) if proc.parent_pid is not None else None
            conversation = facts.get(proc.pid)
            if conversation is not None:
                sid = self._conversation(proc, conversation, parent, now, mono, changes)
                for sub in conversation.subagents:
                    if not sub.done:
                        present.add(
                            self._subagent(proc, conversation, sid, sub, now, mono, changes)
                        )
            else:
                found = self._find_process_session(proc, mono)
                if found is None and proc.pid in pending:
                    continue  # its own state should name it soon
                sid = found or self._start_process_session(proc, parent, now, mono, changes)
                if found is not None:
                    self._observe_activity(self._sessions[sid], proc, None, now, mono, changes)
            present.add(sid)
            by_pid[proc.pid] = sid
        for session in self._restored.values():  # died while quintd was down
            changes.events.append(session.event("ended", session.last_seen, "end"))
            changes.removals.append(session.session_id)
            self._ended[session.session_id] = None
        self._restored = {}
        for sid in list(self._sessions.keys() - present):
            session = self._sessions.pop(sid)
            self._by_process.pop((session.pid, session.start_time_ms), None)
            changes.events.append(session.event("ended", now, "end"))
            changes.removals.append(sid)
            self._ended[sid] = None
        while len(self._ended) > _MAX_ENDED_IDS:
            del self._ended[next(iter(self._ended))]
        for sid in present:
            self._sessions[sid].last_seen = now
        return changes

    def _find_process_session(self, proc: AgentProcess, mono: float) -> str | None:
        sid = self._by_process.get(proc.key)
        if sid is not None and sid in self._sessions:
            return sid
        for candidate in list(self._restored.values()):
            if (
                candidate.native_id is None
                and candidate.platform == proc.platform
                and candidate.pid == proc.pid
                and abs(candidate.start_time_ms - proc.start_time_ms) <= _START_TOLERANCE_MS
            ):
                self._adopt(candidate, proc, mono)
                self._by_process[proc.key] = candidate.session_id
                return candidate.session_id
        return None

    def _existing(self, sid: str, proc: AgentProcess, mono: float) -> Session | None:
        """The live session with this id, or one from before the restart (adopted)."""
        session = self._sessions.get(sid)
        if session is None and sid in self._restored:
            session = self._restored[sid]
            self._adopt(session, proc, mono)
        return session

    def _adopt(self, session: Session, proc: AgentProcess, mono: float) -> None:
        """A session from before the restart whose agent still runs: no event."""
        del self._restored[session.session_id]
        session.cpu_time = proc.cpu_time
        session.observed_at = mono
        session.quiet_since = mono
        self._sessions[session.session_id] = session

    def _new_session(
        self,
        sid: str,
        proc: AgentProcess,
        parent_id: str | None,
        now: datetime,
        mono: float,
        changes: Changes,
        *,
        name: str | None,
        model: str | None = None,
        native_id: str | None = None,
    ) -> Session:
        session = Session(
            session_id=sid,
            platform=proc.platform,
            pid=proc.pid,
            start_time_ms=proc.start_time_ms,
            state="active",
            started_at=now,
            last_seen=now,
            session_name=name,
            model=model,
            signing_id=proc.signing_id,
            parent_id=parent_id,
            native_id=native_id,
            cpu_time=proc.cpu_time,
            observed_at=mono,
            quiet_since=mono,
        )
        self._sessions[sid] = session
        changes.events.append(session.event("active", now, "start"))
        changes.upserts.append(session)
        return session

    def _start_process_session(
        self,
        proc: AgentProcess,
        parent_id: str | None,
        now: datetime,
        mono: float,
        changes: Changes,
    ) -> str:
        resumed = 0
        while True:
            sid = process_session_id(
                self._machine_id, proc.platform, proc.pid, proc.start_time_ms, resumed
            )
            if sid not in self._ended:
                break
            resumed += 1
        self._new_session(sid, proc, parent_id, now, mono, changes, name=project_name(proc.cwd))
        self._by_process[proc.key] = sid
        return sid

    def _live_id(self, platform: str, native_id: str, agent_id: str | None = None) -> str:
        """The id for a conversation (or sub-agent) now: its own, or, if that session has
        ended and the conversation came back, the next unused resumed id."""
        resumed = 0
        while True:
            sid = native_session_id(self._machine_id, platform, native_id, agent_id, resumed)
            if sid not in self._ended:
                return sid
            resumed += 1

    def _conversation(
        self,
        proc: AgentProcess,
        conv: ConversationFacts,
        parent_id: str | None,
        now: datetime,
        mono: float,
        changes: Changes,
    ) -> str:
        sid = self._live_id(proc.platform, conv.native_id)
        session = self._existing(sid, proc, mono)
        if session is None:
            session = self._new_session(
                sid,
                proc,
                parent_id,
                now,
                mono,
                changes,
                name=conv.name or project_name(proc.cwd),
                model=conv.model,
                native_id=conv.native_id,
            )
            session.last_write = conv.last_write
            return sid
        session.pid = proc.pid  # a resumed conversation may run in a new process
        session.start_time_ms = proc.start_time_ms
        # A running sub-agent's transcript growing is work for its parent too.
        sub_write = max(
            (
                sub.last_write
                for sub in conv.subagents
                if not sub.done and sub.last_write is not None
            ),
            default=None,
        )
        work = (
            conv.status == "busy"
            or _newer(conv.last_write, session.last_write)
            or _newer(sub_write, session.sub_last_write)
        )
        session.last_write = _latest(conv.last_write, session.last_write)
        session.sub_last_write = _latest(sub_write, session.sub_last_write)
        signals = _Signals(work=work, use_cpu=conv.status is None, name=conv.name, model=conv.model)
        self._observe_activity(session, proc, signals, now, mono, changes)
        return sid

    def _subagent(
        self,
        proc: AgentProcess,
        conv: ConversationFacts,
        parent_sid: str,
        sub: SubagentFacts,
        now: datetime,
        mono: float,
        changes: Changes,
    ) -> str:
        sid = self._live_id(proc.platform, conv.native_id, sub.agent_id)
        session = self._existing(sid, proc, mono)
        if session is None:
            session = self._new_session(
                sid,
                proc,
                parent_sid,
                now,
                mono,
                changes,
                name=sub.name,
                model=conv.model,
                native_id=f"{conv.native_id}:agent:{sub.agent_id}",
            )
            session.last_write = sub.last_write
            return sid
        work = _newer(sub.last_write, session.last_write)
        session.last_write = _latest(sub.last_write, session.last_write)
        signals = _Signals(work=work, use_cpu=False, name=sub.name, model=None)
        self._observe_activity(session, proc, signals, now, mono, changes)
        return sid

    def _observe_activity(
        self,
        session: Session,
        proc: AgentProcess,
        signals: _Signals | None,
        now: datetime,
        mono: float,
        changes: Changes,
    ) -> None:
        """Signs of work, quiet time, and what was learned (one update event for it)."""
        learned = False
        if proc.signing_id is not None and proc.signing_id != session.signing_id:
            session.signing_id = proc.signing_id
            learned = True
        if signals is not None:
            if signals.name and signals.name != session.session_name:
                session.session_name = signals.name
                learned = True
            if signals.model and signals.model != session.model:
                session.model = signals.model
                learned = True
        elapsed = max(mono - session.observed_at, 0.0)
        cpu_busy = proc.cpu_time - session.cpu_time > max(
            _MIN_BUSY_CPU_S, self._busy_cpu_ratio * elapsed
        )
        session.cpu_time = proc.cpu_time
        session.observed_at = mono
        busy = signals.work or (signals.use_cpu and cpu_busy) if signals else cpu_busy
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


@dataclass(frozen=True)
class _Signals:
    work: bool  # a sign of work from the agent's own state
    use_cpu: bool  # no status recorded: CPU time counts too
    name: str | None
    model: str | None


def _newer(value: float | None, than: float | None) -> bool:
    return value is not None and (than is None or value > than)


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
