"""The session tracker: a state machine with no I/O and an injected clock.

Observations in (the agent processes found by one scan, and what their agents' own
state says), lifecycle events out:
- a new agent process is a new session, announced ``active``;
- ``active -> idle`` after ``idle_after`` seconds without a sign of work;
- ``idle -> active`` on the first sign of work (the agent's own status, its transcript
  growing, or the process tree's CPU time growing faster than ``busy_cpu_ratio`` of wall
  time where the agent records no status);
- ``ended`` exactly once, last, when the process is gone or the conversation replaced;
- something learned later (a name, a model, the signing identity) is sent once as an
  update: an event with the current state.

One observation is two steps. :meth:`SessionTracker.plan` computes the change set without
touching the tracker (sessions it changes are copied, a handful per pass: never the
history); :meth:`SessionTracker.commit` installs it once the store has written it. A failed
write leaves the tracker as it was, so the next pass finds the same transitions again.

After a restart, :meth:`SessionTracker.restore` hands back the sessions the database
holds; the first observation adopts those whose process still runs (same pid, same start
time: no event) and ends the others, stamped with the last time quintd saw them alive.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import PurePath

from quintd.identity import native_session_id, process_session_id
from quintd.model import (
    AgentProcess,
    Clock,
    ConversationFacts,
    Kind,
    LifecycleEvent,
    Session,
    State,
    SubagentFacts,
    SystemClock,
    clean_text,
)
from quintd.part_settings import PartSettings, setting

# Start times read twice can differ by a clock tick, and by more when the wall clock
# was stepped between two reads of the boot time: adopt within this tolerance.
_START_TOLERANCE_MS = 2000
_MIN_BUSY_CPU_S = 0.01
MAX_ENDED_IDS = 100_000
ANNOUNCE_WINDOW_S = 60.0  # the per-user budget of new sessions counts over this window
# Agents waiting their turn (their user's budget spent), over every user, remembered so
# that one that ends before its turn is still announced. Beyond this many, one waiting is
# not remembered (``Changes.overflow``): if it ends before its turn, nothing tells of it.
MAX_QUEUED = 10_000


@dataclass(frozen=True)
class Queued:
    """An agent process held back by its user's announcement budget: when it was first
    and last seen, and whether it has ended (then it is announced, started and ended with
    those times, when its turn comes)."""

    proc: AgentProcess
    first_seen: datetime
    last_seen: datetime
    gone: bool = False


class TrackerSettings(PartSettings):
    idle_after: float = setting(
        120.0,
        file="sessions.idle_after",
        gt=0,
        doc="Seconds without a sign of work before a session turns `idle`.",
    )
    busy_cpu_ratio: float = setting(
        0.01, gt=0, doc="CPU time over wall time that counts as work (where no status is recorded)."
    )
    new_per_user_per_minute: int = setting(
        60,
        file="sessions.new_per_user_per_minute",
        ge=1,
        le=100_000,
        doc="New sessions one user's agents may announce in a minute (1 to 100000). Beyond it "
        "a new session waits its turn, held and counted (`scan.deferred_sessions`), logged "
        "once a minute per user, and is announced as the minute allows, stamped with the time "
        "it was first seen; one that ends while waiting is still announced, started and ended "
        "(see the threat model).",
    )


@dataclass
class Changes:
    """What one observation changes: the events and session rows for the store to write
    in one transaction, and the tracker's next state for :meth:`SessionTracker.commit`."""

    events: list[LifecycleEvent] = field(default_factory=list)
    upserts: list[Session] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)
    # Conversations ignored because another user owns the file that names them.
    foreign_claims: int = 0
    # New sessions this pass, by owner, for the announcement budget (monotonic times).
    announced: list[tuple[int | None, float]] = field(default_factory=list)
    # Sessions held back this pass because their user's announcement budget was spent.
    deferred: dict[int | None, int] = field(default_factory=dict)
    # Agents held back this pass that the queue had no room to remember (see MAX_QUEUED).
    overflow: int = 0
    pids: dict[str, int] = field(default_factory=dict)  # the process of each event's session
    uids: dict[str, int | None] = field(default_factory=dict)  # and its owner (for the log)
    # The tracker's state after this observation (installed by commit).
    next_sessions: dict[str, Session] = field(default_factory=dict, repr=False)
    next_by_process: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)
    newly_ended: list[str] = field(default_factory=list, repr=False)
    next_queue: dict[tuple[int, int], Queued] = field(default_factory=dict, repr=False)
    base_generation: int = field(default=-1, repr=False)


