"""The suite's own hygiene (tests/conftest.py): every process a test starts is reaped at its
end, SIGTERM first and SIGKILL after a deadline, its process group with it."""

from __future__ import annotations

import os
import signal
import subprocess

import conftest
import pytest
from conftest import SLEEP, reap, wait_until

# A process that ignores SIGTERM (as a wedged daemon did), with a child in its group.
STUBBORN = f"trap '' TERM; {SLEEP} 600 & exec {SLEEP} 600"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(c) for c in fh.read().split()]


def test_a_process_that_ignores_sigterm_is_killed_after_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "REAP_DEADLINE_S", 0.3)
    polite = subprocess.Popen([SLEEP, "600"])
    stubborn = subprocess.Popen(["sh", "-c", STUBBORN], start_new_session=True)
    [child] = wait_until(lambda: _children(stubborn.pid), what="the stubborn one's child")
    assert reap([(polite, False), (stubborn, True)]) == [polite.pid, stubborn.pid]
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    wait_until(lambda: _gone(child), what="its child, killed with its group")
    assert reap([(polite, False)]) == []  # nothing left to do


def test_every_process_a_test_starts_is_recorded_for_the_reaper() -> None:
    before = len(conftest._started or [])
    proc = subprocess.Popen([SLEEP, "600"], start_new_session=True)
    run = subprocess.run([SLEEP, "0"], check=True)
    assert run.returncode == 0
    assert conftest._started is not None
    recorded = conftest._started[before:]
    assert (proc, True) in recorded and len(recorded) == 2
    # Left running on purpose: the autouse fixture reaps it at this test's end.
    os.kill(proc.pid, 0)
