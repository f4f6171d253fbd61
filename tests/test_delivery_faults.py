"""Every server misbehaviour the contract allows, against the real shipper and a real
loopback server: in the end every event is delivered (or dead-lettered when the server
rejects it), and an event that arrives twice arrives under the same Idempotency-Key."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TOKEN, wait_until
from ingest_server import IngestServer
from test_shipper import event, sid, start_shipper

from quintd.store import Store


@dataclass
class Case:
    name: str
    status: int = 500
    headers: dict[str, str] | None = None
    action: str = "reply"
    delay: float = 0.0
    count: int = 1
    dead: int = 0  # events the server rejects for good
    min_wait: float = 0.0  # the retry must not come sooner


def _http_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


CASES = [
    Case("429 retry-after seconds", 429, {"Retry-After": "2"}, min_wait=1.9),
    Case("429 retry-after http-date", 429, {"Retry-After": "@date+3"}, min_wait=1.9),
    Case("429 without retry-after", 429),
    Case("429 garbage retry-after", 429, {"Retry-After": "tomorrow-ish"}),
    Case("503 retry-after", 503, {"Retry-After": "2"}, min_wait=1.9),
    Case("500 twice", 500, count=2),
    Case("502", 502),
    Case("slower than the client timeout", action="delay", delay=2.5),
    Case("connection dropped before storing", action="drop_before"),
    Case("connection dropped after storing", action="drop_after"),
    Case("400 bad request", 400, dead=1),
    Case("413 single event too large", 413, dead=1),
    Case("422 unprocessable", 422, dead=1),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield Store(tmp_path / "q.db")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(store: Store, case: Case) -> None:
    with IngestServer(token=TOKEN) as server:
        headers = dict(case.headers or {})
        if headers.get("Retry-After") == "@date+3":
            headers["Retry-After"] = _http_date(3)
        server.fail_next(
            case.status, headers, count=case.count, action=case.action, delay=case.delay
        )
        # One session only: its events go strictly one after another, so the fault
        # hits the first event and the rest wait behind it.
        store.apply([event(1), event(1, "idle"), event(1, "ended")])
        queued = {(q.state): q.event_id for q in store.peek(10)}
        started = time.monotonic()
        # No jitter: every wait is the least the policy allows (a Retry-After exactly).
        shipper = start_shipper(store, server.url, timeout=1.0, rand=lambda: 0.0)
        try:
            wait_until(lambda: store.stats().depth == 0, timeout=30, what="queue drained")
        finally:
            shipper.stop(1.0)
        delivered = {r.event["state"] for r in server.events}
        assert len(delivered) == 3 - case.dead
        assert store.stats().dead_letters == case.dead
        for r in server.events:  # repeats only ever under the event's own key
            assert r.idempotency_key == queued[r.event["state"]]
        states = [r.event["state"] for r in server.events]
        assert states == sorted(states, key=["active", "idle", "ended"].index)  # order
        if case.min_wait:
            second = next(r for r in server.events if r.event["state"] == "active")
            assert second.received_at - started >= case.min_wait
        if not case.dead:
            assert shipper.report().last_error is not None
        assert server.violations == []


def test_413_for_a_batch_splits_until_it_fits(store: Store) -> None:
    with IngestServer(token=TOKEN, batch=True) as server:
        server.fail_next(413, count=1)  # the whole batch is too large; halves are fine
        store.apply([event(n) for n in range(8)])
        shipper = start_shipper(store, server.url, batch_body=True)
        try:
            wait_until(lambda: store.stats().depth == 0, what="drained")
        finally:
            shipper.stop(1.0)
        assert sorted(r.event["session_id"] for r in server.events) == [sid(n) for n in range(8)]
        assert len({r.idempotency_key for r in server.events}) == 2  # two halves, two keys
        assert store.stats().dead_letters == 0
