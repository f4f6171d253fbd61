"""Linux's process events (the netlink process connector): exec, fork, exit and name
changes of every process, as they happen, instead of listing ``/proc`` to find them.

The kernel multicasts one ``struct proc_event`` per datagram to the sockets subscribed to
``CN_IDX_PROC``; subscribing takes ``CAP_NET_ADMIN`` in the initial user and pid
namespaces (root on the host), and a kernel built with ``CONFIG_PROC_EVENTS``. Where any
of that is missing, :meth:`ProcEvents.open` raises :class:`ProcEventsUnavailable`, and the
caller keeps listing ``/proc``.

Only what says where processes come and go is kept: a fork of a new process (not a
thread), an exec, the exit of a whole process, a process renaming itself (``prctl``).
A socket filter in the kernel drops the rest (threads, uid/gid/sid changes) before they
cost a wakeup. One read drains at most ``limit`` datagrams into an :class:`EventBatch`:
pids only, nothing read from ``/proc`` here. When the daemon falls behind, the kernel
drops events and the next read fails with ``ENOBUFS``: the batch then says ``lost`` (the
caller lists ``/proc`` again) and the kernel's drop count is kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3

# struct proc_event's `what`
PROC_EVENT_NONE = 0  # the answer to a subscription (ack.err: 0 or an errno)
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_COMM = 0x200
PROC_EVENT_EXIT = 0x80000000

_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33  # as root: past net.core.rmem_max

# nlmsghdr (16 bytes) + cn_msg (20) + proc_event: what, cpu, timestamp_ns (16), then the
# event's first four u32: fork (parent pid, parent tgid, child pid, child tgid), exec
# (pid, tgid), exit (pid, tgid, code, signal), comm (pid, tgid, then 16 bytes of name).
_MESSAGE = struct.Struct("=IHHIIIIIIHHIIQIIII")
_DATA = 52  # offset of the event's data
_COMM = slice(_DATA + 8, _DATA + 24)

DEFAULT_RCVBUF = 8 * 1024 * 1024  # about 10,000 events waiting (each takes ~768 bytes)
DEFAULT_BATCH = 4096  # datagrams per read: bounds one wakeup's work
# How long the socket is left out of the wait after a read (Waiter.add_reader's gap): a
# storm is read in batches, where a process that came and went costs no look at all,
# and a wakeup (~0.1 ms of CPU in a VM) is paid 50 times a second at most. An exec is
# still looked at within this much of its event: well inside a 50 ms agent's life.
READ_GAP_S = 0.02


class ProcEventsUnavailable(Exception):
    """The kernel refused the subscription, or does not answer it: list ``/proc``."""


class ProcEvent(NamedTuple):
    what: int  # PROC_EVENT_EXEC, _FORK (pid: the new process), _EXIT or _COMM
    pid: int  # the process (its tgid)
    parent: int = 0  # a fork's parent process
    name: str = ""  # a rename's new name


@dataclass
class EventBatch:
    """What one read found, with the order of the events folded in: a pid that exec'd and
    then exited within the batch is not in ``execs`` (nothing is left to look at), and a
    reused pid's exit comes before its new process's fork and exec (apply ``exits``
    first)."""

    execs: dict[int, None] = field(default_factory=dict)  # pids, in order
    forks: dict[int, int] = field(default_factory=dict)  # new process -> its parent
    comms: dict[int, str] = field(default_factory=dict)  # pid -> the name it gave itself
    exits: set[int] = field(default_factory=set)
    lost: bool = False  # the kernel dropped events: the process table must be listed
    more: bool = False  # the read stopped at its limit: more is waiting
    events: int = 0  # datagrams read

    def add(self, event: ProcEvent) -> None:
        """Fold in the next event."""
        what, pid = event.what, event.pid
        if what == PROC_EVENT_EXEC:
            self.execs[pid] = None
            self.comms.pop(pid, None)
        elif what == PROC_EVENT_FORK:
            self.forks[pid] = event.parent
        elif what == PROC_EVENT_EXIT:
            self.exits.add(pid)
            self.execs.pop(pid, None)
            self.forks.pop(pid, None)
            self.comms.pop(pid, None)
        elif what == PROC_EVENT_COMM:
            self.comms[pid] = event.name


@dataclass
class ProcEventStats:
    received: int = 0  # datagrams read
    overflows: int = 0  # reads that found the socket had overflowed (ENOBUFS)
    dropped: int = 0  # events the kernel dropped because the socket was full
    malformed: int = 0  # datagrams that were not a process event
    foreign: int = 0  # datagrams not from the kernel


class ProcEvents:
    """A subscription to the process connector. Only the thread that owns it reads it;
    ``fileno()`` goes into that thread's poll."""

    method = "connector"

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray(256)
        self.filtered = False  # whether the kernel drops thread events for us
        self.stats = ProcEventStats()

    @classmethod
    def open(
        cls, rcvbuf: int = DEFAULT_RCVBUF, timeout: float = 2.0, *, kernel_filter: bool = True
    ) -> ProcEvents:
        """Subscribe, and wait (at most ``timeout``) for the kernel's answer: no answer
        means no connector for us (a kernel without ``CONFIG_PROC_EVENTS``, a pid or
        user namespace of a container), an error in it a refusal (``EPERM``)."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as exc:  # EPROTONOSUPPORT, EAFNOSUPPORT, EPERM/EACCES (seccomp)
            raise ProcEventsUnavailable(f"netlink connector socket: {_reason(exc)}") from None
        events = cls(sock)
        try:
            events._subscribe(rcvbuf, timeout, kernel_filter)
        except BaseException:
            sock.close()
            raise
        return events

    def _subscribe(self, rcvbuf: int, timeout: float, kernel_filter: bool) -> None:
        sock = self._sock
        try:
            sock.bind((0, CN_IDX_PROC))  # port 0: the kernel picks a free one
        except OSError as exc:
            raise ProcEventsUnavailable(f"joining CN_IDX_PROC: {_reason(exc)}") from None
        _set_rcvbuf(sock, rcvbuf)
        if kernel_filter:
            self.filtered = _attach_filter(sock)
        sock.setblocking(False)
        # The answer carries our ack + 1 (its seq is the kernel's own on recent kernels):
        # a random ack tells ours from the answers to other subscribers.
        ack = random.getrandbits(31)
        try:
            sock.send(_control(PROC_CN_MCAST_LISTEN, ack))
        except OSError as exc:
            raise ProcEventsUnavailable(f"subscribing: {_reason(exc)}") from None
        self._await_ack(ack + 1, timeout)

    def _await_ack(self, answer: int, timeout: float) -> None:
        """The kernel answers a subscription at once (in the sending call); events that
        come meanwhile are dropped (the caller lists the process table after opening)."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcEventsUnavailable(
                    "the kernel did not answer the subscription (no CONFIG_PROC_EVENTS, or "
                    "not in the initial pid and user namespaces)"
                )
            if not poller.poll(max(int(remaining * 1000), 1)):
                continue
            while True:
                try:
                    size, sender = self._sock.recvfrom_into(self._buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        continue
                    raise ProcEventsUnavailable(f"reading: {_reason(exc)}") from None
                if size < _MESSAGE.size or sender[0] != 0:
                    continue
                fields = _MESSAGE.unpack_from(self._buf)
                what, cn_ack, err = fields[11], fields[8], fields[14]  # ack.err: an errno
                if what == PROC_EVENT_NONE and cn_ack == answer:
                    if err:
                        raise ProcEventsUnavailable(f"subscribing: {os.strerror(err)}")
                    return

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, limit: int = DEFAULT_BATCH) -> EventBatch:
        """Drain up to ``limit`` datagrams without blocking, folded into one batch.
        Raises :class:`ProcEventsUnavailable` if the socket fails for good."""
        batch = EventBatch()
        for event in self._drain(limit, batch):
            batch.add(event)
        return batch

    def events(self, limit: int = DEFAULT_BATCH) -> list[ProcEvent]:
        """The events one by one, in order (what :meth:`read` folds)."""
        return list(self._drain(limit, EventBatch()))

    def _drain(self, limit: int, batch: EventBatch) -> Iterator[ProcEvent]:
        """The process events of up to ``limit`` datagrams; ``batch`` gets the count, and
        whether events were lost or more wait."""
        buf = self._buf
        recv = self._sock.recvfrom_into
        stats = self.stats
        read = 0
        while read < limit:
            try:
                size, sender = recv(buf)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # reported once, then the queue is read on
                    batch.lost = True
                    stats.overflows += 1
                    continue
                raise ProcEventsUnavailable(f"reading: {_reason(exc)}") from None
            read += 1
            if sender[0] != 0:  # only the kernel speaks from port 0
                stats.foreign += 1
                continue
            try:
                event = parse_event(buf, size)
            except ValueError:
                stats.malformed += 1
                continue
            if event is not None:
                yield event
        else:
            batch.more = True
        batch.events = read
        stats.received += read
        if batch.lost:
            stats.dropped = max(stats.dropped, _kernel_drops(self._sock))

    def close(self) -> None:
        """Unsubscribe and close (safe to call twice)."""
        if self._sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            self._sock.send(_control(PROC_CN_MCAST_IGNORE, random.getrandbits(31)))
        self._sock.close()