def project_name(cwd: str | None) -> str | None:
    if not cwd:
        return None
    return clean_text(PurePath(cwd).name)


# A conversation (or sub-agent) as the tracker keys it: platform, owner uid, native id.
NativeKey = tuple[str, int | None, str]


class _Pass:
    """The working state of one observation: copies of the sessions it touches, never the
    tracker's own objects."""

    def __init__(self, tracker: SessionTracker) -> None:
        self.tracker = tracker
        self.sessions: dict[str, Session] = {}  # touched this pass: copies
        self.by_process: dict[tuple[int, int], str] = {}  # this pass's process -> session
        self.by_native: dict[NativeKey, str] = {}  # conversations started or adopted
        self.adopted: set[str] = set()  # restored sessions taken over
        self.ended: dict[str, None] = {}  # ids ended by this pass
        self.announced: dict[int | None, int] = {}  # new sessions this pass, by owner
        self.deferred: dict[tuple[int, int], AgentProcess] = {}  # held back this pass
        self.changes = Changes()

    def session(self, sid: str | None) -> Session | None:
        """The working copy of a live session (copied on first touch)."""
        if sid is None:
            return None
        found = self.sessions.get(sid)
        if found is None:
            live = self.tracker._sessions.get(sid)
            if live is not None and sid not in self.ended:
                found = self.sessions[sid] = copy.copy(live)
        return found

    def is_ended(self, sid: str) -> bool:
        return sid in self.ended or sid in self.tracker._ended

    def restored(self) -> list[Session]:
        return [s for sid, s in self.tracker._restored.items() if sid not in self.adopted]


def _conversations(
    found: ConversationFacts | Sequence[ConversationFacts] | None,
) -> tuple[ConversationFacts, ...]:
    if found is None:
        return ()
    if isinstance(found, ConversationFacts):
        return (found,)
    return tuple(found)


