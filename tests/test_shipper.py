"""The shipper against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import email.utils
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import TOKEN, wait_until
from ingest_server import IngestServer

from quintd.logs import register_secret
from quintd.model import LifecycleEvent
from quintd.shipper import (
    BACKOFF_CAP_S,
    STOP_MARGIN_S,
    DeliverySettings,
    Shipper,
    full_jitter_backoff,
    parse_retry_after,
)
from quintd.store import Store

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SID = "9b2f3c4e-0f41-5d7e-9a51-6f0e8d1c2b3a"  # a UUID v5


def sid(n: int) -> str:
    return SID[:-4] + f"{n:04x}"


def event(n: int = 0, state: str = "active", name: str | None = None) -> LifecycleEvent:
    return LifecycleEvent(
        session_id=sid(n),
        state=state,
        timestamp=T0,  # type: ignore[arg-type]
        platform="codex",
        session_name=name,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "q.db")
    yield s


@pytest.fixture
def server() -> Iterator[IngestServer]:
    with IngestServer(token=TOKEN) as srv:
        yield srv


def start_shipper(
    store: Store,
    url: str,
    token: str | None = TOKEN,
    batch_body: bool = False,
    timeout: float = 2.0,
    flush_interval: float = 0.1,
    rand: Callable[[], float] = lambda: 0.5,
) -> Shipper:
    """A started shipper with the tests' usual settings. ``rand``: the jitter source,
    fixed so that every wait is known in advance (0.5: a backoff of half its range)."""
    settings = DeliverySettings(
        endpoint=url,
        token=token,
        timeout=timeout,
        batch_size=50,
        flush_interval=flush_interval,
        batch_body=batch_body,
        start_jitter=0.0,
    )
    register_secret(token)  # as `quintd run` does when it loads the config
    shipper = Shipper(store, settings, rand=rand)
    shipper.start()
    return shipper


def test_delivers_in_order_with_idempotency_keys_then_deletes(
    store: Store, server: IngestServer
) -> None:
    store.apply([event(1), event(2), event(1, "ended")])
    queued = store.peek(10)
    shipper = start_shipper(store, server.url)
    try:
        got = server.wait_for(lambda evs: len(evs) == 3, what="three events")
        # Sessions go in parallel; each session's events stay in order.
        assert [r.event["state"] for r in got if r.event["session_id"] == sid(1)] == [
            "active",
            "ended",
        ]
        sent = {(r.event["session_id"], r.event["state"]): r.idempotency_key for r in got}
        assert sent == {(q.session_id, q.state): q.event_id for q in queued}
        wait_until(lambda: store.stats().depth == 0, what="queue drained")
        status = shipper.report()
        assert status.delivered == 3 and status.last_success and status.last_error is None
    finally:
        shipper.stop(1.0)
    assert server.violations == []


def test_without_token_nothing_is_sent_and_everything_kept(
    store: Store, server: IngestServer
) -> None:
    store.apply([event(1)])
    shipper = start_shipper(store, server.url, token=None)
    shipper.wake()
    shipper.stop(0.5)
    assert server.requests == 0
    assert store.stats().depth == 1
    assert shipper.report().waiting_for_token is True


def test_bad_request_goes_to_dead_letters_and_rest_flows(
    store: Store, server: IngestServer
) -> None:
    server.fail_next(400, body=b'{"error":"bad_request: session_name too long"}')
    # Two events of one session, then one of another: whichever request meets the 400,
    # that event alone is dead-lettered and the others flow.
    store.apply([event(1), event(1, "ended"), event(2)])
    shipper = start_shipper(store, server.url)
    try:
        wait_until(lambda: store.stats().depth == 0, what="queue drained")
        [dead] = store.dead_letters()
        # The server's reason, kept whole (it echoed the request first, as some do), but
        # never the token it echoed.
        assert dead.status == 400
        assert dead.reason.endswith('{"error":"bad_request: session_name too long"}')
        assert "Bearer <redacted>" in dead.reason and TOKEN not in dead.reason
        got = {(r.event["session_id"], r.event["state"]) for r in server.events}
        everything = {(sid(1), "active"), (sid(1), "ended"), (sid(2), "active")}
        assert got == everything - {(dead.session_id, dead.state)}
    finally:
        shipper.stop(1.0)


def test_unauthorized_pauses_and_keeps_everything(store: Store, server: IngestServer) -> None:
    store.apply([event(1), event(2)])
    shipper = start_shipper(store, server.url, token="qt_deploy_revoked")
    try:
        wait_until(lambda: shipper.report().paused, what="pause on 401")
        status = shipper.report()
        assert "401" in (status.paused or "") and status.next_attempt_at
        # Two sessions: both may have been in flight already; nothing after that.
        assert server.requests <= 2
        next_at = datetime.fromisoformat(status.next_attempt_at.replace("Z", "+00:00"))
        assert (next_at - datetime.now(UTC)).total_seconds() > 600  # a long pause
        assert store.stats().depth == 2
    finally:
        shipper.stop(0.2)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured_and_retry_reuses_the_key(
    store: Store, server: IngestServer, form: str
) -> None:
    value = "3" if form == "seconds" else email.utils.formatdate(time.time() + 3, usegmt=True)
    server.fail_next(429, {"Retry-After": value})
    store.apply([event(1)])
    [queued] = store.peek(1)
    started = time.monotonic()
    # No jitter: the wait is the Retry-After exactly (a backoff would be 0.1 s).
    shipper = start_shipper(store, server.url, rand=lambda: 0.0)
    try:
        wait_until(lambda: shipper.report().next_attempt_at, what="retry scheduled")
        [got] = server.wait_for(lambda evs: len(evs) == 1, timeout=10, what="retried event")
        # HTTP-date has one-second resolution: allow for the truncation.
        assert got.received_at - started >= 1.9
        assert got.idempotency_key == queued.event_id
        assert server.requests == 2
    finally:
        shipper.stop(1.0)


def test_server_errors_are_retried_with_backoff(store: Store, server: IngestServer) -> None:
    server.fail_next(500, count=2)
    store.apply([event(1)])
    [queued] = store.peek(1)
    shipper = start_shipper(store, server.url)
    try:
        # Each failed try is counted on disk, with the event (backoffs of 1 s, then 2 s).
        wait_until(lambda: (q := store.peek(1)) and q[0].attempts == 2, what="two tries recorded")
        [got] = server.wait_for(lambda evs: len(evs) == 1, timeout=15, what="event after 500s")
        assert got.idempotency_key == queued.event_id
        assert server.requests == 3
        assert "HTTP 500" in (shipper.report().last_error or "")
    finally:
        shipper.stop(1.0)


def test_connection_refused_keeps_events(store: Store) -> None:
    store.apply([event(1)])
    shipper = start_shipper(store, "http://127.0.0.1:9")
    try:
        wait_until(lambda: shipper.report().last_error, what="connect error")
        assert "ConnectError" in (shipper.report().last_error or "")
        assert store.stats().depth == 1
    finally:
        shipper.stop(0.2)


def test_batch_body(store: Store) -> None:
    with IngestServer(token=TOKEN, batch=True) as server:
        store.apply([event(n) for n in range(10)])
        shipper = start_shipper(store, server.url, batch_body=True)
        try:
            got = server.wait_for(lambda evs: len(evs) == 10, what="batch")
            assert server.requests == 1
            assert [r.event["session_id"] for r in got] == [sid(n) for n in range(10)]
            wait_until(lambda: store.stats().depth == 0, what="drained")
        finally:
            shipper.stop(1.0)
        assert server.violations == []


def test_stop_makes_a_last_flush(store: Store, server: IngestServer) -> None:
    shipper = start_shipper(store, server.url, flush_interval=3600)
    store.apply([event(1)])  # nobody wakes the shipper: only the final flush sends it
    shipper.stop(2.0)
    assert len(server.events) == 1 and store.stats().depth == 0


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("99999999", now) == 3600.0  # capped


def test_full_jitter_backoff_bounds() -> None:
    assert full_jitter_backoff(1, lambda: 1.0) == 1.0  # from 1 s (README: Delivery)
    assert full_jitter_backoff(3, lambda: 0.5) == 2.0
    assert full_jitter_backoff(50, lambda: 1.0) == BACKOFF_CAP_S  # jitter after the cap
    assert full_jitter_backoff(50, lambda: 0.5) == BACKOFF_CAP_S / 2
    assert full_jitter_backoff(2, lambda: 0.0) == 0.1  # never a hot loop


def test_batch_with_one_bad_event_splits_and_dead_letters_only_it(store: Store) -> None:
    poison = sid(7)

    def reject(event: dict) -> str | None:
        return "bad_request: poisoned" if event["session_id"] == poison else None

    with IngestServer(token=TOKEN, batch=True, reject=reject) as server:
        store.apply([event(n) for n in range(10)])
        shipper = start_shipper(store, server.url, batch_body=True)
        try:
            got = server.wait_for(lambda evs: len(evs) == 9, what="nine good events")
            wait_until(lambda: store.stats().depth == 0, what="drained")
            assert sorted(r.event["session_id"] for r in got) == sorted(
                sid(n) for n in range(10) if n != 7
            )
            assert store.stats().dead_letters == 1
            row = store._conn.execute("SELECT session_id, reason FROM dead_letters").fetchone()
            assert row == (poison, '{"error": "bad_request: poisoned"}')
        finally:
            shipper.stop(1.0)


def test_batch_retry_reuses_its_key_even_when_new_events_arrive(store: Store) -> None:
    with IngestServer(token=TOKEN, batch=True) as server:
        server.fail_next(503, {"Retry-After": "1"})
        store.apply([event(1), event(2)])
        shipper = start_shipper(store, server.url, batch_body=True)
        try:
            wait_until(lambda: shipper.report().next_attempt_at, what="503 seen")
            store.apply([event(3)])  # arrives while the first batch waits for its retry
            got = server.wait_for(lambda evs: len(evs) == 3, timeout=10, what="all three")
            first_key = got[0].idempotency_key
            assert [r.idempotency_key == first_key for r in got] == [True, True, False]
            assert [r.event["session_id"] for r in got] == [sid(1), sid(2), sid(3)]
        finally:
            shipper.stop(1.0)


class FlakyStore(Store):
    """A real store whose first ack fails as a locked or full database would."""

    failed = False

    def ack(self, seqs):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database is locked")
        return super().ack(seqs)


def test_shipper_survives_a_failing_database(tmp_path: Path, server: IngestServer) -> None:
    store = FlakyStore(tmp_path / "q.db")
    store.apply([event(1)])
    shipper = start_shipper(store, server.url)
    try:
        wait_until(lambda: store.stats().depth == 0, timeout=15, what="delivered after all")
        status = shipper.report()
        assert status.alive
        assert "database is locked" in (status.last_error or "")
        # Sent once: the 2xx could not be recorded at first, but the delivery was
        # remembered, and recording it again (after a backoff) was all that happened.
        assert len(server.events) == 1 and server.requests == 1
    finally:
        shipper.stop(1.0)


def test_refused_before_its_first_delivery_the_shipper_waits_its_turn_then_paces(
    store: Store, server: IngestServer
) -> None:
    """The organisation's limit refuses the very first request: the shipper comes back
    after the Retry-After, then sends one request at a time, a gap apart (paced at 1/s,
    the gap half of it with this jitter source), not a round of four at once."""
    server.fail_next(429, {"Retry-After": "1"})
    store.apply([event(n) for n in range(4)])  # four sessions: a round could carry four
    started = time.monotonic()
    shipper = start_shipper(store, server.url, rand=lambda: 0.0)
    try:
        got = server.wait_for(lambda evs: len(evs) == 4, timeout=20, what="four events")
        # Everything sent: back in rounds (the pace is for a backlog).
        wait_until(lambda: shipper.report().pace == "rounds", what="back in rounds")
        times = [e.received_at for e in got]
        assert times[0] - started >= 0.9  # the Retry-After
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        # One at a time, (0.5 + 0.0) / 1.0 apart, as the server saw them: a loaded machine
        # may hand one request's thread its turn 0.1-0.2 s late (the gaps beside it shrink
        # and grow by as much), so each gap is only far from a round's (milliseconds) and
        # the three together keep the pace (a pace twice as fast: 0.75 s).
        assert all(gap >= 0.25 for gap in gaps), gaps
        assert times[-1] - times[0] >= 1.2, gaps
        assert server.requests == 5
    finally:
        shipper.stop(1.0)


def test_a_paced_shipper_sends_all_it_can_in_the_last_flush(
    store: Store, server: IngestServer
) -> None:
    """Stopping, the last flush does not wait out the pace's gaps (a halt it would)."""
    server.fail_next(429, {"Retry-After": "1"})
    store.apply([event(n) for n in range(6)])
    shipper = start_shipper(store, server.url, rand=lambda: 0.0)
    server.wait_for(lambda evs: len(evs) >= 2, timeout=20, what="two events, paced")
    assert shipper.report().pace == "paced"
    shipper.stop(5.0)
    assert len(server.wait_for(lambda evs: len(evs) == 6, timeout=5, what="all six")) == 6
    assert store.stats().depth == 0


