"""The main loop's wait: exits from the kernel (pidfd here), wakes from threads and
signals, pid reuse, and the fallback when the kernel refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from conftest import SLEEP

from quintd.procfs import start_ticks
from quintd.waiter import Waiter, Wakeup, _milliseconds

linux_only = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux 5.3+")


@pytest.fixture
def waiter() -> Iterator[Waiter]:
    w = Waiter(identity=start_ticks)
    yield w
    w.close()


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([SLEEP, "60"])


@linux_only
def test_an_exit_ends_the_wait_at_once(waiter: Waiter) -> None:
    assert waiter.method == "pidfd"
    procs = [sleeper(), sleeper()]
    try:
        gone = waiter.watch({p.pid: start_ticks(p.pid) for p in procs})
        assert gone == set() and waiter.watched == {p.pid for p in procs}
        assert waiter.wait(0.05).exited == set()  # nothing happened: the timeout
        procs[1].kill()  # not reaped: a zombie has exited too
        started = time.monotonic()
        woke = waiter.wait(30)
        assert woke.exited == {procs[1].pid} and not woke.woken
        assert time.monotonic() - started < 5
        # Reported once: the exited pid is no longer watched.
        assert waiter.watched == {procs[0].pid}
    finally:
        for p in procs:
            p.kill()
            p.wait()


@linux_only
def test_watch_follows_the_set_it_is_given(waiter: Waiter) -> None:
    procs = [sleeper() for _ in range(3)]
    try:
        waiter.watch({p.pid: None for p in procs})
        waiter.watch({procs[0].pid: None})
        assert waiter.watched == {procs[0].pid}
        procs[1].kill()  # no longer watched: its exit does not wake
        assert waiter.wait(0.2).exited == set()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _blocks_for_its_timeout(waiter: Waiter, timeout: float = 0.3) -> None:
    """A wait with nothing to report lasts its whole timeout and reports nothing (a pidfd
    closed but left in the poll set would end every wait at once: POLLNVAL)."""
    started = time.monotonic()
    woke = waiter.wait(timeout)
    elapsed = time.monotonic() - started
    assert (woke.exited, woke.woken) == (set(), False)
    assert elapsed >= timeout * 0.9, f"the wait returned after {elapsed:.3f} s"


def _pidfds() -> int:
    return sum(
        1
        for fd in os.listdir("/proc/self/fd")
        if _readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    )


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@linux_only
def test_a_wait_still_blocks_after_an_unwatch_and_after_an_exit(waiter: Waiter) -> None:
    before = _pidfds()
    procs = [sleeper() for _ in range(3)]
    try:
        waiter.watch({p.pid: start_ticks(p.pid) for p in procs})
        assert _pidfds() == before + 3
        _blocks_for_its_timeout(waiter)
        waiter.watch({procs[0].pid: None, procs[1].pid: None})  # the third unwatched
        assert _pidfds() == before + 2  # its pidfd closed
        _blocks_for_its_timeout(waiter)
        procs[1].kill()
        assert waiter.wait(30).exited == {procs[1].pid}  # reported, and no longer watched
        assert _pidfds() == before + 1
        _blocks_for_its_timeout(waiter)
        _blocks_for_its_timeout(waiter)  # not only once
        waiter.watch({})
        assert _pidfds() == before
        _blocks_for_its_timeout(waiter)
        waiter.wake()  # and the wake pipe still works
        assert waiter.wait(5).woken
        _blocks_for_its_timeout(waiter)
    finally:
        for p in procs:
            p.kill()
            p.wait()


@linux_only
def test_a_process_gone_before_the_watch_is_reported(waiter: Waiter) -> None:
    proc = sleeper()
    proc.kill()
    proc.wait()  # reaped: the pid names nothing
    assert waiter.watch({proc.pid: "123"}) == {proc.pid}
    assert waiter.watched == set()


@linux_only
def test_a_reused_pid_is_not_watched_in_the_old_process_name(waiter: Waiter) -> None:
    proc = sleeper()
    try:
        # The scanner saw another process under this pid (other start ticks).
        assert waiter.watch({proc.pid: "1"}) == {proc.pid}
        assert waiter.watched == set()
    finally:
        proc.kill()
        proc.wait()


def test_a_wake_from_another_thread_ends_the_wait(waiter: Waiter) -> None:
    timer = threading.Timer(0.05, waiter.wake)
    timer.start()
    started = time.monotonic()
    woke = waiter.wait(30)
    timer.join()
    assert woke.woken and time.monotonic() - started < 5
    # The pipe was drained: the next wait is a plain timeout again.
    assert not waiter.wait(0.01).woken


def test_many_wakes_never_block_and_count_as_one(waiter: Waiter) -> None:
    for _ in range(100_000):  # more than a pipe holds: a full pipe is already a wake
        waiter.wake()
    assert waiter.wait(1).woken
    assert not waiter.wait(0).woken


def test_a_signal_handler_can_wake_the_wait(waiter: Waiter) -> None:
    old = signal.signal(signal.SIGUSR1, lambda *_: waiter.wake())
    try:
        killer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        killer.start()
        woke = waiter.wait(30)
        killer.join()
        assert woke.woken
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_without_kernel_exits_the_scan_watches() -> None:
    w = Waiter(kernel_exits=False)
    proc = sleeper()
    try:
        assert w.method == "scan"
        assert w.watch({proc.pid: None}) == set() and w.watched == set()
        proc.kill()
        assert w.wait(0.1).exited == set()  # the scan will notice
        w.wake()
        assert w.wait(5).woken
    finally:
        proc.kill()
        proc.wait()
        w.close()


@linux_only
def test_a_refused_pidfd_open_falls_back_to_the_scan(
    waiter: Waiter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What a seccomp filter without pidfd_open (or a kernel before 5.3) answers; this
    # machine's kernel allows it, so the refusal is simulated.
    procs = [sleeper(), sleeper()]
    try:
        waiter.watch({procs[0].pid: None})

        def refused(_pid: int) -> int:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "pidfd_open", refused)
        assert waiter.watch({p.pid: None for p in procs}) == set()
        assert waiter.method == "scan" and waiter.watched == set()
        assert "exits are found by the scan" in caplog.text
        waiter.wake()
        assert waiter.wait(5).woken  # still a working wait
    finally:
        for p in procs:
            p.kill()
            p.wait()


@linux_only
def test_pidfds_are_not_inherited_by_children(waiter: Waiter) -> None:
    proc = sleeper()
    script = (
        "import os\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try: print(os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError: pass\n"
    )
    try:
        waiter.watch({proc.pid: None})
        ours = subprocess.run(  # our own descriptors, listed from outside
            ["ls", "-l", f"/proc/{os.getpid()}/fd"], capture_output=True, text=True, check=True
        ).stdout
        assert "anon_inode:[pidfd]" in ours
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            close_fds=False,
        )
        assert "pidfd" not in out.stdout
    finally:
        proc.kill()
        proc.wait()


def test_a_reader_wakes_the_wait_then_rests_for_its_gap(waiter: Waiter) -> None:
    read_fd, write_fd = os.pipe()
    try:
        # (a gap long enough that a loaded machine does not outlast it between two waits)
        waiter.add_reader(read_fd, gap=1.0)
        assert waiter.wait(0.02).readable == set()  # nothing to read: the timeout
        os.write(write_fd, b"x")
        first = waiter.wait(30)
        reported = time.monotonic()
        assert first.readable == {read_fd} and not first.exited and not first.woken
        # Not read: still readable, but left out of the waits for its gap...
        assert waiter.wait(0.05).readable == set()
        # ...and reported again once the gap is over, within one wait.
        again = waiter.wait(30)
        assert again.readable == {read_fd}
        assert time.monotonic() - reported >= 1.0
        waiter.wake()  # a wake still ends a wait while the reader rests
        assert waiter.wait(30).woken
        waiter.remove_reader(read_fd)
        assert waiter.wait(0.05).readable == set()
    finally:
        os.close(read_fd)
        os.close(write_fd)


@linux_only
@pytest.mark.skipif(os.geteuid() != 0, reason="the process connector needs root")
def test_process_events_wake_the_wait(waiter: Waiter) -> None:
    from quintd.proc_events import ProcEvents

    events = ProcEvents.open()
    try:
        waiter.add_reader(events.fileno(), gap=0.01)
        subprocess.run([SLEEP, "0"], check=True)
        assert waiter.wait(30).readable == {events.fileno()}
        assert events.read().events > 0
    finally:
        events.close()


# -- the finer points (written for the survivors of the mutation run) -----------------------


def test_timeouts_round_up_to_the_millisecond() -> None:
    assert _milliseconds(None) is None  # no limit
    assert _milliseconds(0) == 0
    assert _milliseconds(0.0005) == 1  # never a busy loop of zero-length polls
    assert _milliseconds(0.001) == 1
    assert _milliseconds(1.5) == 1500
    assert _milliseconds(-3) == 0


@linux_only
def test_close_gives_back_every_descriptor() -> None:
    before = set(os.listdir("/proc/self/fd"))
    w = Waiter(identity=start_ticks)
    proc = sleeper()
    try:
        w.watch({proc.pid: start_ticks(proc.pid)})
        assert len(set(os.listdir("/proc/self/fd")) - before) == 3  # the pipe, a pidfd
        w.close()
        assert set(os.listdir("/proc/self/fd")) - before == set()
    finally:
        proc.kill()
        proc.wait()


@linux_only
def test_a_process_gone_is_reported_without_an_identity_to_compare(waiter: Waiter) -> None:
    proc = sleeper()
    proc.kill()
    proc.wait()
    assert waiter.watch({proc.pid: None}) == {proc.pid}
    assert waiter.watched == set()


def test_without_kernel_exits_nothing_is_reported_gone() -> None:
    """The scan is the watch: a pid is never called gone (nor replaced) by the waiter."""
    w = Waiter(identity=start_ticks, kernel_exits=False)
    proc = sleeper()
    try:
        assert w.watch({proc.pid: "1"}) == set()
    finally:
        proc.kill()
        proc.wait()
        w.close()


@linux_only
def test_after_the_fallback_nothing_is_reported_gone(
    waiter: Waiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = sleeper()

    def refused(_pid: int) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "pidfd_open", refused)
    try:
        assert waiter.watch({proc.pid: "1"}) == set()  # the refusal: not "gone"
        assert waiter.method == "scan"
        assert waiter.watch({proc.pid: "1", proc.pid + 1: "2"}) == set()  # and after it
    finally:
        proc.kill()
        proc.wait()


def test_without_poll_the_wait_is_a_select(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where select has no poll (Windows): the wake pipe through select()."""
    w = Waiter(kernel_exits=False)
    try:
        monkeypatch.setattr(w._exits, "_poll", None)
        started = time.monotonic()
        assert not w.wait(0.2).woken
        assert time.monotonic() - started >= 0.18
        w.wake()
        assert w.wait(5).woken
    finally:
        w.close()


