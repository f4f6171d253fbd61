"""Linux's /proc, where psutil does not say what quintd needs."""

from __future__ import annotations


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat):
    unlike a start time in seconds since the epoch, a step of the wall clock never moves
    it. None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None