def test_a_reload_keeps_the_pace(store: Store, server: IngestServer) -> None:
    """A fleet reloading together must not burst: the pace stays paced across a reload
    of the same settings."""
    server.fail_next(429, {"Retry-After": "1"})
    store.apply([event(n) for n in range(20)])
    shipper = start_shipper(store, server.url, rand=lambda: 0.0)
    try:
        server.wait_for(lambda evs: len(evs) >= 2, timeout=20, what="two events, paced")
        # Paced at 1/s when its turn came, grown 2% with each acceptance since.
        status = shipper.report()
        assert status.pace == "paced" and 1.0 <= status.pace_rate <= 1.02**20
        shipper.reconfigure(shipper.settings)
        wait_until(lambda: shipper.effective_settings is shipper.settings, what="reload applied")
        wait_until(lambda: len(server.events) >= 4, what="two more after the reload")
        assert shipper.report().pace == "paced"
    finally:
        shipper.stop(1.0)


def test_the_turn_counts_requests_not_events(store: Store) -> None:
    """A refused pipeline waits its turn in proportion to what it has to send: with the
    batch body, one request carries a batch."""
    store.apply([event(n) for n in range(120)])
    single = DeliverySettings(endpoint="http://127.0.0.1:9", token=TOKEN, batch_size=50)
    assert Shipper(store, single)._queued() == 120
    batched = DeliverySettings(
        endpoint="http://127.0.0.1:9", token=TOKEN, batch_size=50, batch_body=True
    )
    assert Shipper(store, batched)._queued() == 3  # 50 + 50 + 20


