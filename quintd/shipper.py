"""Delivery: a background thread that sends queued events to the ingest endpoint.

An event leaves the queue only after a 2xx for it. Events go out oldest first, one
request at a time, so a session's events reach the server in order. What the
server says decides what happens next:

- 2xx: delete from the queue;
- 400, 413 (single event), 422: the server will never take it: dead-letter table,
  with the server's reason; the rest flows on;
- 401, 403: the token is refused: pause delivery (everything kept), retry after a
  long pause or when the configuration is reloaded;
- 429, 503: wait as long as ``Retry-After`` says (seconds or HTTP-date), else back off;
- other statuses, timeouts and connection errors: exponential backoff with full jitter.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from quintd import __version__
from quintd.config import LoadedConfig, is_loopback_host
from quintd.sessions import format_timestamp
from quintd.store import QueuedEvent, Store

log = logging.getLogger("quintd.shipper")

INGEST_PATH = "/v1/sessions/ingest"
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
AUTH_PAUSE_S = 900.0
MAX_RETRY_AFTER_S = 3600.0
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class DeliveryStatus:
    waiting_for_token: bool
    delivered: int
    dead_lettered: int
    last_success: str | None
    last_error: str | None
    paused: str | None  # why delivery is held back, if it is
    next_attempt_at: str | None
    alive: bool  # the delivery thread runs


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None
    when absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(moment.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


def full_jitter_backoff(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff, capped, then jittered over the whole range."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(failures, 30))
    return max(0.1, ceiling * float(rand()))


@dataclass(frozen=True)
class DeliverySettings:
    """Where and how to deliver: what the configuration says, in one place for start
    and reload."""

    endpoint: str
    token: str | None
    timeout: float
    batch_size: int
    flush_interval: float
    batch_body: bool
    in_flight: int = 4

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> DeliverySettings:
        cfg = loaded.config
        return cls(
            endpoint=cfg.cloud.endpoint,
            token=loaded.token,
            timeout=cfg.cloud.timeout,
            batch_size=cfg.queue.batch_size,
            flush_interval=cfg.queue.flush_interval,
            batch_body=cfg.cloud.batch_body,
            in_flight=cfg.queue.in_flight,
        )

    @property
    def url(self) -> str:
        return self.endpoint + INGEST_PATH


class Shipper(threading.Thread):
    def __init__(self, store: Store, settings: DeliverySettings) -> None:
        super().__init__(name="quintd-shipper", daemon=True)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.in_flight, thread_name_prefix="quintd-send"
        )
        self._store = store
        self._settings = settings
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drain_deadline = 0.0
        self._lock = threading.Lock()
        self._failures = 0
        self._next_attempt = 0.0  # monotonic; 0 = now
        self._delivered = 0
        self._dead_lettered = 0
        self._last_success: str | None = None
        self._last_error: str | None = None
        self._paused: str | None = None
        self._pending: DeliverySettings | None = None
        self._client = _client(settings)

    # -- control ----------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def reconfigure(self, settings: DeliverySettings) -> None:
        """New settings (a reload), applied by the delivery thread between requests; a
        pause or backoff ends, so a refused token is retried with the new one at once.
        The number of workers stays until a restart."""
        with self._lock:
            self._pending = settings
        self._wake.set()

    def _apply_pending_settings(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        old = self._client
        self._settings = pending
        self._client = _client(pending)
        with self._lock:
            self._failures = 0
            self._next_attempt = 0.0
            self._paused = None
        if old is not None:
            old.close()

    def stop(self, drain_timeout: float) -> None:
        """Try a last flush for up to ``drain_timeout`` seconds, then stop."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(drain_timeout + self._settings.timeout + 1.0)
        if not self.is_alive():
            self._pool.shutdown(wait=False)
            if self._client is not None:
                self._client.close()

    def status(self) -> DeliveryStatus:
        with self._lock:
            next_at = None
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                next_at = format_timestamp(datetime.fromtimestamp(time.time() + wait, UTC))
            return DeliveryStatus(
                waiting_for_token=self._client is None,
                delivered=self._delivered,
                dead_lettered=self._dead_lettered,
                last_success=self._last_success,
                last_error=self._last_error,
                paused=self._paused,
                next_attempt_at=next_at,
                alive=self.is_alive(),
            )

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        if self._client is None:
            log.warning(
                "delivery waits for a token: set cloud.token, cloud.token_file "
                "or QUINTD_TOKEN; events stay queued"
            )
        while not self._stopping.is_set():
            wait = max(self._next_attempt - time.monotonic(), 0.0) or self._settings.flush_interval
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self._apply_pending_settings()
            if time.monotonic() >= self._next_attempt:
                self._guarded_flush(deadline=None)
        if self._next_attempt <= time.monotonic():
            self._guarded_flush(deadline=self._drain_deadline)

    def _guarded_flush(self, deadline: float | None) -> None:
        """Flush; whatever goes wrong (a locked or full database, a client bug) is
        reported and retried later, never the end of delivery."""
        try:
            self._flush(deadline)
        except Exception as exc:
            log.exception("delivery: unexpected error")
            self._retry_later(f"{type(exc).__name__}: {exc}", None)

    def _flush(self, deadline: float | None) -> None:
        if self._client is None:
            return
        while True:
            if deadline is None and self._stopping.is_set():
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self._settings.batch_body:
                key, batch = self._store.claim_batch(
                    min(self._settings.batch_size, MAX_BATCH_EVENTS), MAX_BATCH_BYTES
                )
                if not batch or not self._send_many(batch, key, deadline):
                    return
                continue
            batch = self._store.peek(self._settings.batch_size)
            if not batch or not self._send_each(batch, deadline):
                return

    def _send_each(self, batch: list[QueuedEvent], deadline: float | None) -> bool:
        """Send events one per request, up to ``in_flight`` at once but never two of one
        session at once: each session's events go in order on one worker. A failure
        that concerns the whole pipeline (429, 5xx, timeouts, 401) halts every worker
        after its current request. Deliveries are deleted in one commit at the end.
        True if the pipeline may go on at once."""
        by_session: dict[str, list[QueuedEvent]] = {}
        for event in batch:
            by_session.setdefault(event.session_id, []).append(event)
        halt = threading.Event()
        delivered: list[int] = []

        def send_session(events: list[QueuedEvent]) -> None:
            for event in events:
                if halt.is_set() or self._stopping_now(deadline):
                    return
                response = self._post(event.body, event.event_id, deadline)
                if response is None or not self._handle(
                    response, [event], event.event_id, deadline, delivered
                ):
                    halt.set()
                    return

        futures = [self._pool.submit(send_session, events) for events in by_session.values()]
        errors = [f.exception() for f in futures]
        self._store.ack(delivered)
        for error in errors:
            if error is not None:
                raise error
        return not halt.is_set() and not self._stopping_now(deadline)

    def _stopping_now(self, deadline: float | None) -> bool:
        if deadline is None:
            return self._stopping.is_set()
        return time.monotonic() >= deadline

    def _send_many(self, events: list[QueuedEvent], key: str, deadline: float | None) -> bool:
        body = b'{"events":[' + b",".join(e.body for e in events) + b"]}"
        response = self._post(body, key, deadline)
        if response is None:
            return False
        return self._handle(response, events, key, deadline, None)

    def _post(self, body: bytes, key: str, deadline: float | None) -> httpx.Response | None:
        assert self._client is not None
        timeout = self._settings.timeout
        if deadline is not None:
            timeout = min(timeout, max(deadline - time.monotonic(), 0.1))
        try:
            return self._client.post(
                self._settings.url, content=body, headers={"Idempotency-Key": key}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            self._retry_later(f"{type(exc).__name__}: {exc}", None)
            return None

    def _handle(
        self,
        response: httpx.Response,
        events: list[QueuedEvent],
        key: str,
        deadline: float | None,
        delivered: list[int] | None,
    ) -> bool:
        """Act on the server's answer; ``delivered`` collects acknowledged seqs to delete
        later in one commit (None: delete now). True if the pipeline may go on."""
        status = response.status_code
        if 200 <= status < 300:
            if delivered is None:
                self._store.ack(e.seq for e in events)
            else:
                delivered.extend(e.seq for e in events)
            with self._lock:
                self._delivered += len(events)
                self._failures = 0
                self._paused = None
                self._last_success = format_timestamp(datetime.now(UTC))
            return True
        reason = _reason(response)
        if status in (400, 413, 422) and len(events) > 1:
            # The server stored none of it: split until the culprit stands alone. Each
            # half gets its own key, kept on disk, so its retries reuse it.
            half = len(events) // 2
            first, second = events[:half], events[half:]
            first_key = self._store.rekey(e.seq for e in first)
            second_key = self._store.rekey(e.seq for e in second)
            return self._send_many(first, first_key, deadline) and self._send_many(
                second, second_key, deadline
            )
        if status in (400, 413, 422):
            for event in events:
                self._store.dead_letter(event, status, reason)
            with self._lock:
                self._dead_lettered += len(events)
            self._note_error(f"HTTP {status}: event dead-lettered: {reason}")
            return True
        if status in (401, 403):
            self._pause(f"HTTP {status}: token refused: {reason}", AUTH_PAUSE_S)
            return False
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        self._retry_later(f"HTTP {status}: {reason}", retry_after)
        return False

    def _retry_later(self, error: str, delay: float | None) -> None:
        with self._lock:
            self._failures += 1
            if delay is None:
                delay = full_jitter_backoff(self._failures)
            self._next_attempt = time.monotonic() + delay
        self._note_error(f"{error}; next attempt in {delay:.1f}s")

    def _pause(self, reason: str, seconds: float) -> None:
        with self._lock:
            self._paused = reason
            self._next_attempt = time.monotonic() + seconds
        self._note_error(f"{reason}; delivery paused for {seconds:.0f}s")

    def _note_error(self, error: str) -> None:
        stamp = format_timestamp(datetime.now(UTC))
        with self._lock:
            self._last_error = f"{stamp} {error}"
        log.warning("delivery: %s", error)


def _client(settings: DeliverySettings) -> httpx.Client | None:
    """One keep-alive client for the endpoint; None without a token."""
    if not settings.token:
        return None
    host = urlsplit(settings.endpoint).hostname or ""
    return httpx.Client(
        timeout=settings.timeout,
        headers={
            "Authorization": f"Bearer {settings.token}",
            "Content-Type": "application/json",
            "User-Agent": f"quintd/{__version__}",
        },
        follow_redirects=False,
        # A corporate proxy from the environment applies to the cloud, never to a local
        # relay or test server.
        trust_env=not is_loopback_host(host),
    )


def _reason(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:500] if text else response.reason_phrase
