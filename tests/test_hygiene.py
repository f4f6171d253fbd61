"""The suite's own hygiene (tests/conftest.py, tests/own_agents.py): every process a test
starts is reaped at its end, SIGTERM first and SIGKILL after a deadline, its process group
with it; and other users' agents running on the machine (real ones, or fakes: plain copies
of sleep) are never taken for the test's own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import conftest
import pytest
from conftest import (
    SLEEP,
    TOKEN,
    Agents,
    DaemonProcess,
    fake_agent,
    reap,
    wait_until,
    write_config,
)
from ingest_server import IngestServer
from own_agents import SIGNING_IDS

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


def test_a_plain_copy_of_sleep_is_refused_as_an_agent_of_this_run(
    agents: Agents, short_tmp: Path
) -> None:
    """Its identity is every copy's: remembered, another user's plain copies of sleep
    would count as this run's agents."""
    plain = short_tmp / "claude"
    shutil.copy(SLEEP, plain)
    with pytest.raises(AssertionError, match="fake_agent"):
        agents.spawn([str(plain), "600"])
    assert agents.procs == []
    marked = fake_agent(short_tmp / "codex")
    proc = agents.spawn([str(marked), "600"])
    assert proc.poll() is None


NOBODY = 65534


def test_another_users_fake_agents_are_set_aside(
    agents: Agents, short_tmp: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    """As on a shared machine: another user runs a plain copy of sleep named claude and
    sleep under the name crush. The daemon (root) reports them; the loopback server sets
    their events aside, and keeps this test's agent's."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run agents as another user")
    theirs = short_tmp / "theirs"
    theirs.mkdir()
    os.chmod(short_tmp, 0o755)
    os.chmod(theirs, 0o755)
    shutil.copy(SLEEP, theirs / "claude")
    os.chmod(theirs / "claude", 0o755)
    for argv in ([str(theirs / "claude"), "600"], ["bash", "-c", f"exec -a crush {SLEEP} 600"]):
        subprocess.Popen(argv, user=NOBODY, group=NOBODY, cwd="/", start_new_session=True)
    with IngestServer(token=TOKEN) as server:
        daemon = daemons(write_config(short_tmp, endpoint=server.url)).start()
        daemon.wait_ready()
        ours = agents.binary("claude")
        server.wait_for(
            lambda evs: any(r.event.get("signing_id") in SIGNING_IDS for r in evs),
            what="this test's agent",
        )
        wait_until(lambda: server.foreign >= 2, what="the other user's two, set aside")
        status = daemon.status()
        assert status is not None
        reported = {(s["platform"], s["pid"]) for s in status["sessions"]}
        assert ("claude-code", ours.pid) in reported
        assert {p for p, _ in reported} >= {"claude-code", "crush"}  # theirs too
    for received in server.events:
        assert received.event.get("signing_id") in SIGNING_IDS, received.event