def _sends_at_once(shipper: Shipper, store: Store, server: IngestServer, count: int) -> None:
    """With the window open, ``count`` sessions' requests go at once (held at the server's
    gate until all of them are there) and no more."""
    server.hold()
    first = 100 + len(server.events)
    try:
        store.apply([event(first + n) for n in range(count + 4)])
        shipper.wake()
        server.wait_held(count)
    finally:
        server.release()
    server.wait_for(lambda evs: len(evs) >= first - 100 + count + 4, what="all of them")
    assert server.most_held == count


def test_a_reload_of_in_flight_changes_how_many_requests_go_at_once(
    store: Store, server: IngestServer
) -> None:
    """What the part uses, not what it reports: a reload from 1 to 4 requests in flight
    sends four at once (the pool of senders rebuilt), and back to 2."""
    settings = DeliverySettings(
        endpoint=server.url,
        token=TOKEN,
        timeout=10.0,
        batch_size=50,
        flush_interval=0.1,
        in_flight=1,
        start_jitter=0.0,
    )
    shipper = Shipper(store, settings, rand=lambda: 0.5)
    shipper.start()
    try:
        # Rounds of 1, 2, 4 and 8 events open the send window (slow start) to 16.
        store.apply([event(n) for n in range(15)])
        server.wait_for(lambda evs: len(evs) == 15, what="the window opened")
        wait_until(lambda: store.stats().depth == 0, what="the queue drained")
        _sends_at_once(shipper, store, server, 1)
        shipper.reconfigure(settings.model_copy(update={"in_flight": 4}))
        wait_until(lambda: shipper.settings.in_flight == 4, what="the reload applied")
        _sends_at_once(shipper, store, server, 4)
        shipper.reconfigure(settings.model_copy(update={"in_flight": 2}))
        wait_until(lambda: shipper.settings.in_flight == 2, what="the reload applied")
        _sends_at_once(shipper, store, server, 2)
    finally:
        server.release()
        shipper.stop(1.0)
    assert server.violations == []


def test_stop_keeps_to_the_drain_with_a_request_unanswered(
    store: Store, server: IngestServer
) -> None:
    """A request waits for an answer that does not come (cloud.timeout 30 s): stop(0.5)
    returns after the drain and its margin, not at the request's timeout; the event stays
    queued, and its sender does not hold the process (a daemon thread)."""
    server.hold()
    store.apply([event(1)])
    shipper = start_shipper(store, server.url, timeout=30.0)
    try:
        server.wait_held(1)
        started = time.monotonic()
        shipper.stop(0.5)
        took = time.monotonic() - started
        assert took < 0.5 + STOP_MARGIN_S + 1.0, f"stop took {took:.1f} s"
        assert shipper.is_alive()  # left behind, waiting for its answer
        senders = [t for t in threading.enumerate() if t.name.startswith("quintd-send")]
        assert senders and all(t.daemon for t in senders)
        assert store.stats().depth == 1
    finally:
        server.release()
    wait_until(lambda: not shipper.is_alive(), what="the delivery thread, once answered")