def test_without_pidfd_the_scan_finds_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    w = Waiter()
    try:
        assert w.method == "scan"
        w.wake()
        assert w.wait(5).woken
    finally:
        w.close()


def test_an_interrupted_wait_is_a_plain_timeout(
    waiter: Waiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(_timeout: float | None, _readers: object = ()) -> tuple[list[int], list[int]]:
        raise InterruptedError

    monkeypatch.setattr(waiter._exits, "wait", interrupted)
    woke = waiter.wait(1)
    assert (woke.exited, woke.woken) == (set(), False)


def test_the_wake_pipe_is_not_inherited(waiter: Waiter) -> None:
    pipes = {f"pipe:[{os.fstat(fd).st_ino}]" for fd in (waiter._read_fd, waiter._write_fd)}
    script = (
        "import os\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try: print(os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError: pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, close_fds=False
    )
    assert pipes.isdisjoint(out.stdout.split())


def test_the_exit_watches_say_false_and_minus_one_as_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """_ExitWatch's contract: add() is False for a pid gone (or a kernel that refuses),
    wait() lists -1 for the wake pipe; each way of waiting keeps it."""
    scan = Waiter(kernel_exits=False)
    proc = sleeper()
    try:
        assert scan._exits.add(proc.pid) is False
        scan.wake()
        assert scan._exits.wait(5) == ([-1], [])  # (exits and the wake pipe, readers)
        monkeypatch.setattr(scan._exits, "_poll", None)  # the select() way
        scan.wake()
        assert scan._exits.wait(5) == ([-1], [])  # (exits and the wake pipe, readers)
    finally:
        scan.close()
        proc.kill()
        proc.wait()
    if not hasattr(os, "pidfd_open"):
        return
    kernel = Waiter()
    gone = sleeper()
    gone.kill()
    gone.wait()
    try:
        assert kernel._exits.add(gone.pid) is False
        kernel.wake()
        assert kernel._exits.wait(5) == ([-1], [])

        def refused(_pid: int) -> int:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "pidfd_open", refused)
        assert kernel._exits.add(os.getpid()) is False  # refused: the scan from now on
        assert kernel._exits.add(os.getpid()) is False  # and not asked again
    finally:
        kernel.close()


