"""The durable queue: a Hypothesis state machine against a model, the bound policy,
corrupt-database recovery and giving space back. A real SQLite file throughout."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from quintd.model import Kind, LifecycleEvent, State
from quintd.store import Store, StoreSettings

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def ev(
    session: str, state: State = "active", kind: Kind = "transition", name: str | None = None
) -> LifecycleEvent:
    return LifecycleEvent(
        session_id=session,
        state=state,
        timestamp=T0,
        platform="codex",
        session_name=name,
        kind=kind,
    )


class QueueModel(RuleBasedStateMachine):
    """put, peek (claim), ack, fail (dead-letter), requeue, crash and reopen."""

    @initialize()
    def open_store(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qd-hyp-"))
        self.store = Store(self.dir / "q.db")
        self.model: list[tuple[str, str]] = []  # (event_id, session) in queue order
        self.dead: list[tuple[int, str, str]] = []  # (seq, event_id, session), seq order
        self.bodies: dict[str, bytes] = {}
        self.seqs: dict[str, int] = {}
        self.states: dict[str, str] = {}
        self.ended_delivered: set[str] = set()  # sessions whose `ended` was acked
        self.claimed: list[tuple[str, str]] = []

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        sessions=st.lists(st.sampled_from("abc"), min_size=1, max_size=5),
        state=st.sampled_from(["active", "idle", "ended"]),
    )
    def put(self, sessions: list[str], state: State) -> None:
        events = [ev(s, state) for s in sessions]
        before = {q.event_id for q in self.store.peek(10_000)}
        assert self.store.apply(events) == len(events)
        new = [q for q in self.store.peek(10_000) if q.event_id not in before]
        assert [q.session_id for q in new] == sessions  # appended, in order
        self.model.extend((q.event_id, q.session_id) for q in new)
        self.bodies.update({q.event_id: q.body for q in new})
        self.seqs.update({q.event_id: q.seq for q in new})
        self.states.update({q.event_id: q.state for q in new})

    @rule(limit=st.integers(1, 8))
    def claim(self, limit: int) -> None:
        got = self.store.peek(limit)
        assert [(q.event_id, q.session_id) for q in got] == self.model[:limit]
        for q in got:
            assert q.body == self.bodies[q.event_id]  # identical bytes on every send
        self.claimed = [(q.event_id, q.session_id) for q in got]

    @precondition(lambda self: bool(self.claimed))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.claimed), unique=True))
        seqs = {q.event_id: q.seq for q in self.store.peek(10_000)}
        self.store.ack(seqs[e] for e, _ in chosen if e in seqs)
        self.ended_delivered.update(s for e, s in chosen if e in seqs and self.states[e] == "ended")
        self.model = [m for m in self.model if m not in chosen]
        self.claimed = [c for c in self.claimed if c not in chosen]

    @precondition(lambda self: bool(self.claimed))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from(self.claimed))
        if victim not in self.model:
            return
        [queued] = [q for q in self.store.peek(10_000) if q.event_id == victim[0]]
        self.store.dead_letter(queued, 400, "bad_request")
        self.model.remove(victim)
        self.dead = sorted([*self.dead, (queued.seq, *victim)])
        self.claimed.remove(victim)

    @precondition(lambda self: bool(self.dead))
    @rule(force=st.booleans())
    def requeue_all(self, force: bool) -> None:
        """Back in their original places (so a session's later events still follow), with
        the same keys; refused where the session's end was delivered, unless forced."""
        back = [d for d in self.dead if force or d[2] not in self.ended_delivered]
        kept = [d for d in self.dead if d not in back]
        moved, refused = self.store.requeue(force=force)
        assert (moved, [seq for seq, _ in refused]) == (len(back), [d[0] for d in kept])
        self.model = sorted(
            [*self.model, *((e, s) for _, e, s in back)], key=lambda m: self.seqs[m[0]]
        )
        self.dead = kept

    @rule()
    def crash_and_reopen(self) -> None:
        # No close(): what was committed must be there, nothing else.
        self.store = Store(self.dir / "q.db")
        self.claimed = []

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "store"):
            return
        queued = self.store.peek(10_000)
        assert [(q.event_id, q.session_id) for q in queued] == self.model
        stats = self.store.stats()
        assert stats.depth == len(self.model)
        assert stats.dead_letters == len(self.dead)
        assert stats.bytes == sum(len(self.bodies[e]) for e, _ in self.model)
        assert [d.event_id for d in self.store.dead_letters()] == [e for _, e, _ in self.dead]


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the bound -----------------------------------------------------------------------


