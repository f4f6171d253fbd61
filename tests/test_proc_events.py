"""The kernel's process events (netlink process connector), as root on this machine: a
process's fork, exec, rename and exit; datagrams recorded from a real run, parsed; the
kernel's filter; a socket that overflows; the refusal to an unprivileged user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from quintd.proc_events import (
    PROC_EVENT_COMM,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    EventBatch,
    ProcEvent,
    ProcEvents,
    ProcEventsUnavailable,
    parse_event,
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="the process connector: Linux, as root"
)
TRUE = shutil.which("true") or "/bin/true"


@pytest.fixture
def events() -> Iterator[ProcEvents]:
    subscription = ProcEvents.open()
    yield subscription
    subscription.close()


def _collect(events: ProcEvents, pid: int, until: int) -> list[ProcEvent]:
    """The events of ``pid``, in order, read until one of kind ``until`` came."""
    seen: list[ProcEvent] = []

    def probe() -> bool:
        seen.extend(e for e in events.events() if e.pid == pid)
        return any(e.what == until for e in seen)

    wait_until(probe, what=f"event {until:#x} of pid {pid}", interval=0.005)
    return seen


def test_a_root_subscriber_sees_the_fork_exec_and_exit_of_a_process_it_starts(
    events: ProcEvents,
) -> None:
    proc = subprocess.Popen([TRUE])
    proc.wait()
    seen = _collect(events, proc.pid, PROC_EVENT_EXIT)
    assert seen == [
        ProcEvent(PROC_EVENT_FORK, proc.pid, parent=os.getpid()),
        ProcEvent(PROC_EVENT_EXEC, proc.pid),
        ProcEvent(PROC_EVENT_EXIT, proc.pid),
    ]
    assert events.filtered  # the kernel took the socket filter
    assert events.stats.malformed == events.stats.foreign == 0


def test_a_rename_comes_with_its_new_name(events: ProcEvents) -> None:
    rename = "import ctypes; ctypes.CDLL(None).prctl(15, b'claude')"  # PR_SET_NAME
    proc = subprocess.Popen([sys.executable, "-c", rename])
    proc.wait()
    seen = _collect(events, proc.pid, PROC_EVENT_EXIT)
    assert ProcEvent(PROC_EVENT_COMM, proc.pid, name="claude") in seen


def test_a_read_folds_a_process_that_came_and_went_into_its_exit(events: ProcEvents) -> None:
    proc = subprocess.Popen([TRUE])
    proc.wait()
    batches: list[EventBatch] = []

    def probe() -> bool:
        batches.append(events.read())
        return any(proc.pid in b.exits for b in batches)

    wait_until(probe, what="the exit of /bin/true", interval=0.005)
    # Read after it exited: nothing is left to look at, so no exec is kept for it.
    assert not any(proc.pid in b.execs or proc.pid in b.forks for b in batches)


# Datagrams recorded on this machine (Linux 6.18, x86-64) from a python that started a
# thread, renamed itself `claude` and exited: pid 1622, its parent 1613, its thread 1633.
RECORDED = {
    "answer": (
        "4c000000030000000d5a00000000000001000000010000000d5a00000a030000"
        "280000000000000000000000179ea96acf090000000000000000000000000000"
        "000000000000000000000000"
    ),
    "fork": (
        "4c000000030000000e5a00000000000001000000010000000e5a000000000000"
        "2800000001000000000000004f8aad6acf0900004d0600004d06000056060000"
        "560600000000000000000000"
    ),
    "exec": (
        "4c00000003000000345000000000000001000000010000003450000000000000"
        "28000000020000000100000070f4e66acf090000560600005606000000000000"
        "000000000000000000000000"
    ),
    "thread": (
        "4c00000003000000485000000000000001000000010000004850000000000000"
        "2800000001000000010000004ad29470cf0900004d0600004d06000061060000"
        "560600000000000000000000"
    ),
    "rename": (
        "4c00000003000000495000000000000001000000010000004950000000000000"
        "280000000002000001000000c0639870cf0900005606000056060000636c6175"
        "646500000000000000000000"
    ),
    "thread exit": (
        "4c000000030000004a5000000000000001000000010000004a50000000000000"
        "2800000000000080010000004bb2d870cf090000610600005606000000000000"
        "ffffffff0000000000000000"
    ),
    "exit": (
        "4c000000030000004b5000000000000001000000010000004b50000000000000"
        "28000000000000800100000001502171cf090000560600005606000000000000"
        "110000004d0600004d060000"
    ),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("answer", None),  # the kernel's answer to a subscription: not an event
        ("fork", ProcEvent(PROC_EVENT_FORK, 1622, parent=1613)),
        ("exec", ProcEvent(PROC_EVENT_EXEC, 1622)),
        ("thread", None),  # a new thread of 1622: no new process
        ("rename", ProcEvent(PROC_EVENT_COMM, 1622, name="claude")),
        ("thread exit", None),  # the process goes on
        ("exit", ProcEvent(PROC_EVENT_EXIT, 1622)),
    ],
)
def test_recorded_datagrams_parse(name: str, expected: ProcEvent | None) -> None:
    assert parse_event(bytes.fromhex(RECORDED[name])) == expected


def test_what_is_not_a_process_event_is_refused() -> None:
    exec_ = bytes.fromhex(RECORDED["exec"])
    with pytest.raises(ValueError, match="too short"):
        parse_event(exec_[:40])
    other = bytearray(exec_)
    other[16] = 7  # another connector (cn_msg idx)
    with pytest.raises(ValueError, match="not a process event"):
        parse_event(other)
    # A rename cut short has no name to give: not taken.
    assert parse_event(bytes.fromhex(RECORDED["rename"])[:72]) is None


def test_a_batch_keeps_the_order_of_what_happened() -> None:
    batch = EventBatch()
    for event in (
        ProcEvent(PROC_EVENT_FORK, 10, parent=1),
        ProcEvent(PROC_EVENT_EXEC, 10),
        ProcEvent(PROC_EVENT_EXIT, 10),  # came and went: nothing left to look at
        ProcEvent(PROC_EVENT_FORK, 10, parent=2),  # pid 10 again: another process
        ProcEvent(PROC_EVENT_EXEC, 10),
        ProcEvent(PROC_EVENT_COMM, 11, name="claude"),
        ProcEvent(PROC_EVENT_EXEC, 11),  # the exec gives it its name back
        ProcEvent(PROC_EVENT_COMM, 12, name="codex"),
    ):
        batch.add(event)
    assert batch.exits == {10}  # applied first: the old process 10
    assert batch.forks == {10: 2}
    assert list(batch.execs) == [10, 11]
    assert batch.comms == {12: "codex"}


def test_the_kernel_filter_drops_threads_before_they_cost_a_wakeup() -> None:
    """The same stream to two sockets, one without the filter: a process starting 300
    threads costs the unfiltered one 600 datagrams more, and both see the process."""
    plain = ProcEvents.open(kernel_filter=False)
    filtered = ProcEvents.open()
    try:
        threads = (
            "import threading\n"
            "ts = [threading.Thread(target=lambda: None) for _ in range(300)]\n"
            "[t.start() for t in ts]\n[t.join() for t in ts]\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", threads])
        proc.wait()
        for subscription in (plain, filtered):
            seen: list[ProcEvent] = []

            def probe(s: ProcEvents = subscription, seen: list[ProcEvent] = seen) -> bool:
                # One datagram at a time: the count stops at the exit.
                seen.extend(e for e in s.events(limit=1) if e.pid == proc.pid)
                return any(e.what == PROC_EVENT_EXIT for e in seen)

            wait_until(probe, what="the threaded process's exit", interval=0.001)
            assert seen[0].what == PROC_EVENT_FORK
        assert filtered.filtered and not plain.filtered
        assert plain.stats.received - filtered.stats.received >= 600
    finally:
        plain.close()
        filtered.close()


def test_an_overflowing_socket_says_events_were_lost_and_counts_them() -> None:
    events = ProcEvents.open(rcvbuf=1)  # the kernel's smallest: a few datagrams
    try:
        for _ in range(30):
            subprocess.run([TRUE], check=True)
        batch = events.read()
        assert batch.lost
        assert events.stats.overflows >= 1
        assert events.stats.dropped >= 30  # the kernel's count (/proc/net/netlink)
        # The socket goes on: the events after the loss come through.
        subprocess.run([TRUE], check=True)
        wait_until(lambda: events.read().events, what="events after the loss")
    finally:
        events.close()


def test_a_read_stops_at_its_limit_and_says_more_is_waiting(events: ProcEvents) -> None:
    for _ in range(5):
        subprocess.run([TRUE], check=True)
    batch = events.read(limit=2)
    assert batch.events == 2 and batch.more


REFUSED = """
import sys
sys.path.insert(0, sys.argv[1])
from proc_events import ProcEvents, ProcEventsUnavailable
try:
    ProcEvents.open(timeout=5.0).close()
except ProcEventsUnavailable as exc:
    print("refused:", exc)
else:
    print("subscribed")
"""


def test_an_unprivileged_user_is_refused_and_told_why() -> None:
    """The module on its own (it needs only the standard library), run as nobody."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        here.chmod(0o755)
        module = here / "proc_events.py"
        shutil.copy(Path(__file__).parents[1] / "quintd" / "proc_events.py", module)
        module.chmod(0o644)
        result = subprocess.run(
            [python, "-c", REFUSED, str(here)],
            capture_output=True,
            text=True,
            user=65534,
            group=65534,
            extra_groups=[],
            cwd=tmp,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused:"), result.stdout
    assert "Operation not permitted" in result.stdout


def test_close_unsubscribes_and_can_be_called_twice() -> None:
    events = ProcEvents.open()
    events.close()
    events.close()
    assert events.fileno() == -1


def test_no_answer_to_the_subscription_means_no_connector() -> None:
    """A kernel without CONFIG_PROC_EVENTS (or a container's namespaces) never answers:
    here, no time is given to hear the answer."""
    with pytest.raises(ProcEventsUnavailable, match="did not answer"):
        ProcEvents.open(timeout=0.0)