def _pipe_reader(waiter: Waiter, gap: float) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    waiter.add_reader(read_fd, gap=gap)
    return read_fd, write_fd


def test_a_reader_added_again_is_waited_on_at_once(waiter: Waiter) -> None:
    """add_reader() again ends the rest the reader was given (a new reader, not the old)."""
    read_fd, write_fd = _pipe_reader(waiter, gap=3600)
    try:
        os.write(write_fd, b"x")
        assert waiter.wait(30).readable == {read_fd}
        assert waiter.wait(0.01).readable == set()  # resting for its gap
        waiter.add_reader(read_fd, gap=3600)
        started = time.monotonic()
        assert waiter.wait(10).readable == {read_fd}
        assert time.monotonic() - started < 5
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_wait_without_limit_outlasts_a_readers_rest(waiter: Waiter) -> None:
    """wait(None) while a reader rests: it ends when the reader is reported again, not
    with an empty answer when the rest is over."""
    read_fd, write_fd = _pipe_reader(waiter, gap=0.1)
    rescue = threading.Timer(30, waiter.wake)  # a wrong wait fails the test, never hangs it
    rescue.start()
    try:
        os.write(write_fd, b"x")
        assert waiter.wait(None).readable == {read_fd}
        again = waiter.wait(None)
        assert (again.readable, again.woken) == ({read_fd}, False)
    finally:
        rescue.cancel()
        os.close(read_fd)
        os.close(write_fd)


