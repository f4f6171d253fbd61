#!/usr/bin/env python3
"""Benchmark: durable enqueue and delivery.

1. Durable enqueue throughput: group commit (1,000 events per transaction) against one
   commit per event (WAL, synchronous=FULL, on this disk).
2. Delivery throughput to a loopback server (own process), one event per request and
   with the batch body, from a backlog; and time on disk (enqueue -> arrival) p50/p99
   under a paced load.
3. A 100,000-event backlog drained through a server that rate-limits with 429 and
   Retry-After: drain time, achieved vs allowed request rate, peak RSS while draining.

Run: python3 tests/bench/delivery.py [--backlog 100000] [--single 20000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from quintd.model import LifecycleEvent  # noqa: E402
from quintd.shipper import DeliverySettings, Shipper  # noqa: E402
from quintd.store import Store  # noqa: E402

TOKEN = "qt_deploy_bench"
NOW = datetime.now(UTC)


def events(n: int) -> list[LifecycleEvent]:
    return [
        LifecycleEvent(
            session_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"b-{i}-{time.time_ns()}")),
            state="active",
            timestamp=NOW,
            platform="claude-code",
            session_name="shop-api",
            kind="start",
        )
        for i in range(n)
    ]


class Server:
    def __init__(self, batch: bool, rate: float = 0.0) -> None:
        argv = [sys.executable, str(HERE / "bench_server.py")]
        if batch:
            argv.append("--batch")
        if rate:
            argv += ["--rate", str(rate)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats", timeout=60) as response:
            return json.load(response)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def shipper_for(store: Store, url: str, batch: bool, batch_size: int) -> Shipper:
    settings = DeliverySettings(
        endpoint=url,
        token=TOKEN,
        timeout=10.0,
        batch_size=batch_size,
        flush_interval=0.05,
        batch_body=batch,
        in_flight=4,
        start_jitter=0.0,  # one machine: what is measured is delivery, not the spread
    )
    return Shipper(store, settings)


def wait_drained(store: Store, timeout: float, on_tick=None) -> float:
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while store.stats().depth:
        if on_tick:
            on_tick()
        if time.monotonic() > deadline:
            raise SystemExit(f"not drained within {timeout}s")
        time.sleep(0.2)  # polling interval of the drain check
    return time.perf_counter() - started


def enqueue_throughput(workdir: Path) -> list[tuple[str, str]]:
    rows = []
    store = Store(workdir / "group.db")
    batch = events(50_000)
    started = time.perf_counter()
    for i in range(0, len(batch), 1000):
        store.apply(batch[i : i + 1000])
    elapsed = time.perf_counter() - started
    rows.append(("enqueue, group commit (1,000/txn)", f"{len(batch) / elapsed:,.0f} events/s"))
    store.close()
    store = Store(workdir / "single.db")
    single = events(2_000)
    started = time.perf_counter()
    for e in single:
        store.apply([e])
    elapsed = time.perf_counter() - started
    rows.append(("enqueue, one commit per event", f"{len(single) / elapsed:,.0f} events/s"))
    store.close()
    return rows


def delivery_throughput(workdir: Path, batch: bool, n: int) -> tuple[str, str]:
    server = Server(batch)
    store = Store(workdir / f"deliver-{batch}.db")
    store.apply(events(n))
    shipper = shipper_for(store, server.url, batch, 500 if batch else 100)
    started = time.perf_counter()
    shipper.start()
    shipper.wake()
    wait_drained(store, 600)
    elapsed = time.perf_counter() - started
    shipper.stop(1.0)
    arrived = len(server.stats()["arrivals"])
    server.close()
    assert arrived >= n, (arrived, n)
    mode = "batch body (500/request)" if batch else "one event per request"
    return (f"deliver {n:,} backlog, {mode}", f"{n / elapsed:,.0f} events/s")


def time_on_disk(workdir: Path, batch: bool, rate: int, seconds: float) -> tuple[str, str]:
    """Enqueue `rate` events/s in groups every 10 ms; time from enqueue to arrival."""
    server = Server(batch)
    store = Store(workdir / f"paced-{batch}.db")
    shipper = shipper_for(store, server.url, batch, 500 if batch else 100)
    shipper.start()
    enqueued: dict[str, float] = {}
    per_tick = max(1, rate // 100)
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end:
        group = events(per_tick)
        now = time.time()
        store.apply(group, now=now)
        for e in group:
            enqueued[e.session_id] = now
        shipper.wake()
        next_tick += 0.01
        time.sleep(max(0.0, next_tick - time.monotonic()))  # pacing the load generator
    wait_drained(store, 120)
    shipper.stop(1.0)
    arrivals = server.stats()["arrivals"]
    server.close()
    lat = sorted((t - enqueued[sid]) * 1000 for sid, _, t in arrivals if sid in enqueued)
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    mode = "batch body" if batch else "one per request"
    return (
        f"time on disk at {rate:,} events/s, {mode}",
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat):,} events)",
    )


def rate_limited_drain(workdir: Path, n: int, allowed: float) -> list[tuple[str, str]]:
    server = Server(batch=True, rate=allowed)
    store = Store(workdir / "limited.db")
    for i in range(0, n, 10_000):
        store.apply(events(min(10_000, n - i)))
    me = psutil.Process()
    rss = [me.memory_info().rss]
    shipper = shipper_for(store, server.url, True, 500)
    started = time.perf_counter()
    shipper.start()
    shipper.wake()
    elapsed = wait_drained(store, 900, on_tick=lambda: rss.append(me.memory_info().rss))
    elapsed = time.perf_counter() - started
    shipper.stop(1.0)
    stats = server.stats()
    server.close()
    accepted = stats["requests"] - stats["limited"]
    assert len(stats["arrivals"]) >= n
    mb = 1024 * 1024
    return [
        (
            f"drain {n:,} backlog through 429 limit ({allowed:g} req/s, 500/request)",
            f"{elapsed:.1f} s, {n / elapsed:,.0f} events/s",
        ),
        (
            "  accepted request rate vs allowed",
            f"{accepted / elapsed:.1f} req/s vs {allowed:g} req/s "
            f"({accepted / elapsed / allowed:.0%}); {stats['limited']} answered 429",
        ),
        (
            "  RSS while draining (start / peak / end)",
            f"{rss[0] / mb:.1f} / {max(rss) / mb:.1f} / {rss[-1] / mb:.1f} MiB",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=20_000)
    parser.add_argument("--allowed", type=float, default=10.0, help="requests/s for 3.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="quintd-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        rows += enqueue_throughput(workdir)
        rows.append(delivery_throughput(workdir, batch=False, n=args.single))
        rows.append(delivery_throughput(workdir, batch=True, n=args.backlog))
        rows.append(time_on_disk(workdir, batch=False, rate=500, seconds=5))
        rows.append(time_on_disk(workdir, batch=True, rate=5000, seconds=5))
        rows += rate_limited_drain(workdir, args.backlog, args.allowed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'what'.ljust(width)}  result")
    for what, result in rows:
        print(f"{what.ljust(width)}  {result}")
    print(
        "\ntargets: >= 20,000 events/s enqueued durably; >= 1,000 events/s one per request; "
        ">= 10,000 events/s with the batch body"
    )
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    raise SystemExit(main())
