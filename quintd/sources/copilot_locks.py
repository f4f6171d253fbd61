"""Copilot CLI's lock and hold files (``session-state/<id>/inuse.<pid>.lock`` and
``inuse.<pid>.hold``): the locks a conversation directory holds, and which running process
each lock belongs to. The reader (``copilot_cli.py``) decides when to look again.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

from quintd.sources.attribution import Pass
from quintd.sources.changes import listing
from quintd.sources.files import real_dir

STATE = "session-state"
LOCK_FILE = re.compile(r"^inuse\.([0-9]{1,10})\.lock$")
HOLD_FILE = re.compile(r"^inuse\.[0-9]{1,10}\.hold$")
MAX_LOCKS = 64  # per conversation directory
HOLD_GRACE_S = 5.0  # a new lock's hold file may be opened just after it is written

ProcessKey = tuple[int, int]
# conversation -> (its lock's time, the process it belongs to, the pid the lock names)
Claims = dict[str, tuple[float, ProcessKey, int]]


@dataclass(frozen=True)
class Lock:
    mtime: float
    owner: int  # the uid owning the lock file


def locks_of(root: Path, session: str, horizon: float) -> dict[int, Lock]:
    """The lock files of a conversation directory that a running process may have
    written (none older than the oldest of them)."""
    if not real_dir(root / STATE):
        return {}
    # Their metadata only (lstat: a link is no lock), never opened: opening one would be
    # a change event of its own, and the next pass would look again.
    found = listing(root / STATE / session, LOCK_FILE, horizon, stat.S_ISREG, MAX_LOCKS)
    return {
        int(name.split(".")[1]): Lock(info.st_mtime, info.st_uid)
        for name, info in found
        if info is not None
    }


def claim(locks: dict[str, dict[int, Lock]], now: Pass, wall: float) -> tuple[Claims, bool]:
    """Each conversation to the running process its lock belongs to, if any (see
    ``copilot_cli.py``'s docstring); and whether to look again soon (a new lock whose hold
    file may not be open yet)."""
    holds: dict[int, list[str]] = {}
    claims: Claims = {}
    again = False
    for session, session_locks in locks.items():
        for pid, lock in session_locks.items():
            # The agent process or one under it (the native binary under its loader);
            # a lock older than it was left by a dead process whose pid came back.
            proc = now.runner(pid, lock.mtime)
            if proc is None:
                continue
            if pid not in holds:
                holds[pid] = [f for f in now.view.open_files(pid) if HOLD_FILE.match(_base(f))]
            if holds[pid] and not any(_holds(f, session, pid) for f in holds[pid]):
                # The process holds other conversations' files, not this one's: a lock
                # it left behind, or one it has just made (look again while it is new).
                again = again or 0 <= wall - lock.mtime < HOLD_GRACE_S
                continue
            if session not in claims or claims[session][0] < lock.mtime:
                claims[session] = (lock.mtime, proc.key, pid)
    return claims, again


def _base(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _holds(path: str, session: str, pid: int) -> bool:
    """Whether an open file is this conversation's hold file. By its last three components:
    the process may see its home through another path (a symlinked /home)."""
    return path.replace("\\", "/").endswith(f"/{STATE}/{session}/inuse.{pid}.hold")
