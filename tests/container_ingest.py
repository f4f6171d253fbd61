"""The loopback ingest server of tests/test_systemd_container.py, run inside the
container by its own python3, as a unit of its systemd:

    python3 container_ingest.py OUT

It is tests/ingest_server.py (the contract checked strictly) on the container's
127.0.0.1, with what it receives written where the test reads it: OUT/url once it
listens, one JSON line per accepted event in OUT/events.jsonl (the event, its
Idempotency-Key, when it arrived) and one per contract violation in
OUT/violations.jsonl. The token is read from OUT/token (never a command line), and how
to answer from OUT/mode at each request: ``ok``, ``refuse <status>``, ``delay <seconds>``
(accept, then answer 200 that much later).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ingest_server import Fault, IngestServer


def main(out: Path) -> None:
    token = (out / "token").read_text().strip()

    def fault() -> Fault | None:
        try:
            mode = (out / "mode").read_text().split()
        except FileNotFoundError:
            return None
        if not mode or mode[0] == "ok":
            return None
        if mode[0] == "refuse":
            return Fault(status=int(mode[1]))
        if mode[0] == "delay":
            return Fault(action="delay", delay=float(mode[1]))
        raise ValueError(f"unknown mode {mode}")

    server = IngestServer(token=token, own_only=False)  # every agent here is the test's
    server.set_fault_source(fault)
    with (
        server,
        open(out / "events.jsonl", "a") as events,
        open(out / "violations.jsonl", "a") as violations,
    ):
        ready = out / "url.tmp"
        ready.write_text(server.url)
        ready.rename(out / "url")
        seen_events = seen_violations = 0
        while True:
            with server._cond:
                while (
                    len(server.events) == seen_events and len(server.violations) == seen_violations
                ):
                    server._cond.wait()
                new_events = server.events[seen_events:]
                new_violations = server.violations[seen_violations:]
            seen_events += len(new_events)
            seen_violations += len(new_violations)
            for received in new_events:
                line = {"event": received.event, "key": received.idempotency_key}
                events.write(json.dumps(dict(line, at=time.time())) + "\n")
            for reason in new_violations:
                violations.write(json.dumps(reason) + "\n")
            events.flush()
            violations.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
