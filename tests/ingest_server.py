"""A real HTTP ingest server on 127.0.0.1 for the test suite.

It validates every request as strictly as the contract allows: bearer token, JSON
content type, the exact field set, UUID v5 ids, the state enum and ISO 8601
timestamps with a zone. Valid events are recorded; anything else is answered 400
and recorded as a violation, which tests assert to be empty.

Faults can be queued: ``server.fail_next(status, headers, count)``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from own_agents import is_foreign

REQUIRED = {"session_id", "state", "timestamp"}
ALLOWED = REQUIRED | {"session_name", "model", "signing_id", "platform", "parent_id"}
STATES = {"active", "idle", "ended"}


def validate_event(event: Any) -> str | None:
    """The reason an event breaks the contract, or None if it is valid."""
    if not isinstance(event, dict):
        return "event is not an object"
    keys = set(event)
    if not keys >= REQUIRED:
        return f"missing fields {sorted(REQUIRED - keys)}"
    if not keys <= ALLOWED:
        return f"unknown fields {sorted(keys - ALLOWED)}"
    try:
        sid = uuid.UUID(event["session_id"])
    except (ValueError, TypeError, AttributeError):
        return "session_id is not a UUID"
    if sid.version != 5 or str(sid) != event["session_id"]:
        return "session_id is not a canonical UUID v5"
    if event.get("parent_id") is not None:
        try:
            if uuid.UUID(event["parent_id"]).version != 5:
                return "parent_id is not a UUID v5"
        except (ValueError, TypeError, AttributeError):
            return "parent_id is not a UUID"
    if event["state"] not in STATES:
        return f"state {event['state']!r} not in {sorted(STATES)}"
    ts = event["timestamp"]
    if not isinstance(ts, str):
        return "timestamp is not a string"
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "timestamp is not ISO 8601"
    if parsed.tzinfo is None:
        return "timestamp has no zone"
    for key in ("session_name", "model", "signing_id", "platform"):
        if key in event and not isinstance(event[key], str):
            return f"{key} is not a string"
    return None


def _all_foreign(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    events = body.get("events") if isinstance(body, dict) and "events" in body else [body]
    return isinstance(events, list) and bool(events) and all(is_foreign(e) for e in events)


@dataclass
class Received:
    event: dict[str, Any]
    idempotency_key: str | None
    received_at: float


@dataclass
class Fault:
    """One misbehaviour. action: "reply" (answer ``status``), "delay" (store, then answer
    200 after ``delay`` seconds), "drop_before" (close the connection without storing or
    answering), "drop_after" (store, then close without answering)."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error":"fault"}'
    action: str = "reply"
    delay: float = 0.0


