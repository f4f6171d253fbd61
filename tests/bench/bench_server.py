#!/usr/bin/env python3
"""A loopback ingest server for the delivery benchmark, run in its own process so that
it does not share the client's interpreter lock.

Usage: bench_server.py [--batch] [--rate REQUESTS_PER_SECOND]
Prints its port on stdout. POST /v1/sessions/ingest records each event's arrival time
(and answers 429 with Retry-After once more than --rate requests came in the current
second); GET /stats returns {"requests", "limited", "arrivals": [[session_id, state,
time], ...]}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", action="store_true")
    parser.add_argument("--rate", type=float, default=0.0, help="0: no limit")
    args = parser.parse_args()
    lock = threading.Lock()
    arrivals: list[tuple[str, str, float]] = []
    counters = {"requests": 0, "limited": 0, "window": 0, "in_window": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

        def log_message(self, format: str, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(
                    {
                        "requests": counters["requests"],
                        "limited": counters["limited"],
                        "arrivals": arrivals,
                    }
                ).encode()
            self._reply(200, body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            with lock:
                counters["requests"] += 1
                if args.rate:
                    window = int(now)
                    if window != counters["window"]:
                        counters["window"], counters["in_window"] = window, 0
                    counters["in_window"] += 1
                    if counters["in_window"] > args.rate:
                        counters["limited"] += 1
                        wait = max(1, math.ceil(window + 1 - now))
                        self._reply(429, b'{"error":"rate limited"}', {"Retry-After": str(wait)})
                        return
            body = json.loads(raw)
            events = body["events"] if args.batch else [body]
            with lock:
                arrivals.extend((e["session_id"], e["state"], now) for e in events)
            self._reply(200, b'{"ok":true}')

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
