"""Linux's /proc, where psutil does not say what quintd needs (or costs more)."""

from __future__ import annotations

import os
from typing import NamedTuple

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcStat(NamedTuple):
    state: str  # "R", "S", "Z" (a zombie: exited, not reaped yet), ...
    start_ticks: str
    cpu_seconds: float  # user + system, with the children it has reaped


def read_stat(pid: int) -> ProcStat | None:
    """What one pass needs of a known process, from one read of /proc/<pid>/stat (psutil
    reads it three times for the same). None if it is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # After the command name, which may hold spaces and parentheses: field 3 onwards.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    try:
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    except ValueError:
        return None
    return ProcStat(fields[0].decode(), fields[19].decode(), ticks / _TICKS_PER_S)


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat):
    unlike a start time in seconds since the epoch, a step of the wall clock never moves
    it. None where there is no /proc."""
    stat = read_stat(pid)
    return stat.start_ticks if stat is not None else None
