"""Delivery: a background thread that sends queued events to the ingest endpoint.

An event leaves the queue only after a 2xx for it. Events go out oldest first; with the
one-event body, up to ``in_flight`` requests at once but never two of one session at once,
so a session's events reach the server in order. What each answer means is decided by
:mod:`quintd.delivery_policy`; :meth:`Shipper._settle` is the one place an outcome is
applied to the store.
"""

from __future__ import annotations

import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field

from quintd import __version__
from quintd.delivery_policy import (
    AUTH_PAUSE_S,
    BACKOFF_CAP_S,
    Action,
    Answer,
    Failure,
    Outcome,
    Pace,
    PaceMode,
    classify,
    full_jitter_backoff,
    parse_retry_after,
    pipeline_outcome,
)
from quintd.endpoint import validate_endpoint
from quintd.logs import scrub
from quintd.model import INGEST_PATH, batch_body, format_timestamp
from quintd.part_settings import PartSettings, setting
from quintd.protocol import DeliveryReport
from quintd.store import QueuedEvent, Store

__all__ = [
    "AUTH_PAUSE_S",
    "BACKOFF_CAP_S",
    "DeliverySettings",
    "Shipper",
    "full_jitter_backoff",
    "parse_retry_after",
]

log = logging.getLogger("quintd.shipper")

# While there is no token, how often the log says so (the status says so always).
TOKEN_NAG_INTERVAL_S = 600.0

MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 10 * 1024 * 1024

# At shutdown, after the drain's deadline, this long for the delivery thread to record what
# it has; a request still in flight then is left (its event stays queued, and goes again
# under the same Idempotency-Key at the next start).
STOP_MARGIN_S = 1.0


@dataclass(frozen=True)
class _Sent:
    """One request and what its answer means."""

    events: list[QueuedEvent]
    key: str
    outcome: Outcome
    answered_at: float = 0.0  # monotonic


