"""Which agents are this test run's own. Developers run real agents (and other test runs)
while the suite runs, and a daemon under test reports those too: the loopback server sets
their events aside, so that no test counts another's sessions.

Every fake agent binary a test makes is a copy of a real one with this run's mark appended
(an ELF file runs the same with bytes after its end); its signing identity, the SHA-256
that quintd reports for it on Linux, is then this run's alone.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

RUN_MARK = b"\0quintd-test-run:" + secrets.token_hex(8).encode()

# "sha256:<hex>" of every binary this run's agents run.
SIGNING_IDS: set[str] = set()


def mark_binary(path: Path) -> None:
    """Make the copy at ``path`` this run's own, and remember its identity."""
    with open(path, "ab") as fh:
        fh.write(RUN_MARK)
    remember(path)


def is_marked(path: Path) -> bool:
    """A binary this run marked (its identity is this run's alone)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-len(RUN_MARK), 2)
            return fh.read() == RUN_MARK
    except OSError:
        return False


def remember(path: Path) -> None:
    """An executable this run's agents run, as it is. Only a marked one: an unmarked
    system binary (or a plain copy of one) has the identity every other copy has, and
    would make another user's (or another test run's) fake agents count as this run's."""
    if not is_marked(path):
        raise AssertionError(
            f"{path}: an agent binary that is not this run's own; make it with "
            "conftest.fake_agent (a marked copy) so that its identity is this run's alone"
        )
    SIGNING_IDS.add("sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())


def is_foreign(event: object) -> bool:
    """An event of an agent that is not this run's: its identity is known and not ours
    (an event not yet carrying one is taken as ours)."""
    if not isinstance(event, dict):
        return False
    signing_id = event.get("signing_id")
    return isinstance(signing_id, str) and signing_id not in SIGNING_IDS
