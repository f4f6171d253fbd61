"""What reading Zed's threads costs: `import zstandard` (RSS and time, in a fresh
interpreter), a pass over a long history with one live thread, and the same live thread
rewritten pass after pass as Zed does while an answer streams.

    python3 tests/bench/zed.py [--history 5000] [--turns 150] [--passes 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from replay import Rec, RecordedProcesses, agents  # noqa: E402
from zed_threads import Thread, ZedThreads  # noqa: E402

from quintd.sources.manager import SourceManager, SourceSettings  # noqa: E402
from quintd.sources.registry import spec  # noqa: E402

IMPORT_COST = """
import sqlite3, time, psutil
def rss():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0])
before = rss(); started = time.perf_counter()
import zstandard
print(rss() - before, (time.perf_counter() - started) * 1000)
"""


def import_cost(runs: int = 5) -> tuple[float, float]:
    kib, ms = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_COST], capture_output=True, text=True, check=True
        ).stdout.split()
        kib.append(float(out[0]))
        ms.append(float(out[1]))
    return statistics.median(kib) / 1024, statistics.median(ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=5000)
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    mib, ms = import_cost()
    print(f"import zstandard: +{mib:.2f} MiB RSS, {ms:.1f} ms (median of 5 fresh interpreters)")
    home = Path(tempfile.mkdtemp(prefix="quintd-bench-zed-")) / "home"
    db = ZedThreads(home / ".local/share/zed/threads/threads.db")
    now = time.time()
    db.conn.execute("BEGIN")
    for n in range(args.history):
        old = Thread(title=f"t{n}", updated_at=now - 10**6 + n)
        old.prompt("q " * 200)
        old.answer(now - 10**6 + n, text="a " * 2000, calls=2)
        db.save(old)
    db.conn.execute("COMMIT")
    live = Thread(updated_at=now)
    for _ in range(args.turns):
        live.prompt("please read the file " * 20)
        live.answer(now, text="here it is " * 600, calls=1)
    db.save(live)
    size = db.path.stat().st_size / 2**20
    print(f"{args.history} old threads ({size:.1f} MiB), a live one of {args.turns} turns")
    view = RecordedProcesses(home)
    recs = [Rec(4000, 1, "zed-editor", "/usr/libexec/zed-editor", ["zed-editor"], "/", now - 60)]
    view.show(recs)
    procs = agents(recs, home)
    manager = SourceManager(
        SourceSettings(watch=False), readers=(spec("zed"),), processes=view, wall=time.time
    )
    try:
        started, used = time.perf_counter(), time.process_time()
        manager.observe(procs)
        first = (time.perf_counter() - started) * 1000
        first_cpu = (time.process_time() - used) * 1000
        print(
            f"first pass (reads, decodes the live thread): {first:.0f} ms wall, "
            f"{first_cpu:.0f} ms CPU"
        )
        changed, cpu, idle = [], [], []
        for _ in range(args.passes):
            live.answer(time.time(), text="more " * 500)
            db.save(live)
            started, used = time.perf_counter(), time.process_time()
            manager.observe(procs)
            changed.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
            started = time.perf_counter()
            manager.observe(procs)
            idle.append(time.perf_counter() - started)
        print(
            f"pass after a rewrite: p50 {statistics.median(changed) * 1000:.1f} ms wall, "
            f"{statistics.median(cpu) * 1000:.1f} ms CPU; max {max(changed) * 1000:.1f} ms wall, "
            f"{max(cpu) * 1000:.1f} ms CPU (a decode at most every 5 s)"
        )
        print(f"pass with nothing changed: p50 {statistics.median(idle) * 1000:.2f} ms")
    finally:
        manager.close()
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
