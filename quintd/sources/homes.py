"""The home directories where agents may start: their existing state directories are
watched before any agent runs, so that an agent's first write wakes the daemon."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

# Beyond this many accounts (a directory service enumerating a whole company), starts
# are found by the scan alone.
MAX_HOMES = 500

_LOGIN_DEFS = Path("/etc/login.defs")


def candidate_homes(only_uid: int | None) -> list[tuple[int, Path]]:
    """(uid, home) of the users whose agents this daemon watches: its own user for a
    per-user daemon (``only_uid``), else its own HOME, root and every login account."""
    if only_uid is not None:
        home = os.environ.get("HOME", "")
        if home and os.path.isabs(home):
            return [(only_uid, Path(home))]
        try:
            return [(only_uid, Path(pwd.getpwuid(only_uid).pw_dir))]
        except KeyError:
            return []
    low, high = _uid_range()
    homes = []
    own = os.environ.get("HOME", "")
    if own and os.path.isabs(own) and own != "/" and os.path.isdir(own):
        homes.append((os.geteuid(), Path(own)))  # the daemon's own (root's, as run)
    for entry in pwd.getpwall():
        if entry.pw_uid != 0 and not low <= entry.pw_uid <= high:
            continue  # system accounts
        home = entry.pw_dir
        if not home or not os.path.isabs(home) or home == "/" or not os.path.isdir(home):
            continue
        homes.append((entry.pw_uid, Path(home)))
        if len(homes) >= MAX_HOMES:
            break
    return homes


def _uid_range() -> tuple[int, int]:
    """UID_MIN..UID_MAX from /etc/login.defs (1000..60000 where it says nothing; from 501
    on macOS, where accounts start there)."""
    low, high = (501, 60000) if sys.platform == "darwin" else (1000, 60000)
    try:
        text = _LOGIN_DEFS.read_text(errors="replace")
    except OSError:
        return low, high
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            if parts[0] == "UID_MIN":
                low = int(parts[1])
            elif parts[0] == "UID_MAX":
                high = int(parts[1])
    return low, high