def parse_event(data: bytes | bytearray, size: int | None = None) -> ProcEvent | None:
    """One datagram (its first ``size`` bytes): the event it carries, None for what is not
    kept (a thread's fork, exit or rename, another kind of event, the answer to a
    subscription). ValueError if it is no process event."""
    size = len(data) if size is None else size
    if size < _MESSAGE.size:
        raise ValueError(f"{size} bytes: too short for a process event")
    (_, _, _, _, _, idx, val, _, _, cn_len, _, what, _, _, a, b, c, d) = _MESSAGE.unpack_from(data)
    if idx != CN_IDX_PROC or val != CN_VAL_PROC or cn_len < 24:
        raise ValueError(f"not a process event (connector {idx}.{val}, {cn_len} bytes)")
    # Whole processes only: threads are left out (the kernel's filter, where attached,
    # dropped them already). A new thread is a fork whose child pid is not its tgid.
    if what == PROC_EVENT_EXEC:
        return ProcEvent(what, b)
    if what == PROC_EVENT_FORK and c == d:
        return ProcEvent(what, d, parent=b)
    if what == PROC_EVENT_EXIT and a == b:
        return ProcEvent(what, b)
    if what == PROC_EVENT_COMM and a == b and size >= _COMM.stop:
        return ProcEvent(what, b, name=_name(data[_COMM]))
    return None


