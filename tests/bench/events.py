#!/usr/bin/env python3
"""Benchmark: the scanner fed by the kernel's process events, side by side with the scan
every second, in the same run (Linux, as root).

Two loops run at once, each in a process of its own, as the daemon's main loop would run
its scanner (no tracker, no store, no delivery: the detection layer alone):
- events: the netlink process connector (quintd/proc_events.py) in the wait, each batch
  fed to the scanner (execs judged, looked at at once), a pass every second and early
  (>= 50 ms after the last) when the feed asks for one, /proc listed every 30 s;
- scan: a pass every second, each listing /proc.

With N extra idle processes (default 1,000), it measures:
- idle: each loop's CPU over a window, against `ps -axo ...` spawned and parsed every 5 s;
- start -> found for a process-only agent (a copy of `sleep` named `amp`; no signing
  identity to wait for: the cached case): when the events loop looked at it, when a pass
  of each loop returned it;
- 50 ms agents: how many of 100 each loop saw;
- a storm: workers exec'ing /bin/true as fast as they can for 10 s, while agents start
  (one living 1 s every 0.5 s, and 50 ms ones): each loop's CPU, agents missed, and the
  events the kernel dropped.

Run: sudo python3 tests/bench/events.py [--procs 1000] [--idle 60] [--runs 40]
     [--short 100] [--storm 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

EVENT_PASS_GAP_S = 0.05  # the daemon's shortest gap between two passes brought forward
PS_ARGS = ["ps", "-axo", "pid,ppid,pcpu,rss,lstart,comm,args"]


# -- the two loops (run as `events.py --loop events|scan`) -----------------------------


def loop(mode: str) -> None:
    from quintd.proc_events import READ_GAP_S, ProcEvents
    from quintd.scanner import Scanner
    from quintd.waiter import Waiter

    stop = threading.Event()
    asked = threading.Event()  # SIGUSR1: print the counters
    waiter = Waiter(kernel_exits=False)

    def on_term(*_: object) -> None:
        stop.set()
        waiter.wake()

    def on_usr1(*_: object) -> None:
        asked.set()
        waiter.wake()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    out = sys.stdout
    scanner = Scanner()
    events = None
    if mode == "events":
        events = ProcEvents.open()
        scanner.follow_events(30.0)
        waiter.add_reader(events.fileno(), gap=READ_GAP_S)
    elif mode == "quiet":  # the events loop on a machine where nothing starts or ends
        scanner.follow_events(30.0)
    reported: set[int] = set()
    found: set[int] = set()

    def tell(kind: str, pids: list[int]) -> None:
        now = time.monotonic()
        for pid in pids:
            out.write(json.dumps({kind: pid, "t": now}) + "\n")
        if pids:
            out.flush()

    def do_pass() -> None:
        agents = [a.pid for a in scanner.scan() if a.platform == "amp"]
        tell("reported", [p for p in agents if p not in reported])
        reported.intersection_update(agents)
        reported.update(agents)

    def counters() -> None:
        stats: dict[str, Any] = {"scan": vars(scanner.stats)}
        if events is not None:
            stats["events"] = vars(events.stats)
        out.write(json.dumps({"stats": stats}) + "\n")
        out.flush()

    do_pass()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    now = time.monotonic()
    last_pass, next_tick, soon = now, now + 1.0, False
    while not stop.is_set():
        wake_at = min(next_tick, last_pass + EVENT_PASS_GAP_S) if soon else next_tick
        woke = waiter.wait(max(wake_at - time.monotonic(), 0.0))
        if asked.is_set():
            asked.clear()
            counters()
        if events is not None and woke.readable:
            if scanner.feed(events.read()):
                soon = True
            agents = scanner.exit_watch()
            tell("found", [p for p in agents if p not in found])
            found.intersection_update(agents)
            found.update(agents)
        now = time.monotonic()
        if now >= next_tick or (soon and now >= last_pass + EVENT_PASS_GAP_S):
            next_tick = max(next_tick + 1.0, now) if now >= next_tick else next_tick
            soon = False
            last_pass = now
            do_pass()
    counters()
    if events is not None:
        events.close()


class Loop:
    """One loop's process and what it reported (pid -> monotonic time)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--loop", mode],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        self.found: dict[int, list[float]] = {}
        self.reported: dict[int, list[float]] = {}
        self.stats: dict[str, Any] = {}
        self.counted = threading.Event()
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            record = json.loads(line)
            if "ready" in record:
                self.ready.set()
            elif "stats" in record:
                self.stats = record["stats"]
                self.counted.set()
            elif "found" in record:
                self.found.setdefault(record["found"], []).append(record["t"])
            elif "reported" in record:
                self.reported.setdefault(record["reported"], []).append(record["t"])

    def counters(self) -> dict[str, Any]:
        """The loop's counters now."""
        self.counted.clear()
        self.proc.send_signal(signal.SIGUSR1)
        if not self.counted.wait(30):
            raise SystemExit(f"the {self.mode} loop does not answer")
        return self.stats

    def cpu(self) -> float:
        return cpu_ns(self.proc.pid) / 1e9

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def finish(self) -> None:
        self.counted.clear()
        self.proc.terminate()
        self.proc.wait()
        self.counted.wait(5)