class SessionTracker:
    """Sessions from observations. A process whose agent records its own conversations
    (``facts``) runs those conversations' sessions, and their sub-agents are child
    sessions; any other agent process is a session of its own.

    One conversation is one session from its first event: a process is announced before
    its agent has written any state, so the process's first conversation takes over the
    id the process was announced under (the session row records which conversation took
    it, so a restart keeps it); later conversations of the process get ids of their own."""

    def __init__(
        self,
        machine_id: str,
        *,
        idle_after: float | None = None,
        clock: Clock | None = None,
        busy_cpu_ratio: float = 0.01,
        settings: TrackerSettings | None = None,
    ) -> None:
        self._machine_id = machine_id
        if settings is None:
            settings = TrackerSettings(
                idle_after=120.0 if idle_after is None else idle_after,
                busy_cpu_ratio=busy_cpu_ratio,
            )
        self.settings = settings
        self._clock = clock or SystemClock()
        self._sessions: dict[str, Session] = {}
        self._by_process: dict[tuple[int, int], str] = {}  # a process's current session
        self._by_native: dict[NativeKey, str] = {}  # live conversations and sub-agents
        self._restored: dict[str, Session] = {}
        # Announcements of the last minute, by owner (monotonic times): the per-user budget.
        self._announced: dict[int | None, collections.deque[float]] = {}
        self.deferred: dict[int | None, int] = {}  # the last pass's held-back sessions
        # Agents waiting their turn, in the order they came (see Queued).
        self._queue: dict[tuple[int, int], Queued] = {}
        self.overflow = 0  # the last pass's agents waiting unremembered (queue full)
        # Ids that have ended (and so may never be used again), oldest first.
        self._ended: dict[str, None] = {}
        self._generation = 0  # bumped by every commit: a stale plan cannot be committed
        self.foreign_claims = 0  # conversations another user's files claimed (ignored)

    def reconfigure(self, settings: TrackerSettings) -> None:
        self.settings = settings

    @property
    def idle_after(self) -> float:
        return self.settings.idle_after

    # -- state ------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        """The live sessions. They are never changed in place (a pass works on copies),
        so the list may be handed to another thread as it is."""
        return sorted(self._sessions.values(), key=lambda s: (s.started_at, s.session_id))

    def restore(self, sessions: Iterable[Session], ended: Iterable[str] = ()) -> None:
        """Sessions that were live when the daemon last stopped, reconciled by the next
        observation; and the ids that have ended, never to be used again."""
        self._restored = {s.session_id: s for s in sessions if s.state != "ended"}
        self._ended = dict.fromkeys(ended)

    # -- one observation ------------------------------------------------------------

    def observe(
        self,
        processes: Sequence[AgentProcess],
        facts: Mapping[int, ConversationFacts | Sequence[ConversationFacts]] | None = None,
        pending: Set[int] = frozenset(),
        waiting: Set[int] = frozenset(),
    ) -> Changes:
        """:meth:`plan` and :meth:`commit` at once (nothing to store in between)."""
        changes = self.plan(processes, facts, pending, waiting)
        self.commit(changes)
        return changes

    def commit(self, changes: Changes) -> None:
        """Install a planned change set (after the store wrote it)."""
        if changes.base_generation != self._generation:
            raise RuntimeError("a change set planned before the last commit cannot be committed")
        self._sessions = changes.next_sessions
        self._by_process = changes.next_by_process
        self._by_native = {
            (s.platform, s.uid, s.native_id): sid
            for sid, s in self._sessions.items()
            if s.native_id is not None
        }
        self._restored = {}
        for sid in changes.newly_ended:
            self._ended[sid] = None
        while len(self._ended) > MAX_ENDED_IDS:
            del self._ended[next(iter(self._ended))]
        self.foreign_claims += changes.foreign_claims
        for uid, moment in changes.announced:
            self._announced.setdefault(uid, collections.deque()).append(moment)
        self.deferred = changes.deferred
        self._queue = changes.next_queue
        self.overflow = changes.overflow
        self._generation += 1

    @property
    def queued(self) -> int:
        """Agents waiting their turn (running, or ended before it came)."""
        return len(self._queue)

    def plan(
        self,
        processes: Sequence[AgentProcess],
        facts: Mapping[int, ConversationFacts | Sequence[ConversationFacts]] | None = None,
        pending: Set[int] = frozenset(),
        waiting: Set[int] = frozenset(),
    ) -> Changes:
        """The change set of one observation, without changing the tracker. ``facts``:
        the conversations each process runs (oldest first; the last is its current one),
        by pid, for agents whose state could be read. ``pending``: pids whose agent state
        may still appear (a young process): no session is started for them yet.
        ``waiting``: pids whose agent's state names no conversation of them: they wait
        (their CPU is no sign of work)."""
        facts = facts or {}
        now = self._clock.wall()
        mono = self._clock.monotonic()
        work = _Pass(self)
        changes = work.changes
        present: set[str] = set()
        by_pid: dict[int, str] = {}
        held: set[int] = set()  # new agents whose first event waits (for its identity)
        claimed: dict[NativeKey, int] = {}  # conversation -> the process running it
        alive = {p.key for p in processes}
        # First the agents that ended waiting their turn (they came first): each is
        # announced, started and ended, as its user's budget allows.
        next_queue: dict[tuple[int, int], Queued] = {}
        for key, queued in self._queue.items():
            if key in alive and not queued.gone:
                continue  # still running: the pass below decides
            if self._may_announce(work, queued.proc.uid, mono):
                self._announce_ended(work, queued, mono)
            else:
                next_queue[key] = replace(queued, gone=True)
        for proc in sorted(processes, key=lambda p: (p.start_time, p.pid)):
            parent = by_pid.get(proc.parent_pid) if proc.parent_pid is not None else None
            convs = self._owned(work, proc, _conversations(facts.get(proc.pid)))
            # One conversation, one process: a second process naming the same conversation
            # (the oldest keeps it) would make its name and state flip every pass.
            unique = tuple(
                c
                for c in convs
                if claimed.setdefault((proc.platform, proc.uid, c.native_id), proc.pid) == proc.pid
            )
            work.changes.foreign_claims += len(convs) - len(unique)
            closed = {c.native_id for c in unique if c.over}
            convs = tuple(c for c in unique if not c.over)
            known = self._known(proc, convs)
            if (not proc.signing_settled or proc.parent_pid in held) and not known:
                # A new session's first event carries its signing identity: wait for it
                # (the scanner gives up after a while); a child waits for its parent.
                held.add(proc.pid)
                continue
            if not known and not self._may_announce(work, proc.uid, mono):
                held.add(proc.pid)  # its user's budget is spent: it waits its turn
                work.deferred[proc.key] = proc
                continue
            if convs:
                taken: str | None = None
                for index, conv in enumerate(convs):
                    current = index == len(convs) - 1
                    found_sid = self._conversation(work, proc, conv, parent, now, mono, current)
                    if found_sid is None:
                        continue  # its user's budget is spent: it waits its turn
                    sid = taken = found_sid
                    present.add(sid)
                    for sub in conv.subagents:
                        if not sub.done:
                            sub_sid = self._subagent(work, proc, conv, sid, sub, now, mono)
                            if sub_sid is not None:
                                present.add(sub_sid)
                        else:
                            self._last_word(work, proc, conv, sub)
                if taken is None:
                    # Every conversation of it waits its turn: the session it had goes on
                    # meanwhile, or, if it had none, it waits as a whole.
                    before = self._find_process_session(work, proc, mono)
                    if before is None:
                        held.add(proc.pid)
                        work.deferred[proc.key] = proc
                        continue
                    sid = before
                    present.add(sid)
            else:
                found = self._find_process_session(work, proc, mono)
                running = work.session(found) if found is not None else None
                if running is not None and running.native_id in closed:
                    # Its conversation was closed (it ends): the process goes on, a session
                    # of its own until its next conversation takes it over.
                    found = None
                if found is None and proc.pid in pending:
                    continue  # its own state should name it soon
                sid = found or self._start_process_session(work, proc, parent, now, mono)
                if found is not None:
                    session = work.session(sid)
                    assert session is not None
                    # Its agent's state names no conversation of it (yet, or any more): it
                    # waits. Where there is no state to read, the CPU is all there is.
                    signals = _WAITING if proc.pid in waiting or closed else None
                    self._observe_activity(work, session, proc, signals, now, mono)
                present.add(sid)
            work.by_process[proc.key] = sid
            by_pid[proc.pid] = sid
        for session in work.restored():  # died while quintd was down
            changes.events.append(session.event("ended", session.last_seen, "end"))
            changes.removals.append(session.session_id)
            work.ended[session.session_id] = None
        for key, proc in work.deferred.items():
            waited = self._queue.get(key)
            if waited is not None:
                next_queue[key] = replace(waited, proc=proc, last_seen=now)
            elif len(next_queue) < MAX_QUEUED:
                next_queue[key] = Queued(proc, now, now)
            else:
                changes.overflow += 1
        changes.next_queue = next_queue
        for sid in sorted((self._sessions.keys() | work.sessions.keys()) - present):
            if sid in work.ended:
                continue  # announced and ended already (an agent that ended waiting)
            session = work.session(sid)
            if session is None:
                continue
            changes.events.append(session.event("ended", now, "end"))
            changes.removals.append(sid)
            work.ended[sid] = None
        next_sessions: dict[str, Session] = {}
        for sid in present:
            session = work.session(sid)
            assert session is not None
            session.last_seen = now
            next_sessions[sid] = session
        changes.next_sessions = next_sessions
        changes.next_by_process = {
            key: sid
            for key, sid in (*self._by_process.items(), *work.by_process.items())
            if sid in next_sessions
        }
        changes.newly_ended = list(work.ended)
        changes.base_generation = self._generation
        for event in changes.events:
            session = work.sessions.get(event.session_id) or self._restored.get(event.session_id)
            if session is not None:
                changes.pids[event.session_id] = session.pid
                changes.uids[event.session_id] = session.uid
        return changes

    # -- finding and starting sessions ------------------------------------------------

    @staticmethod
    def _owned(
        work: _Pass, proc: AgentProcess, convs: tuple[ConversationFacts, ...]
    ) -> tuple[ConversationFacts, ...]:
        """A conversation id counts only for processes of the user who owns the file
        naming it: another user's file cannot claim (and so rename or end) it."""
        kept = tuple(
            c for c in convs if c.owner_uid is None or proc.uid is None or c.owner_uid == proc.uid
        )
        work.changes.foreign_claims += len(convs) - len(kept)
        return kept

    def _known(self, proc: AgentProcess, convs: tuple[ConversationFacts, ...]) -> bool:
        """Whether the process already has a session (live or from before a restart);
        looks only, adopts nothing."""
        for conv in convs:
            key = (proc.platform, proc.uid, conv.native_id)
            if key in self._by_native or any(
                r.platform == proc.platform and r.native_id == conv.native_id
                for r in self._restored.values()
            ):
                return True
        if self._by_process.get(proc.key) in self._sessions:
            return True
        return any(self._same_process(r, proc) for r in self._restored.values())

    @staticmethod
    def _same_process(session: Session, proc: AgentProcess) -> bool:
        return (
            session.platform == proc.platform
            and session.pid == proc.pid
            and abs(session.start_time_ms - proc.start_time_ms) <= _START_TOLERANCE_MS
        )

    def _find_process_session(self, work: _Pass, proc: AgentProcess, mono: float) -> str | None:
        """The session this process runs now (its own, or its current conversation's), or
        the one it ran before a restart (adopted)."""
        sid = work.by_process.get(proc.key) or self._by_process.get(proc.key)
        if sid is not None and work.session(sid) is not None:
            return sid
        for candidate in work.restored():
            if self._same_process(candidate, proc):
                return self._adopt(work, candidate, proc, mono).session_id
        return None

    def _native_session(
        self, work: _Pass, key: NativeKey, proc: AgentProcess, mono: float
    ) -> Session | None:
        """The live session of a conversation (or sub-agent), or its session from before
        a restart (adopted, whatever form of id it was announced under)."""
        session = work.session(work.by_native.get(key) or self._by_native.get(key))
        if session is not None:
            return session
        platform, uid, native = key
        for candidate in work.restored():
            if (
                candidate.platform == platform
                and candidate.native_id == native
                and candidate.uid in (uid, None)
            ):
                session = self._adopt(work, candidate, proc, mono)
                work.by_native[key] = session.session_id
                return session
        return None

    @staticmethod
    def _adopt(work: _Pass, restored: Session, proc: AgentProcess, mono: float) -> Session:
        """A session from before the restart whose agent still runs: no event."""
        session = copy.copy(restored)
        work.adopted.add(session.session_id)
        session.cpu_time = proc.cpu_time
        session.observed_at = mono
        session.quiet_since = mono
        session.state_since = mono
        if session.uid is None and proc.uid is not None:
            session.uid = proc.uid  # a row from before owners were recorded
            work.changes.upserts.append(session)
        work.sessions[session.session_id] = session
        return session

    def _new_session(
        self,
        work: _Pass,
        sid: str,
        proc: AgentProcess,
        parent_id: str | None,
        now: datetime,
        mono: float,
        *,
        name: str | None,
        model: str | None = None,
        native_id: str | None = None,
    ) -> Session:
        queued = self._queue.get(proc.key)
        if queued is not None:
            now = queued.first_seen  # it waited its turn: its session began when first seen
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
            uid=proc.uid,
            cpu_time=proc.cpu_time,
            observed_at=mono,
            quiet_since=mono,
            state_since=mono,
        )
        work.sessions[sid] = session
        if native_id is not None:
            work.by_native[(proc.platform, proc.uid, native_id)] = sid
        work.announced[proc.uid] = work.announced.get(proc.uid, 0) + 1
        work.changes.announced.append((proc.uid, mono))
        work.changes.events.append(session.event("active", now, "start"))
        work.changes.upserts.append(session)
        return session

    def _announce_ended(self, work: _Pass, queued: Queued, mono: float) -> None:
        """An agent that ended waiting its turn: its session, started when it was first
        seen and ended when it was last seen, announced now."""
        proc = queued.proc
        sid = self._process_id(work, proc)
        session = self._new_session(
            work, sid, proc, None, queued.first_seen, mono, name=project_name(proc.cwd)
        )
        work.changes.events.append(session.event("ended", queued.last_seen, "end"))
        work.changes.removals.append(sid)
        work.ended[sid] = None

    def _may_announce(self, work: _Pass, uid: int | None, mono: float) -> bool:
        """Whether the user may announce one more new session now (its budget of the last
        minute); if not, the refusal is counted for this pass."""
        recent = self._announced.get(uid)
        if recent is not None:
            while recent and mono - recent[0] >= ANNOUNCE_WINDOW_S:
                recent.popleft()  # (a pure prune: the same whatever the plan decides)
        used = (len(recent) if recent else 0) + work.announced.get(uid, 0)
        if used < self.settings.new_per_user_per_minute:
            return True
        work.changes.deferred[uid] = work.changes.deferred.get(uid, 0) + 1
        return False

    def _start_process_session(
        self,
        work: _Pass,
        proc: AgentProcess,
        parent_id: str | None,
        now: datetime,
        mono: float,
    ) -> str:
        sid = self._process_id(work, proc)
        self._new_session(work, sid, proc, parent_id, now, mono, name=project_name(proc.cwd))
        work.by_process[proc.key] = sid
        return sid

    def _process_id(self, work: _Pass, proc: AgentProcess) -> str:
        """The id for a new session of the process itself: the next unused one."""
        resumed = 0
        while True:
            sid = process_session_id(
                self._machine_id, proc.platform, proc.pid, proc.start_time_ms, resumed
            )
            if not work.is_ended(sid) and work.session(sid) is None:
                return sid
            resumed += 1

    def _live_id(
        self,
        work: _Pass,
        platform: str,
        native_id: str,
        agent_id: str | None = None,
        uid: int | None = None,
    ) -> str:
        """The id for a new conversation (or sub-agent) session: its own, or, if that
        session has ended and the conversation came back, the next unused resumed id."""
        resumed = 0
        while True:
            sid = native_session_id(self._machine_id, platform, native_id, agent_id, resumed, uid)
            if not work.is_ended(sid) and work.session(sid) is None:
                return sid
            resumed += 1

    # -- conversations ------------------------------------------------------------------

    def _conversation(
        self,
        work: _Pass,
        proc: AgentProcess,
        conv: ConversationFacts,
        parent_id: str | None,
        now: datetime,
        mono: float,
        current: bool = True,
    ) -> str | None:
        key = (proc.platform, proc.uid, conv.native_id)
        session = self._native_session(work, key, proc, mono) or self._take_over(
            work, proc, conv, key, mono
        )
        if session is None:
            if not self._may_announce(work, proc.uid, mono):
                return None
            sid = self._live_id(work, proc.platform, conv.native_id, uid=proc.uid)
            session = self._new_session(
                work,
                sid,
                proc,
                parent_id,
                now,
                mono,
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
        work_seen = (
            conv.status == "busy"
            or _newer(conv.last_write, session.last_write)
            or _newer(sub_write, session.sub_last_write)
        )
        session.last_write = _latest(conv.last_write, session.last_write)
        session.sub_last_write = _latest(sub_write, session.sub_last_write)
        signals = _Signals(
            work=work_seen,
            use_cpu=conv.status is None and current,
            name=conv.name,
            model=conv.model,
        )
        self._observe_activity(work, session, proc, signals, now, mono)
        return session.session_id

    def _take_over(
        self,
        work: _Pass,
        proc: AgentProcess,
        conv: ConversationFacts,
        key: NativeKey,
        mono: float,
    ) -> Session | None:
        """The process's first conversation takes the session its process was announced
        under (before the agent wrote its state): one conversation, one session."""
        session = work.session(self._find_process_session(work, proc, mono))
        if session is None or session.native_id is not None:
            return None  # no session yet, or it is another conversation's (/clear, /new)
        session.native_id = conv.native_id
        work.by_native[key] = session.session_id
        work.changes.upserts.append(session)  # the row records which conversation took it
        return session

    def _subagent(
        self,
        work: _Pass,
        proc: AgentProcess,
        conv: ConversationFacts,
        parent_sid: str,
        sub: SubagentFacts,
        now: datetime,
        mono: float,
    ) -> str | None:
        native = f"{conv.native_id}:agent:{sub.agent_id}"
        session = self._native_session(work, (proc.platform, proc.uid, native), proc, mono)
        if session is None:
            if not self._may_announce(work, proc.uid, mono):
                return None
            sid = self._live_id(work, proc.platform, conv.native_id, sub.agent_id, proc.uid)
            session = self._new_session(
                work,
                sid,
                proc,
                parent_sid,
                now,
                mono,
                name=sub.name,
                model=sub.model or conv.model,
                native_id=native,
            )
            session.last_write = sub.last_write
            return sid
        work_seen = sub.status == "busy" or _newer(sub.last_write, session.last_write)
        session.last_write = _latest(sub.last_write, session.last_write)
        signals = _Signals(work=work_seen, use_cpu=False, name=sub.name, model=sub.model)
        self._observe_activity(work, session, proc, signals, now, mono)
        return session.session_id

    def _last_word(
        self,
        work: _Pass,
        proc: AgentProcess,
        conv: ConversationFacts,
        sub: SubagentFacts,
    ) -> None:
        """A sub-agent that finished: its `ended` carries what it said last (its model is
        often first known from the answer that finished it)."""
        key = (proc.platform, proc.uid, f"{conv.native_id}:agent:{sub.agent_id}")
        session = work.session(work.by_native.get(key) or self._by_native.get(key))
        if session is None:
            return  # never announced (or from before a restart): nothing to end here
        if sub.model:
            session.model = sub.model
        if sub.name:
            session.session_name = sub.name

    # -- activity -----------------------------------------------------------------------

    def _observe_activity(
        self,
        work: _Pass,
        session: Session,
        proc: AgentProcess,
        signals: _Signals | None,
        now: datetime,
        mono: float,
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
            _MIN_BUSY_CPU_S, self.settings.busy_cpu_ratio * elapsed
        )
        session.cpu_time = proc.cpu_time
        session.observed_at = mono
        busy = signals.work or (signals.use_cpu and cpu_busy) if signals else cpu_busy
        if busy:
            session.quiet_since = mono
            if session.state == "idle":
                self._transition(work, session, "active", now, mono)
                return
        elif session.state == "active" and mono - session.quiet_since >= self.settings.idle_after:
            self._transition(work, session, "idle", now, mono)
            return
        if learned:  # an update: the current state, carrying what was learned
            self._transition(work, session, session.state, now, mono, "update")

    @staticmethod
    def _transition(
        work: _Pass,
        session: Session,
        state: State,
        now: datetime,
        mono: float,
        kind: Kind = "transition",
    ) -> None:
        if state != session.state:
            session.state_since = mono
        session.state = state
        work.changes.events.append(session.event(state, now, kind))
        work.changes.upserts.append(session)


@dataclass(frozen=True)
class _Signals:
    work: bool  # a sign of work from the agent's own state
    use_cpu: bool  # no status recorded: CPU time counts too
    name: str | None
    model: str | None


_WAITING = _Signals(work=False, use_cpu=False, name=None, model=None)


def _newer(value: float | None, than: float | None) -> bool:
    return value is not None and (than is None or value > than)


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