def _control(op: int, ack: int) -> bytes:
    """A message to the connector: (un)subscribe to process events."""
    payload = struct.pack("=I", op)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, ack, len(payload), 0) + payload
    return struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn


def _name(raw: bytes | bytearray) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """As large as asked: a burst waits there while the daemon is busy."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:  # not root: up to net.core.rmem_max
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _kernel_drops(sock: socket.socket) -> int:
    """The events the kernel dropped for this socket (its receive queue was full): the
    Drops column of /proc/net/netlink, found by the socket's inode."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
        with open("/proc/net/netlink") as fh:
            header = fh.readline().split()
            drops_at, inode_at = header.index("Drops"), header.index("Inode")
            for line in fh:
                cols = line.split()
                if len(cols) > max(drops_at, inode_at) and cols[inode_at] == str(inode):
                    return int(cols[drops_at])
    except (OSError, ValueError):
        pass
    return 0


# -- the kernel's filter: classic BPF, run on each datagram before it is queued ------------

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JEQ_X = 0x1D
_BPF_JA = 0x05
_BPF_TAX = 0x07
_BPF_RET_K = 0x06


def _big(value: int) -> int:
    """A host-order u32 as BPF's absolute loads see it (they read network order)."""
    return int.from_bytes(struct.pack("=I", value), "big")


def filter_program() -> list[tuple[int, int, int, int]]:
    """Keep an exec, the answer to a subscription, a fork whose child is a new process
    (child pid = child tgid), the exit or rename of a whole process (pid = tgid); drop the
    rest. (code, jt, jf, k) as ``struct sock_filter``."""
    what, pid, tgid = 36, _DATA, _DATA + 4
    child_pid, child_tgid = _DATA + 8, _DATA + 12
    accept, drop = 15, 14
    program = [
        (_BPF_LD_W_ABS, 0, 0, what),  # 0
        (_BPF_JEQ_K, 0, 0, _big(PROC_EVENT_EXEC)),  # 1 -> accept
        (_BPF_JEQ_K, 0, 0, _big(PROC_EVENT_NONE)),  # 2 -> accept
        (_BPF_JEQ_K, 0, 0, _big(PROC_EVENT_FORK)),  # 3 -> 6
        (_BPF_JEQ_K, 0, 0, _big(PROC_EVENT_EXIT)),  # 4 -> 10
        (_BPF_JEQ_K, 0, 0, _big(PROC_EVENT_COMM)),  # 5 -> 10, else drop
        (_BPF_LD_W_ABS, 0, 0, child_pid),  # 6
        (_BPF_TAX, 0, 0, 0),  # 7
        (_BPF_LD_W_ABS, 0, 0, child_tgid),  # 8
        (_BPF_JA, 0, 0, 13 - 10),  # 9 -> 13
        (_BPF_LD_W_ABS, 0, 0, pid),  # 10
        (_BPF_TAX, 0, 0, 0),  # 11
        (_BPF_LD_W_ABS, 0, 0, tgid),  # 12
        (_BPF_JEQ_X, 0, 0, 0),  # 13 -> accept, else drop
        (_BPF_RET_K, 0, 0, 0),  # 14: drop
        (_BPF_RET_K, 0, 0, 0xFFFF),  # 15: accept (the whole datagram)
    ]

    def jump(index: int, true: int, false: int) -> None:
        code, _, _, k = program[index]
        program[index] = (code, true - index - 1, false - index - 1, k)

    jump(1, accept, 2)
    jump(2, accept, 3)
    jump(3, 6, 4)
    jump(4, 10, 5)
    jump(5, 10, drop)
    jump(13, accept, drop)
    return program


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _attach_filter(sock: socket.socket) -> bool:
    """Whether the kernel took the filter (without it, the same events are dropped here,
    a wakeup later)."""
    program = filter_program()
    instructions = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    fprog = _SockFprog(len(program), instructions)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))
    except OSError:
        return False
    return True
