"""The main loop's wait: until the next pass is due, another thread asks for a pass
early (a file event, a signal), or a watched agent process exits.

Exits come from the kernel, with no thread per process: a pidfd per process in one
``poll`` on Linux (5.3+), ``EVFILT_PROC``/``NOTE_EXIT`` in one kqueue on macOS and the
BSDs. Where neither works (an older kernel, a syscall refused by a seccomp filter), the
wait is a plain timed one and the scan notices exits, as before: status says which.

Other descriptors join the same wait with :meth:`Waiter.add_reader` (the process events'
socket): reported when readable, then left out of the wait for ``gap`` seconds, so that a
steady stream of events is read in batches rather than one wakeup each.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("quintd.waiter")

# What identifies a process beyond its pid (its start time in clock ticks): a pidfd is
# only kept if the process it names is still the one the scanner saw.
Identity = Callable[[int], str | None]


@dataclass
class Wakeup:
    """Why a wait ended: ``exited`` pids (from the kernel), ``woken`` by :meth:`wake`,
    ``readable`` descriptors (of :meth:`Waiter.add_reader`); none means the timeout
    passed."""

    exited: set[int] = field(default_factory=set)
    woken: bool = False
    readable: set[int] = field(default_factory=set)


class Waiter:
    """Wait for a timeout, a :meth:`wake` (safe from any thread and from a signal
    handler) or the exit of a watched process. Only the main loop calls :meth:`watch`
    and :meth:`wait`."""

    def __init__(self, identity: Identity | None = None, kernel_exits: bool = True) -> None:
        self._identity = identity
        self._read_fd, self._write_fd = os.pipe()
        for fd in (self._read_fd, self._write_fd):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self._exits: _ExitWatch = _NoExitWatch(self._read_fd)
        if kernel_exits:
            self._exits = _kernel_exit_watch(self._read_fd)
        self.method = self._exits.method
        self._readers: dict[int, float] = {}  # fd -> its gap (seconds)
        self._quiet_until: dict[int, float] = {}  # fd -> when it is waited on again

    def add_reader(self, fd: int, gap: float = 0.0) -> None:
        """Wake when ``fd`` is readable; once reported, it is left out of the waits for
        ``gap`` seconds (the caller reads it meanwhile)."""
        self._readers[fd] = gap
        self._quiet_until.pop(fd, None)

    def remove_reader(self, fd: int) -> None:
        self._readers.pop(fd, None)
        self._quiet_until.pop(fd, None)

    @property
    def watched(self) -> set[int]:
        return self._exits.watched()

    def watch(self, processes: Mapping[int, str | None]) -> set[int]:
        """Watch exactly these processes (pid -> the identity the scanner saw, or None if
        unknown). Returns the pids already gone (or replaced) by now: the caller passes
        again at once."""
        gone: set[int] = set()
        current = self._exits.watched()
        for pid in current - processes.keys():
            self._exits.remove(pid)
        for pid in processes.keys() - current:
            if not self._exits.add(pid):
                if self._exits.method == "scan":
                    break  # the kernel refused: the scan is the watch
                gone.add(pid)
                continue
            # Opened after the scan: the pid may name another process by now.
            expected = processes[pid]
            if self._identity and expected is not None and self._identity(pid) != expected:
                self._exits.remove(pid)
                gone.add(pid)
        self.method = self._exits.method
        return gone

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def wait(self, timeout: float | None) -> Wakeup:
        """Until ``timeout`` seconds pass (None: no limit), a wake, an exit, or a reader
        is readable."""
        result = Wakeup()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            readers = [fd for fd in self._readers if self._quiet_until.get(fd, 0.0) <= now]
            quiet = [t for fd, t in self._quiet_until.items() if t > now and fd in self._readers]
            # Until the deadline, or until a quiet reader is waited on again.
            until = min([*quiet, *([deadline] if deadline is not None else [])], default=None)
            try:
                ready, readable = self._exits.wait(
                    None if until is None else max(until - now, 0.0), readers
                )
            except InterruptedError:
                return result
            if ready or readable or (deadline is None and not quiet):
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        for fd in readable:
            result.readable.add(fd)
            gap = self._readers.get(fd, 0.0)
            if gap > 0:
                self._quiet_until[fd] = time.monotonic() + gap
        for pid in ready:
            if pid < 0:
                result.woken = True
            else:
                result.exited.add(pid)
                self._exits.remove(pid)
        if result.woken:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._read_fd, 4096):
                    pass
        return result

    def close(self) -> None:
        self._exits.close()
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


# -- the kernel's side -------------------------------------------------------------------


class _ExitWatch:
    """One way of waiting: ``wait`` returns the exited pids, and -1 for the wake pipe."""

    method = "scan"

    def __init__(self, wake_fd: int) -> None:
        self._wake_fd = wake_fd

    def watched(self) -> set[int]:
        return set()

    def add(self, pid: int) -> bool:
        """Watch ``pid``: False if it is gone already, or the kernel refused (then
        ``method`` is ``"scan"`` from now on)."""
        return False

    def remove(self, pid: int) -> None:
        pass

    def wait(
        self, timeout: float | None, readers: Sequence[int] = ()
    ) -> tuple[list[int], list[int]]:
        """The exited pids (and -1 for the wake pipe), and the ``readers`` readable."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NoExitWatch(_ExitWatch):
    """Only the wake pipe: exits are found by the scan."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__(wake_fd)
        self._poll = select.poll() if hasattr(select, "poll") else None

    def wait(
        self, timeout: float | None, readers: Sequence[int] = ()
    ) -> tuple[list[int], list[int]]:
        if self._poll is None:
            ready, _, _ = select.select([self._wake_fd, *readers], [], [], timeout)
            return [-1 for fd in ready if fd == self._wake_fd], [
                fd for fd in ready if fd != self._wake_fd
            ]
        if not getattr(self, "_registered", False):
            self._poll.register(self._wake_fd, select.POLLIN)
            self._registered = True
        return _poll_with(self._poll, readers, timeout, lambda fd: -1)


class _PidfdWatch(_ExitWatch):
    """Linux: a pidfd is readable once its process has exited."""

    method = "pidfd"

    def __init__(self, wake_fd: int) -> None:
        super().__init__(wake_fd)
        self._poll = select.poll()
        self._poll.register(wake_fd, select.POLLIN)
        self._fds: dict[int, int] = {}  # pid -> pidfd
        self._pids: dict[int, int] = {}  # pidfd -> pid

    def watched(self) -> set[int]:
        return set(self._fds)

    def add(self, pid: int) -> bool:
        if self.method == "scan":
            return False
        try:
            fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
        except ProcessLookupError:
            return False
        except OSError as exc:
            # ENOSYS (before 5.3), EPERM (a seccomp filter), EMFILE (out of descriptors):
            # the scan finds exits instead.
            log.warning(
                "exit notification from the kernel unavailable (pidfd_open: %s); "
                "exits are found by the scan",
                os.strerror(exc.errno or errno.EINVAL),
            )
            self._give_up()
            return False
        os.set_inheritable(fd, False)
        self._fds[pid] = fd
        self._pids[fd] = pid
        self._poll.register(fd, select.POLLIN)
        return True

    def remove(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is None:
            return
        del self._pids[fd]
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def wait(
        self, timeout: float | None, readers: Sequence[int] = ()
    ) -> tuple[list[int], list[int]]:
        return _poll_with(
            self._poll,
            readers,
            timeout,
            lambda fd: -1 if fd == self._wake_fd else self._pids.get(fd, -1),
        )

    def _give_up(self) -> None:
        for pid in list(self._fds):
            self.remove(pid)
        self.method = "scan"

    def close(self) -> None:
        for pid in list(self._fds):
            self.remove(pid)


if sys.platform != "linux" and sys.platform != "win32":  # where select has kqueue

    class _KqueueWatch(_ExitWatch):
        """macOS and the BSDs: ``EVFILT_PROC`` with ``NOTE_EXIT`` fires once the process has
        exited; the wake pipe is a read filter on the same queue."""

        method = "kqueue"

        def __init__(self, wake_fd: int) -> None:
            super().__init__(wake_fd)
            self._kq = select.kqueue()
            wake = select.kevent(wake_fd, select.KQ_FILTER_READ, select.KQ_EV_ADD)
            self._kq.control([wake], 0, 0)
            self._pids: set[int] = set()

        def watched(self) -> set[int]:
            return set(self._pids)

        def add(self, pid: int) -> bool:
            if self.method == "scan":
                return False
            event = select.kevent(
                pid,
                select.KQ_FILTER_PROC,
                select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
                select.KQ_NOTE_EXIT,
            )
            try:
                self._kq.control([event], 0, 0)
            except ProcessLookupError:
                return False
            except OSError as exc:
                log.warning(
                    "exit notification from the kernel unavailable (kqueue: %s); "
                    "exits are found by the scan",
                    os.strerror(exc.errno or errno.EINVAL),
                )
                self.method = "scan"
                self._pids.clear()
                return False
            self._pids.add(pid)
            return True

        def remove(self, pid: int) -> None:
            if pid not in self._pids:
                return
            self._pids.discard(pid)
            event = select.kevent(pid, select.KQ_FILTER_PROC, select.KQ_EV_DELETE)
            with contextlib.suppress(OSError):
                self._kq.control([event], 0, 0)  # gone already: the one-shot filter went too

        def wait(
            self, timeout: float | None, readers: Sequence[int] = ()
        ) -> tuple[list[int], list[int]]:
            # A reader is waited on by a one-shot filter, added again at each wait.
            changes = [
                select.kevent(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD | select.KQ_EV_ONESHOT)
                for fd in readers
            ]
            ready: list[int] = []
            readable: list[int] = []
            for event in self._kq.control(changes, 64, timeout):
                if event.filter == select.KQ_FILTER_READ and event.ident == self._wake_fd:
                    ready.append(-1)
                elif event.filter == select.KQ_FILTER_READ:
                    readable.append(event.ident)
                elif event.fflags & select.KQ_NOTE_EXIT:
                    self._pids.discard(event.ident)
                    ready.append(event.ident)
            return ready, readable

        def close(self) -> None:
            self._kq.close()


def _kernel_exit_watch(wake_fd: int) -> _ExitWatch:
    if hasattr(os, "pidfd_open") and hasattr(select, "poll"):
        return _PidfdWatch(wake_fd)
    if sys.platform != "linux" and sys.platform != "win32" and hasattr(select, "kqueue"):
        return _KqueueWatch(wake_fd)
    return _NoExitWatch(wake_fd)


def _poll_with(
    poll: select.poll, readers: Sequence[int], timeout: float | None, pid_of: Callable[[int], int]
) -> tuple[list[int], list[int]]:
    """One ``poll`` with the readers registered for it alone."""
    for fd in readers:
        poll.register(fd, select.POLLIN)
    try:
        events = poll.poll(_milliseconds(timeout))
    finally:
        for fd in readers:
            with contextlib.suppress(KeyError, ValueError):
                poll.unregister(fd)
    wanted = set(readers)
    return [pid_of(fd) for fd, _ in events if fd not in wanted], [
        fd for fd, _ in events if fd in wanted
    ]


def _milliseconds(timeout: float | None) -> int | None:
    if timeout is None:
        return None
    return max(int(timeout * 1000 + 0.999), 0)