# -- measurements ---------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process and the children it has reaped."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """CPU time of a process's threads, to the nanosecond (/proc/<pid>/task/*/schedstat):
    the loops are too frugal for clock ticks."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


PS_LOOP = """
import subprocess, sys, time
args = sys.argv[1:]
while True:
    out = subprocess.run(args, capture_output=True, text=True).stdout
    rows = [line.split(None, 9) for line in out.splitlines()[1:]]
    time.sleep(5)
"""

STORM = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
true = sys.argv[2]
n = 0
while time.monotonic() < end:
    pid = os.posix_spawn(true, [true], {})
    os.waitpid(pid, 0)
    n += 1
print(n)
"""


def percentiles(samples: list[float]) -> tuple[str, str, str]:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return "-", "-", "-"
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{statistics.median(ms):.1f}", f"{p99:.1f}", f"{ms[-1]:.1f}"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def spawn_idle(count: int, workdir: Path) -> list[subprocess.Popen[bytes]]:
    sleeper = workdir / "idle-worker"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleeper)
    return [
        subprocess.Popen([str(sleeper), "3600"], preexec_fn=die_with_parent) for _ in range(count)
    ]


def agent(bindir: Path, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(bindir / "amp"), str(seconds)], preexec_fn=die_with_parent)


def idle(loops: list[Loop], window: float) -> None:
    ps_loop = subprocess.Popen(
        [sys.executable, "-c", PS_LOOP, *PS_ARGS], preexec_fn=die_with_parent
    )
    time.sleep(2)  # its first ps is out of the window
    before = loops[0].counters()
    start = {id(x): x.cpu() for x in loops}
    ps_start = proc_cpu(ps_loop.pid)
    time.sleep(window)
    used = {id(x): x.cpu() - start[id(x)] for x in loops}
    ps_used = proc_cpu(ps_loop.pid) - ps_start
    after = loops[0].counters()
    ps_loop.kill()
    ps_loop.wait()
    e0, e1, s0, s1 = before["events"], after["events"], before["scan"], after["scan"]
    print(
        f"idle, {window:.0f} s; meanwhile other users' processes came and went: "
        f"{e1['received'] - e0['received']:,} events, of which "
        f"{s1['looked_at_once'] - s0['looked_at_once']} execs were looked at "
        "(the quiet loop is the events loop's passes alone, as on a machine at rest):"
    )
    rows = [
        (
            f"{x.mode} loop",
            f"{used[id(x)]:.3f}",
            f"{100 * used[id(x)] / window:.3f}",
            f"{used[id(x)] / ps_used:.3f}x" if ps_used else "-",
            f"{x.rss():.1f}",
        )
        for x in loops
    ]
    ps_row = ("ps -axo ... every 5 s, parsed", f"{ps_used:.3f}", f"{100 * ps_used / window:.3f}")
    rows.append((*ps_row, "1x", ""))
    print_table(("what", "CPU s", "% of a core", "/ ps", "RSS MiB"), rows)


def latency(loops: list[Loop], bindir: Path, runs: int) -> None:
    loops = loops[:2]  # events, scan
    starts: dict[int, float] = {}
    for _ in range(runs):
        time.sleep(random.uniform(0.0, 1.0))  # a random phase of the scan interval
        t0 = time.monotonic()
        proc = agent(bindir, 30)
        starts[proc.pid] = t0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(proc.pid in x.reported for x in loops):
            time.sleep(0.005)  # polling a deadline wait: arrival is stamped by the loops
        proc.kill()
        proc.wait()
    events, scan = loops
    rows = [
        ("events: looked at, from its exec", *delays(events.found, starts)),
        ("events: returned by a pass", *delays(events.reported, starts)),
        ("scan every 1 s: returned by a pass", *delays(scan.reported, starts)),
    ]
    print()
    print(f"start -> found, process-only agent (no identity to wait for), {runs} runs:")
    print_table(("what", "p50 ms", "p99 ms", "max ms", "seen"), rows)


def delays(seen: dict[int, list[float]], starts: dict[int, float]) -> tuple[str, ...]:
    samples = [seen[pid][0] - t0 for pid, t0 in starts.items() if pid in seen]
    return (*percentiles(samples), f"{len(samples)}/{len(starts)}")


def short_lived(loops: list[Loop], bindir: Path, count: int) -> dict[str, int]:
    pids = []
    for _ in range(count):
        proc = agent(bindir, 0.05)
        proc.wait()
        pids.append(proc.pid)
        time.sleep(random.uniform(0.05, 0.25))
    time.sleep(1.5)  # the scan loop's last pass
    return {x.mode: sum(1 for p in pids if p in x.reported) for x in loops[:2]}


def storm(loops: list[Loop], bindir: Path, seconds: float, workers: int) -> None:
    true = shutil.which("true") or "/bin/true"
    before = loops[0].counters()
    start = {id(x): x.cpu() for x in loops[:2]}
    stormers = [
        subprocess.Popen(
            [sys.executable, "-c", STORM, str(seconds), true],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        for _ in range(workers)
    ]
    began = time.monotonic()
    long_agents, short_agents = [], []
    while time.monotonic() - began < seconds:
        long_agents.append(agent(bindir, 1.0))
        short = agent(bindir, 0.05)
        time.sleep(0.5)
        short.wait()
        short_agents.append(short.pid)
    execs = sum(int((s.communicate()[0] or "0").strip()) for s in stormers)
    elapsed = time.monotonic() - began
    used = {id(x): x.cpu() - start[id(x)] for x in loops[:2]}
    for proc in long_agents:
        proc.wait()
    time.sleep(1.5)  # the scan loop's last pass
    after = loops[0].counters()
    print()
    print(
        f"storm: {workers} workers exec'ing /bin/true for {elapsed:.1f} s: {execs:,} execs "
        f"({execs / elapsed:,.0f}/s); meanwhile {len(long_agents)} agents living 1 s and "
        f"{len(short_agents)} living 50 ms"
    )
    rows = []
    for x in loops[:2]:
        missed = sum(1 for p in long_agents if p.pid not in x.reported)
        seen_short = sum(1 for p in short_agents if p in x.reported)
        rows.append(
            (
                f"{x.mode} loop",
                f"{used[id(x)]:.2f}",
                f"{1000 * used[id(x)] / max(execs, 1) * 1000:.1f}",
                f"{missed}",
                f"{seen_short}/{len(short_agents)}",
            )
        )
    print_table(("what", "CPU s", "CPU us / exec", "1 s agents missed", "50 ms seen"), rows)
    e0, e1, s0, s1 = before["events"], after["events"], before["scan"], after["scan"]
    print(
        f"events loop during the storm: {e1['received'] - e0['received']:,} events read, "
        f"{e1['overflows'] - e0['overflows']} overflows, "
        f"{e1['dropped'] - e0['dropped']:,} dropped by the kernel; "
        f"{s1['execs_skipped'] - s0['execs_skipped']:,} execs skipped on their exe and name, "
        f"{s1['looked_at_once'] - s0['looked_at_once']} looked at once, "
        f"{s1['put_off'] - s0['put_off']} put off, {s1['listings'] - s0['listings']} listings"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("events", "scan", "quiet"), help=argparse.SUPPRESS)
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--runs", type=int, default=40, help="start -> found runs")
    parser.add_argument("--short", type=int, default=100, help="50 ms agents")
    parser.add_argument("--storm", type=float, default=10.0, help="storm seconds")
    parser.add_argument("--workers", type=int, default=2, help="storm workers")
    args = parser.parse_args()
    if args.loop:
        loop(args.loop)
        return 0
    if sys.platform != "linux" or os.geteuid() != 0:
        raise SystemExit("the process connector needs Linux and root")

    workdir = Path(tempfile.mkdtemp(prefix="quintd-events-"))
    bindir = workdir / "bin"
    bindir.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", bindir / "amp")
    idle_procs = spawn_idle(args.procs, workdir)
    loops: list[Loop] = []
    try:
        time.sleep(6)  # the sleepers settle (a young process is re-checked for 5 s)
        loops = [Loop("events"), Loop("scan"), Loop("quiet")]
        for x in loops:
            if not x.ready.wait(60):
                raise SystemExit(f"the {x.mode} loop did not start")
        time.sleep(6)
        print(
            f"{len(os.listdir('/proc'))} /proc entries ({args.procs} extra idle processes), "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
        )
        print()
        if args.idle:
            idle(loops, args.idle)
        if args.runs:
            latency(loops, bindir, args.runs)
        if args.short:
            seen = short_lived(loops, bindir, args.short)
            print()
            print(f"50 ms agents seen, of {args.short}:")
            print_table(("what", "seen"), [(f"{m} loop", str(n)) for m, n in seen.items()])
        if args.storm:
            storm(loops, bindir, args.storm, args.workers)
    finally:
        for x in loops:
            x.finish()
        for proc in idle_procs:
            proc.kill()
        for proc in idle_procs:
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    for x in loops:
        if x.mode == "events" and x.stats:
            e, s = x.stats.get("events", {}), x.stats["scan"]
            print()
            print(
                "events loop, whole run: "
                f"{e.get('received', 0):,} events read, {e.get('overflows', 0)} overflows, "
                f"{e.get('dropped', 0):,} dropped by the kernel; "
                f"{s['execs_skipped']:,} execs judged and skipped, "
                f"{s['looked_at_once']:,} looked at once, {s['put_off']} put off, "
                f"{s['listings']} listings of /proc, {s['passes']} passes"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
