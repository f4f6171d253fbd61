#!/usr/bin/env python3
"""Benchmark: where the daemon's resident memory goes, layer by layer.

Each row is a fresh interpreter that imports the layers above it and then its own, and
reports its RSS (``VmRSS``): what each layer adds to what the daemon must load anyway.
The comparison the footprint budget is about: quintd's own code and readers against the
libraries it is built on (pydantic and httpx among them: the daemon with and without them).

Run: python3 tests/bench/memory.py [--runs 3]   (the median of the runs per row)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (row, what it imports): cumulative, in the order the daemon needs them.
LAYERS: list[tuple[str, str]] = [
    ("python (site, the interpreter)", ""),
    (
        "+ stdlib the daemon uses",
        "import json, logging, pathlib, re, socket, sqlite3, "
        "threading, subprocess, dataclasses, argparse, tomllib, uuid, selectors",
    ),
    ("+ psutil", "import psutil"),
    ("+ watchdog (inotify observer)", "import watchdog.observers"),
    (
        "+ pydantic (and one model built)",
        "import pydantic\nclass _M(pydantic.BaseModel):\n    a: int = 1",
    ),
    ("+ ssl", "import ssl"),
    ("+ httpx (as quintd imports it: zstandard hidden)", "import quintd.http_client"),
    ("+ quintd: daemon and CLI, no reader", "import quintd.daemon, quintd.cli, quintd.http_client"),
    (
        "+ readers: Claude Code, Codex, Gemini CLI",
        "import quintd.sources.claude_code, quintd.sources.codex, quintd.sources.gemini_cli",
    ),
    (
        "+ readers: the other eight (PyYAML with Copilot)",
        "import quintd.sources.copilot_cli, "
        "quintd.sources.opencode, quintd.sources.qwen_code, quintd.sources.cline, "
        "quintd.sources.crush, quintd.sources.goose, quintd.sources.kiro, "
        "quintd.sources.cursor_agent",
    ),
    ("+ npm identity (tarfile)", "import tarfile"),
    (
        "+ editors: VS Code family, Zed (zstandard)",
        "import quintd.sources.editors, quintd.sources.zed, zstandard",
    ),
]

_RSS = (
    "\nfor _l in open('/proc/self/status'):\n"
    "    if _l.startswith('VmRSS:'):\n"
    "        print(int(_l.split()[1]))\n"
)


def rss_kib(code: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", code + _RSS], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return int(out.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        print("needs Linux's /proc")
        return 1
    code = ""
    before = 0.0
    print(f"{'layer':52}{'RSS MiB':>9}{'added':>8}")
    for row, imports in LAYERS:
        code += imports + "\n"
        mib = statistics.median(rss_kib(code) for _ in range(args.runs)) / 1024
        print(f"{row:52}{mib:>9.1f}{mib - before:>+8.1f}")
        before = mib
    print(
        "the footprint benchmark (tests/bench/scan.py) adds the running daemon's data and threads"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
