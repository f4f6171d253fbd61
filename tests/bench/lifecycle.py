#!/usr/bin/env python3
"""Benchmark: how soon a session's lifecycle is on disk.

Runs `quintd run` at the default scan interval (1 s) against a loopback server, starts and
stops N fake agents (default 60) with random lifetimes and phases, and reads the daemon's
JSON log, whose "session start" / "session end" lines are written right after the
transaction that committed the event. Prints p50 and p99 of process start -> `active`
committed and process exit -> `ended` committed, against the target (p99 <= 1.5 x the
scan interval; the vendor: 5 s scans, ~10 s reap).

Run: python3 tests/bench/lifecycle.py [--agents 60]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="qd-bench-"))
    server = subprocess.Popen(
        [sys.executable, str(HERE / "bench_server.py")], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    config = work / "config.toml"
    config.write_text(
        f'[cloud]\nendpoint = "http://127.0.0.1:{port}"\ntoken = "qt_deploy_bench"\n'
        f'[paths]\nstate_dir = "{work / "state"}"\nruntime_dir = "{work / "run"}"\n'
        "[sessions]\nidle_after = 3600\n"  # scan.interval stays at its default
    )
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quintd",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            stdout=log,
            stderr=log,
            cwd=HERE.parents[1],
        )
    bindir = work / "bin"
    bindir.mkdir()
    exe = bindir / "codex"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    started: dict[int, float] = {}
    exited: dict[int, float] = {}
    lock = threading.Lock()
    try:
        deadline = time.monotonic() + 30
        while "started" not in log_path.read_text():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"daemon did not start:\n{log_path.read_text()}")
            time.sleep(0.05)

        def run_agent() -> None:
            proc = subprocess.Popen([str(exe), "600"])
            start = psutil.Process(proc.pid).create_time()
            time.sleep(rng.uniform(2.5, 4.5))  # its lifetime
            proc.send_signal(signal.SIGKILL)
            gone = time.time()
            proc.wait()
            with lock:
                started[proc.pid] = start
                exited[proc.pid] = gone

        threads = []
        for _ in range(args.agents):
            thread = threading.Thread(target=run_agent)
            thread.start()
            threads.append(thread)
            time.sleep(rng.uniform(0.1, 0.5))  # random phase against the scan tick
        for thread in threads:
            thread.join()
        time.sleep(3)  # let the last exits be seen and committed
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        server.terminate()
        server.wait(10)
    committed: dict[tuple[int, str], float] = {}
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") in ("session start", "session end") and entry.get("pid"):
            at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            committed.setdefault((entry["pid"], entry["state"]), at)
    to_active = [
        committed[(pid, "active")] - t for pid, t in started.items() if (pid, "active") in committed
    ]
    to_ended = [
        committed[(pid, "ended")] - t for pid, t in exited.items() if (pid, "ended") in committed
    ]
    shutil.rmtree(work, ignore_errors=True)
    interval = 1.0
    print(f"{args.agents} agents, scan interval {interval:g} s (the default); seconds")
    print(f"{'':32}{'n':>5}{'p50':>8}{'p99':>8}{'max':>8}   target p99")
    for what, values in (
        ("process start -> active committed", to_active),
        ("process exit -> ended committed", to_ended),
    ):
        print(
            f"{what:32}{len(values):>5}{statistics.median(values):>8.3f}"
            f"{percentile(values, 0.99):>8.3f}{max(values):>8.3f}   <= {1.5 * interval:.1f}"
        )
    missing = args.agents - min(len(to_active), len(to_ended))
    if missing:
        print(f"{missing} agent(s) without both events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