class _Senders:
    """The workers that send one session's events each: ``workers`` threads taking jobs
    in turn. Daemon threads, unlike a ThreadPoolExecutor's (the interpreter waits for those
    at exit): a request still waiting for its answer when the drain is over does not hold
    the daemon's exit until its timeout."""

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"quintd-send_{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, job))
        return future

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Each worker ends once the jobs before it are done."""
        for _ in self._threads:
            self._jobs.put(None)


if TYPE_CHECKING:  # imported when a client is made: `quintd status` does not need httpx
    from quintd.http_client import IngestClient

DEFAULT_ENDPOINT = "https://api.quintai.dev"


class DeliverySettings(PartSettings):
    """Where and how to deliver."""

    endpoint: Annotated[str, AfterValidator(validate_endpoint)] = setting(
        DEFAULT_ENDPOINT,
        file="cloud.endpoint",
        env="QUINTD_ENDPOINT",
        doc="Base URL; events go to `{endpoint}/v1/sessions/ingest`. HTTPS only, except plain "
        "HTTP to a loopback address (127.0.0.0/8, ::1, localhost). ASCII only (international "
        "domains as `xn--`). No credentials, query or fragment.",
    )
    # A secret: never in a repr, a dump, a log or status. Resolved by the configuration
    # (cloud.token, cloud.token_file, $QUINTD_TOKEN).
    token: str | None = Field(None, repr=False, exclude=True)
    timeout: float = setting(
        10.0, file="cloud.timeout", gt=0, le=300, doc="Seconds per HTTP request (0 < t <= 300)."
    )
    batch_body: bool = setting(
        False,
        file="cloud.batch_body",
        doc="`false`: one event per request, the documented contract. `true`: "
        '`{"events": [...]}`, at most 500 events and 10 MB per request.',
    )
    batch_size: int = setting(
        100,
        file="queue.batch_size",
        ge=1,
        le=500,
        doc="Most events read from the queue per flush (1 to 500).",
    )
    flush_interval: float = setting(
        1.0,
        file="queue.flush_interval",
        gt=0,
        le=3600,
        doc="Seconds between delivery attempts when nothing new arrives. New events are sent "
        "as soon as they are committed.",
    )
    in_flight: int = setting(
        4,
        file="queue.in_flight",
        ge=1,
        le=32,
        doc="Requests in flight at once with the one-event body (1 to 32); never two of one "
        "session.",
    )
    drain_timeout: float = setting(
        5.0,
        file="queue.drain_timeout",
        ge=0,
        le=300,
        doc="Seconds that shutdown spends on a last flush before exiting.",
    )
    start_jitter: float = setting(
        33.0,
        file="queue.start_jitter",
        ge=0,
        le=3600,
        doc="Seconds over which the first delivery after start-up is spread at random (0 to "
        "3600), so that a fleet started at once (a reboot, a fleet-wide upgrade) does not "
        "reach the endpoint in the same second; a daemon refused before its first delivery "
        "comes back once this is over. Events found meanwhile wait on disk; their timestamps "
        "are when they happened. `0` for a single machine that should send at once.",
    )

    @property
    def url(self) -> str:
        return self.endpoint + INGEST_PATH


class Shipper(threading.Thread):
    def __init__(
        self,
        store: Store,
        settings: DeliverySettings,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(name="quintd-shipper", daemon=True)
        self._store = store
        self.settings = settings
        self._rand = rand
        self._pool = self._new_pool(settings)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drain_deadline = 0.0
        self._lock = threading.Lock()
        started = time.monotonic()
        # How many requests a round carries and how long to wait after it.
        self._pace = Pace(
            settings.batch_size, now=started, start_jitter=settings.start_jitter, rand=rand
        )
        # Monotonic; the first attempt is spread over start_jitter (a fleet restarting
        # together must not arrive in the same second).
        self._next_attempt = started + settings.start_jitter * rand()
        self._delivered = 0
        self._dead_lettered = 0
        self._last_success: str | None = None
        self._last_error: str | None = None
        self._paused: str | None = None
        self._pending: DeliverySettings | None = None
        self._client = _client(settings)
        # Delivered (a 2xx came) but not yet deleted from the queue: never sent again,
        # whatever happens to the database meanwhile (a full disk, a lock).
        self._unacked: set[int] = set()
        self._drained = False  # the last look found the queue empty
        self._only_a_gap = False  # the wait now is a paced gap, not a halt
        self._held_by_limit = False  # the wait now is the organisation's limit's (a 429)

    @staticmethod
    def _new_pool(settings: DeliverySettings) -> _Senders:
        return _Senders(settings.in_flight)

    # -- control ----------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def reconfigure(self, settings: DeliverySettings) -> None:
        """New settings (a reload), applied by the delivery thread between requests; a
        pause or backoff ends, so a refused token is retried with the new one at once (a
        wait the rate limit imposed stays, and so does the pace)."""
        with self._lock:
            self._pending = settings
        self._wake.set()

    @property
    def effective_settings(self) -> DeliverySettings:
        """The settings in use, or about to be (a reload not yet picked up)."""
        with self._lock:
            return self._pending or self.settings

    def _apply_pending_settings(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        old_client, old_pool = self._client, None
        if pending.in_flight != self.settings.in_flight:
            old_pool, self._pool = self._pool, self._new_pool(pending)
        self._client = _client(pending)
        previous, self.settings = self.settings, pending
        with self._lock:
            # What the pace learned of the organisation's limit stays, and so does a wait
            # the limit imposed (a fleet reloading together must not burst). Any other
            # wait ends: a refused token or a failing endpoint is tried again at once.
            self._pace.window.limit = max(1, pending.batch_size)
            new_target = (previous.endpoint, previous.token) != (pending.endpoint, pending.token)
            if new_target or not (self._only_a_gap or self._held_by_limit):
                self._next_attempt = 0.0
            self._paused = None
        if old_client is not None:
            old_client.close()
        if old_pool is not None:
            old_pool.shutdown()

    def stop(self, drain_timeout: float) -> None:
        """Try a last flush for up to ``drain_timeout`` seconds, then stop. A request sent
        before and still unanswered then is not waited for (nor is ``cloud.timeout``):
        the thread is left behind, its event still queued."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(drain_timeout + STOP_MARGIN_S)
        if self.is_alive():
            log.warning(
                "delivery: a request still unanswered after the drain (%.1fs); its events "
                "stay queued",
                drain_timeout,
            )
        else:
            self._pool.shutdown()
            if self._client is not None:
                self._client.close()

    def report(self) -> DeliveryReport:
        """Delivery as status shows it."""
        with self._lock:
            next_at = None
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                next_at = format_timestamp(datetime.fromtimestamp(time.time() + wait, UTC))
            return DeliveryReport(
                waiting_for_token=self._client is None,
                delivered=self._delivered,
                dead_lettered=self._dead_lettered,
                last_success=self._last_success,
                last_error=self._last_error,
                paused=self._paused,
                next_attempt_at=next_at,
                alive=self.is_alive(),
                pace=self._pace.mode.value,
                pace_rate=round(self._pace.rate, 2) if self._pace.mode is PaceMode.PACED else 0.0,
            )

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        next_nag = 0.0  # when to say again that there is no token
        while not self._stopping.is_set():
            now = time.monotonic()
            if self._client is None and now >= next_nag:
                self._nag_for_token()
                next_nag = now + TOKEN_NAG_INTERVAL_S
            wait: float | None = self._next_attempt - now
            if self._client is None:
                # Nothing to send with: sleep until a reload (or the next reminder).
                wait = max(next_nag - now, 0.0)
            elif wait is not None and wait <= 0:
                # Nothing queued: sleep until the main loop stores an event, a reload or a
                # requeue; no timer wakes an idle daemon.
                wait = None if self._drained else self.settings.flush_interval
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self._apply_pending_settings()
            if time.monotonic() >= self._next_attempt:
                self._guarded_flush(deadline=None)
        if self._next_attempt <= time.monotonic() or self._only_a_gap:
            self._guarded_flush(deadline=self._drain_deadline)

    def _nag_for_token(self) -> None:
        try:
            queued = f"{self._store.stats().depth} event(s) queued"
        except Exception:  # the reminder must not fail on a busy database
            queued = "events stay queued"
        log.warning(
            "not sending: no token; set cloud.token_file (or cloud.token, or QUINTD_TOKEN), "
            "then reload; %s",
            queued,
        )

    def _guarded_flush(self, deadline: float | None) -> None:
        """Flush; whatever goes wrong here (a locked or full database, a client bug) is
        reported and retried after a backoff, never the end of delivery."""
        try:
            self._flush(deadline)
        except Exception as exc:
            log.exception("delivery: unexpected error")
            self._halt(Outcome(Action.BACKOFF, f"{type(exc).__name__}: {exc}"))

    def _flush(self, deadline: float | None) -> None:
        self._drained = False
        if self._client is None:
            return
        while not self._stopping_now(deadline):
            if not self._record_deliveries():
                return
            if self.settings.batch_body:
                key, batch = self._store.claim_batch(
                    min(self.settings.batch_size, MAX_BATCH_EVENTS), MAX_BATCH_BYTES
                )
                batch = [e for e in batch if e.seq not in self._unacked]
                go_on = bool(batch) and self._send_batches([(batch, key)], deadline)
            else:
                batch = [
                    e
                    for e in self._store.peek(self.settings.batch_size)
                    if e.seq not in self._unacked
                ][: self._pace.size()]
                go_on = bool(batch) and self._send_each(batch, deadline)
            if not go_on:
                # Nothing was there to send (not a stop after a failure): wait for news.
                self._drained = not batch and not self._unacked
                if self._drained:
                    self._pace.drained()
                return

    def _record_deliveries(self) -> bool:
        """Delete what the server took from the queue, in one commit. If that fails (a
        full disk, a locked database), the events stay remembered as delivered, nothing is
        sent again, and the pipeline backs off as after a remote failure. True if the
        queue is up to date."""
        if not self._unacked:
            return True
        try:
            self._store.ack(sorted(self._unacked))
        except Exception as exc:
            self._halt(Outcome(Action.BACKOFF, f"recording deliveries failed: {exc}"))
            return False
        self._unacked.clear()
        return True

    def _stopping_now(self, deadline: float | None) -> bool:
        if deadline is None:
            return self._stopping.is_set()
        return time.monotonic() >= deadline

    # -- one round ----------------------------------------------------------------------

    def _send_each(self, batch: list[QueuedEvent], deadline: float | None) -> bool:
        """One event per request, up to ``in_flight`` at once but never two of one session
        at once: each session's events go in order on one worker. An outcome that halts
        the pipeline (429, 5xx, a timeout, 401) stops every worker after its current
        request. True if the pipeline may go on at once."""
        by_session: dict[str, list[QueuedEvent]] = {}
        for event in batch:
            by_session.setdefault(event.session_id, []).append(event)
        halt = threading.Event()

        def send_session(events: list[QueuedEvent]) -> list[_Sent]:
            sent: list[_Sent] = []
            for event in events:
                if halt.is_set() or self._stopping_now(deadline):
                    break
                outcome = self._post(event.body, event.event_id, 1, deadline)
                sent.append(_Sent([event], event.event_id, outcome, time.monotonic()))
                if outcome.halts:
                    halt.set()
                    break
            return sent

        futures = [
            self._pool.submit(functools.partial(send_session, events))
            for events in by_session.values()
        ]
        results: list[_Sent] = []
        errors: list[BaseException] = []
        for future in futures:
            error = future.exception()
            if error is not None:
                errors.append(error)
            else:
                results.extend(future.result())
        self._settle(results)
        if errors:
            raise errors[0]
        return self._go_on(deadline) and not halt.is_set()

    def _go_on(self, deadline: float | None) -> bool:
        """Whether the next round may start at once: everything recorded, no wait (a halt,
        or the pace's gap: not in the last flush at shutdown), no stop."""
        waited = self._next_attempt <= time.monotonic()
        draining = deadline is not None and self._only_a_gap
        return not self._unacked and (waited or draining) and not self._stopping_now(deadline)

    def _send_batches(
        self, batches: list[tuple[list[QueuedEvent], str]], deadline: float | None
    ) -> bool:
        """Batch bodies, one request at a time; a rejected batch comes back from
        :meth:`_settle` as its two halves, each under a key of its own."""
        while batches:
            if self._stopping_now(deadline):
                return False
            events, key = batches.pop(0)
            body = batch_body([e.body for e in events])
            outcome = self._post(body, key, len(events), deadline)
            sent = _Sent(events, key, outcome, time.monotonic())
            batches = self._settle([sent]) + batches
            if sent.outcome.halts or not self._go_on(deadline):
                return False
        return True

    def _post(self, body: bytes, key: str, events: int, deadline: float | None) -> Outcome:
        from quintd.http_client import TransportError  # imported with the client

        assert self._client is not None
        timeout = self.settings.timeout
        if deadline is not None:
            timeout = min(timeout, max(deadline - time.monotonic(), 0.1))
        try:
            reply = self._client.post(INGEST_PATH, body, {"Idempotency-Key": key}, timeout=timeout)
        except TransportError as exc:
            return classify(Failure(str(exc)), events=events, now=time.time())
        answer = Answer(
            status=reply.status,
            # A server may echo the request, Authorization included: the reason goes to
            # the log, the dead-letter table and `queue list`, never a token. Scrubbed of
            # every registered secret (the one place that knows them: registered when the
            # config is loaded and on every reload).
            reason=scrub(" ".join(reply.reason.split()))[:500],
            retry_after=reply.retry_after,
        )
        return classify(answer, events=events, now=time.time())

    # -- outcomes -----------------------------------------------------------------------

    def _settle(self, sent: list[_Sent]) -> list[tuple[list[QueuedEvent], str]]:
        """The one place outcomes reach the store and the pipeline's state: deliveries
        deleted in one commit, rejected events dead-lettered, a rejected batch split in two
        halves (each re-keyed on disk), and one wait for the whole round when anything
        halted it. Returns the halves still to send."""
        delivered = [e for s in sent if s.outcome.action is Action.DELIVERED for e in s.events]
        if delivered:
            self._unacked.update(e.seq for e in delivered)
            with self._lock:
                self._delivered += len(delivered)
                self._last_success = format_timestamp(datetime.now(UTC))
        recorded = self._record_deliveries()
        halves: list[tuple[list[QueuedEvent], str]] = []
        for s in sent:
            if s.outcome.action is Action.DEAD_LETTER:
                for event in s.events:
                    self._store.dead_letter(event, s.outcome.status, s.outcome.reason)
                with self._lock:
                    self._dead_lettered += len(s.events)
                self._note_error(
                    f"HTTP {s.outcome.status}: event dead-lettered: {s.outcome.reason}"
                )
            elif s.outcome.action is Action.SPLIT:
                half = len(s.events) // 2
                for part in (s.events[:half], s.events[half:]):
                    halves.append((part, self._store.rekey(e.seq for e in part)))
        failed = [e.seq for s in sent if s.outcome.halts for e in s.events]
        if failed:
            try:
                self._store.record_attempt(failed)  # how often each was tried, kept on disk
            except Exception as exc:  # a full disk: the count is the least of it
                log.debug("delivery: attempts not recorded: %s", exc)
        if recorded and sent:  # else the pipeline waits already (a local failure)
            self._after_round([s.outcome for s in sent], [s.answered_at for s in sent])
        return halves

    def _halt(self, outcome: Outcome) -> None:
        """The pipeline waits after a local failure, as after a remote one."""
        self._after_round([outcome])

    def _after_round(self, outcomes: list[Outcome], answered: list[float] | None = None) -> None:
        """The pace says how long the pipeline waits before the next round: a halt's wait
        (a Retry-After, a backoff, a paused token), or the gap of a paced pipeline. (The
        pace is this thread's alone; the lock guards what status() reads.)"""
        now = time.monotonic()
        halting = pipeline_outcome(outcomes)
        wait = self._pace.after_round(now, outcomes, self._queued, answered)
        with self._lock:
            self._next_attempt = now + wait
            self._only_a_gap = halting is None
            self._held_by_limit = halting is not None and halting.status == 429
            if halting is None:
                self._paused = None
            elif halting.action is Action.AUTH_PAUSE:
                self._paused = halting.reason
        if halting is None:
            return
        if halting.action is Action.AUTH_PAUSE:
            self._note_error(f"{halting.reason}; delivery paused for {wait:.0f}s")
        else:
            self._note_error(f"{halting.reason}; next attempt in {wait:.1f}s")

    def _queued(self) -> int:
        """Requests' worth of events waiting (a refused pipeline waits its turn in
        proportion): events, or batches of ``batch_size`` with the batch body."""
        try:
            depth = self._store.stats().depth
        except Exception:  # a busy or full database: the shortest turn
            return 1
        per_request = (
            min(self.settings.batch_size, MAX_BATCH_EVENTS) if self.settings.batch_body else 1
        )
        return -(-depth // per_request)

    def _note_error(self, error: str) -> None:
        stamp = format_timestamp(datetime.now(UTC))
        with self._lock:
            self._last_error = f"{stamp} {error}"
        log.warning("delivery: %s", error)


def _client(settings: DeliverySettings) -> IngestClient | None:
    """Keep-alive connections to the endpoint; None without a token."""
    if not settings.token:
        return None
    from quintd.http_client import IngestClient

    return IngestClient(
        settings.endpoint,
        {
            "Authorization": f"Bearer {settings.token}",
            "Content-Type": "application/json",
            "User-Agent": f"quintd/{__version__}",
        },
        connections=settings.in_flight,
    )