def test_a_reader_whose_rest_is_over_does_not_spin_the_wait(
    waiter: Waiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a reader's rest is over, a wait is one wait of the kernel for its whole
    timeout, not a loop of zero-length polls. (The kernel's wait is counted, and run.)"""
    read_fd, write_fd = _pipe_reader(waiter, gap=0.05)
    try:
        os.write(write_fd, b"x")
        assert waiter.wait(30).readable == {read_fd}
        os.read(read_fd, 1)  # read: nothing more to report
        assert waiter.wait(0.2).readable == set()  # outlasts the rest
        kernel_waits: list[float | None] = []
        real_wait = waiter._exits.wait

        def counted(timeout: float | None, readers: Sequence[int] = ()) -> Any:
            kernel_waits.append(timeout)
            return real_wait(timeout, readers)

        monkeypatch.setattr(waiter._exits, "wait", counted)
        assert waiter.wait(0.2).readable == set()
        assert len(kernel_waits) == 1, f"{len(kernel_waits)} kernel waits for one wait"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_wait_of_zero_returns_at_once(waiter: Waiter) -> None:
    started = time.monotonic()
    for _ in range(5):
        assert waiter.wait(0) == Wakeup()
    assert time.monotonic() - started < 2.5  # (a floor of a second a wait would be 5 s)