class IngestServer:
    def __init__(
        self,
        token: str = "qt_deploy_test_token",
        batch: bool = False,
        reject: Callable[[dict[str, Any]], str | None] | None = None,
        own_only: bool = True,
    ) -> None:
        """``reject(event)``: a reason to answer 400 for a valid event (a strict server's
        own rules), or None to accept it."""
        self.token = token
        self.batch = batch
        self.reject = reject
        # Events of agents that are not this test run's are set aside (own_agents.py).
        self.own_only = own_only
        self.foreign = 0
        self.foreign_keys: set[str | None] = set()  # their Idempotency-Keys (retries once)
        self.events: list[Received] = []
        self.violations: list[str] = []
        self.requests = 0
        self.request_sizes: list[int] = []  # bytes of each request's body
        self._faults: list[Fault] = []
        # The gate (hold/release): while it is held, every request waits, its events
        # stored, for its answer; `held` are waiting now, `most_held` the most at once.
        self._gate_held = False
        self.held = 0
        self.most_held = 0
        self._fault_source: Callable[[], Fault | None] | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        handler = self._handler_class()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> IngestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail_next(
        self,
        status: int = 500,
        headers: dict[str, str] | None = None,
        count: int = 1,
        body: bytes = b'{"error":"fault"}',
        action: str = "reply",
        delay: float = 0.0,
    ) -> None:
        with self._lock:
            self._faults.extend(
                Fault(status, headers or {}, body, action, delay) for _ in range(count)
            )

    def hold(self) -> None:
        """From now on each request waits for :meth:`release` before its answer."""
        with self._cond:
            self._gate_held = True
            self.most_held = self.held

    def release(self) -> None:
        with self._cond:
            self._gate_held = False
            self._cond.notify_all()

    def wait_held(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` requests wait at the gate at once."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.held < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {count} requests at once; "
                        f"{self.held} waiting, at most {self.most_held} at once"
                    )
                self._cond.wait(remaining)

    def set_fault_source(self, source: Callable[[], Fault | None] | None) -> None:
        """A function asked for each request that has no queued fault (random chaos)."""
        with self._lock:
            self._fault_source = source

    def keys_by_event(self) -> dict[tuple[str, str, str], set[str | None]]:
        """(session_id, state, timestamp) -> the Idempotency-Keys it arrived under."""
        out: dict[tuple[str, str, str], set[str | None]] = {}
        with self._lock:
            for r in self.events:
                ident = (r.event["session_id"], r.event["state"], r.event["timestamp"])
                out.setdefault(ident, set()).add(r.idempotency_key)
        return out

    def wait_for(
        self,
        predicate: Callable[[list[Received]], bool],
        timeout: float = 20.0,
        what: str = "condition",
    ) -> list[Received]:
        """Block until predicate(events) holds; fail loudly with what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; received "
                        f"{[r.event for r in self.events]}; violations {self.violations}"
                    )
                self._cond.wait(remaining)
            return list(self.events)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path in ("/health", "/ready"):
                    self._reply(200, b'{"ok":true}')
                else:
                    self._reply(404, b'{"error":"not found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:
                    # The client went away mid-body (killed, in the crash tests): no
                    # request arrived, so nothing was broken and nothing is answered.
                    self.close_connection = True
                    return
                if server.own_only and _all_foreign(raw):
                    # Another agent on this machine (a developer's, another test run's):
                    # accepted, set aside, and never given a test's fault.
                    with server._cond:
                        server.foreign += 1
                        server.foreign_keys.add(self.headers.get("Idempotency-Key"))
                    self._reply(200, b'{"ok":true}')
                    return
                with server._lock:
                    server.requests += 1
                    server.request_sizes.append(len(raw))
                    fault = server._faults.pop(0) if server._faults else None
                    if fault is None and server._fault_source is not None:
                        fault = server._fault_source()
                if self.path != "/v1/sessions/ingest":
                    self._violation(404, f"wrong path {self.path}")
                    return
                if self.headers.get("Authorization") is None:
                    self._reply(401, b'{"error":"Authorization header required"}')
                    return
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._violation(401, "wrong bearer token")
                    return
                if fault is not None and fault.action == "drop_before":
                    self._drop()
                    return
                if fault is not None and fault.action == "reply":
                    # As real servers sometimes do: the error body says what was sent,
                    # headers included (so a client that logs error bodies would log its
                    # own token, unless it redacts it).
                    echo = {
                        "request": {
                            "authorization": self.headers.get("Authorization"),
                            "path": self.path,
                            "headers": dict(self.headers.items()),
                        }
                    }
                    body = json.dumps(echo).encode() + b" " + fault.body
                    self._reply(fault.status, body, fault.headers)
                    return
                if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    self._violation(400, "content type is not application/json")
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._violation(400, "body is not JSON")
                    return
                if server.batch:
                    if not isinstance(body, dict) or set(body) != {"events"}:
                        self._violation(400, "batch body is not {events: [...]}")
                        return
                    events = body["events"]
                else:
                    events = [body]
                for event in events:
                    reason = validate_event(event)
                    if reason:
                        self._violation(400, reason)
                        return
                    refusal = server.reject(event) if server.reject else None
                    if refusal:
                        self._reply(400, json.dumps({"error": refusal}).encode())
                        return
                key = self.headers.get("Idempotency-Key")
                with server._cond:
                    now = time.monotonic()
                    server.events.extend(Received(e, key, now) for e in events)
                    server._cond.notify_all()
                with server._cond:
                    server.held += 1
                    server.most_held = max(server.most_held, server.held)
                    server._cond.notify_all()
                    while server._gate_held:
                        server._cond.wait()
                    server.held -= 1
                if fault is not None and fault.action == "drop_after":
                    self._drop()
                    return
                if fault is not None and fault.action == "delay":
                    time.sleep(fault.delay)  # the fault itself: a server too slow to answer
                self._reply(200, b'{"ok":true}')

            def _drop(self) -> None:
                """Close the connection with no answer (a reset, as far as the client sees)."""
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _violation(self, status: int, reason: str) -> None:
                with server._cond:
                    server.violations.append(reason)
                    server._cond.notify_all()
                self._reply(status, json.dumps({"error": reason}).encode())

            def _reply(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                with contextlib.suppress(OSError):  # the client may have gone (timeout)
                    self.end_headers()
                    self.wfile.write(body)

        return Handler
