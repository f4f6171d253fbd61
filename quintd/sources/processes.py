"""What readers may ask of the process table about an agent process: its owner, its
environment, its children, the files and sockets it holds. One interface, read live from
``/proc`` (and psutil elsewhere); tests hand readers the process trees recorded beside the
fixtures instead."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import psutil

from quintd.procfs import start_ticks

TCP_STATES = {"01": "ESTAB", "0A": "LISTEN"}

# How far below an agent process a reader looks for the processes that do its work: npm's
# shims and loaders add levels (Qwen Code from `node_modules/.bin/qwen`: cli-entry.js ->
# `node --expose-gc cli.js` -> its relaunched self, which writes the registry), and a user's
# process tree is theirs to shape, so the walk is bounded in depth and in size.
MAX_TREE_DEPTH = 6
MAX_TREE_SIZE = 256


@dataclass(frozen=True)
class TcpSocket:
    state: str  # "ESTAB", "LISTEN", ...
    local: str  # "127.0.0.1:40997"
    remote: str


class ProcessView(Protocol):
    def uid(self, pid: int) -> int | None: ...

    def environ(self, pid: int) -> dict[str, str] | None: ...

    def start_ticks(self, pid: int) -> str | None: ...

    def exe(self, pid: int) -> str | None: ...

    def argv(self, pid: int) -> list[str]: ...

    def children(self, pid: int) -> list[int]: ...

    def open_files(self, pid: int) -> set[str]: ...

    def tcp(self, pid: int) -> list[TcpSocket]: ...


def descendants(
    view: ProcessView, pid: int, *, depth: int = MAX_TREE_DEPTH, limit: int = MAX_TREE_SIZE
) -> list[int]:
    """The descendants of ``pid``, nearest first (its children, then theirs ...), at most
    ``depth`` levels down and ``limit`` processes."""
    return _Walk(view, pid, limit).below(depth)


class _Walk:
    """A walk down one process tree, level by level, only as deep as asked so far."""

    def __init__(self, view: ProcessView, pid: int, limit: int = MAX_TREE_SIZE) -> None:
        self.view = view
        self.limit = limit
        self.levels: list[list[int]] = []
        self.seen = {pid}
        self.last = [pid]
        self.count = 0

    def below(self, depth: int) -> list[int]:
        while len(self.levels) < min(depth, MAX_TREE_DEPTH) and self.last:
            following: list[int] = []
            for parent in self.last:
                for child in self.view.children(parent):
                    if child in self.seen:
                        continue
                    if self.count >= self.limit:
                        break
                    self.seen.add(child)
                    following.append(child)
                    self.count += 1
            self.levels.append(following)
            self.last = following if self.count < self.limit else []
        return [pid for level in self.levels[:depth] for pid in level]


class Trees:
    """The process trees below agent processes, each walked once a pass, level by level as
    deep as some reader asks (the one walk of a process tree every reader uses)."""

    def __init__(self, view: ProcessView) -> None:
        self.view = view
        self._walks: dict[int, _Walk] = {}

    def below(self, pid: int, depth: int = MAX_TREE_DEPTH) -> list[int]:
        """The descendants of ``pid``, nearest first, at most ``depth`` levels down."""
        walk = self._walks.get(pid)
        if walk is None:
            walk = self._walks[pid] = _Walk(self.view, pid)
        return walk.below(depth)


class LiveProcesses:
    """The running system."""

    def uid(self, pid: int) -> int | None:
        try:
            return int(psutil.Process(pid).uids().real)
        except (psutil.Error, OSError):
            return None

    def environ(self, pid: int) -> dict[str, str] | None:
        try:
            return dict(psutil.Process(pid).environ())
        except (psutil.Error, OSError):
            return None

    def start_ticks(self, pid: int) -> str | None:
        return start_ticks(pid)

    def exe(self, pid: int) -> str | None:
        try:
            return str(psutil.Process(pid).exe()) or None
        except (psutil.Error, OSError):
            return None

    def argv(self, pid: int) -> list[str]:
        try:
            return list(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return []

    def children(self, pid: int) -> list[int]:
        """Direct children: from /proc/<pid>/task/*/children where the kernel has it (no
        walk over the whole process table), else psutil."""
        found: list[int] = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", "rb") as fh:
                    found.extend(int(x) for x in fh.read().split())
            return found
        except (OSError, ValueError):
            pass
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except (psutil.Error, OSError):
            return []

    def open_files(self, pid: int) -> set[str]:
        try:
            return {f.path for f in psutil.Process(pid).open_files()}
        except (psutil.Error, OSError):
            return set()

    def tcp(self, pid: int) -> list[TcpSocket]:
        """The TCP sockets a process holds (Linux: its fds' socket inodes in /proc/net/tcp;
        the daemon's own network namespace)."""
        inodes: set[str] = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            return []
        if not inodes:
            return []
        sockets = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as fh:
                    next(fh, None)
                    for line in fh:
                        cols = line.split()
                        if len(cols) > 9 and cols[9] in inodes:
                            sockets.append(
                                TcpSocket(
                                    TCP_STATES.get(cols[3], cols[3]),
                                    _address(cols[1]),
                                    _address(cols[2]),
                                )
                            )
            except OSError:
                continue
        return sockets


def _address(hex_address: str) -> str:
    """``0100007F:A025`` -> ``127.0.0.1:40997`` (IPv4; IPv6 kept as hex)."""
    host, _, port = hex_address.partition(":")
    number = int(port, 16) if port else 0
    if len(host) == 8:
        octets = bytes.fromhex(host)[::-1]
        return f"{'.'.join(str(b) for b in octets)}:{number}"
    return f"[{host}]:{number}"