def test_at_the_bound_intermediate_flips_are_coalesced(tmp_path: Path) -> None:
    # below the file's 1 MiB floor: the bound itself is what is tested
    store = Store(tmp_path / "q.db", StoreSettings.model_construct(max_bytes=10_000))
    store.apply([ev("s1", "active", "start")])
    flips: list[LifecycleEvent] = []
    for i in range(200):
        flips.append(ev("s1", "idle" if i % 2 == 0 else "active"))
    for flip in flips:
        store.apply([flip])
    stats = store.stats()
    assert stats.bytes <= 10_000
    assert stats.coalesced > 0
    queued = store.peek(10_000)
    assert queued[0].state == "active"  # the session's first event is kept
    assert stats.produced == stats.depth + stats.coalesced


def test_beyond_coalescing_transitions_are_refused_but_starts_and_ends_kept(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "q.db", StoreSettings.model_construct(max_bytes=2_000))
    # Many sessions with one event each: nothing to coalesce.
    n = 0
    while store.stats().bytes < 1_900:
        store.apply([ev(f"s{n}", "active", "start")])
        n += 1
    assert store.apply([ev("s0", "idle")]) == 0  # refused
    assert store.apply([ev("s0", "active", "update", name="renamed")]) == 0
    assert store.apply([ev("s0", "ended", "end")]) == 1  # never dropped
    assert store.apply([ev("new", "active", "start")]) == 1  # a first event is kept too
    stats = store.stats()
    assert stats.refused == 2
    assert [q.state for q in store.peek(10_000) if q.session_id == "s0"] == ["active", "ended"]


def test_free_disk_floor_is_a_bound_too(tmp_path: Path) -> None:
    floor = StoreSettings(min_free_disk=1 << 40)
    store = Store(tmp_path / "q.db", floor, free_disk=lambda _: 1 << 30)
    store.apply([ev("s", "active", "start")])
    assert store.apply([ev("s", "idle")]) == 0
    assert store.stats().refused == 1


# -- corruption and space ---------------------------------------------------------------


def test_corrupt_database_is_moved_aside_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "quintd.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    store = Store(path)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("quintd.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    stats = store.stats()
    assert stats.lost_databases == 1
    assert "moved to" in (stats.last_loss or "") and str(aside[0]) in (stats.last_loss or "")
    assert store.apply([ev("s", "active", "start")]) == 1  # and it works


def test_damaged_pages_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "quintd.db"
    store = Store(path)
    store.apply([ev(f"s{i}", "active", "start", name="x" * 200) for i in range(400)])
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(path, "r+b") as fh:  # scribble over the middle of the file
        fh.seek(os.path.getsize(path) // 2)
        fh.write(os.urandom(8192))
    store = Store(path)
    assert store.stats().lost_databases == 1
    assert store.stats().depth == 0


def test_space_is_given_back_after_a_drain(tmp_path: Path) -> None:
    path = tmp_path / "quintd.db"
    store = Store(path)
    store.apply([ev(f"s{i}", "active", "start", name="n" * 500) for i in range(20_000)])
    full = os.path.getsize(path) + os.path.getsize(f"{path}-wal")
    assert full > 8 * 1024 * 1024
    store.ack(q.seq for q in store.peek(100_000))
    empty = os.path.getsize(path) + os.path.getsize(f"{path}-wal")
    assert empty < full / 4
