"""Replaying what real agents left behind, step by step: the files they wrote (copied into a
temporary home) and the process trees recorded beside them, through quintd's real matcher,
tree folding, readers and tracker, on a fake clock.

The recorded processes are not running here, so what a reader would ask /proc about them
(owner, environment, children, open files, sockets) comes from the recording: that is the
one stand-in, and it holds only what the real system reported at that step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, LifecycleEvent
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.scanner import KnownProcess, fold_trees
from quintd.sources.manager import SourceManager, SourceSettings
from quintd.sources.processes import TcpSocket
from quintd.sources.registry import READERS
from quintd.sources.spec import ReaderSpec
from quintd.store import Store
from quintd.tracker import SessionTracker

MACHINE = "0123456789abcdef0123456789abcdef"
RECORDED_HOME = "/home/dev"


@dataclass
class Rec:
    """One recorded process."""

    pid: int
    ppid: int
    comm: str
    exe: str
    argv: list[str]
    cwd: str | None
    start_time: float
    start_ticks: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    open_files: list[str] = field(default_factory=list)
    tcp: list[TcpSocket] = field(default_factory=list)


def parse_started(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def load_processes(path: Path, start_times: dict[int, float] | None = None) -> list[Rec]:
    """A recorded process tree; where the recording has no start times, ``start_times``
    gives them (from the story the fixture's README tells)."""
    data = json.loads(path.read_text())
    rows: list[dict[str, Any]] = data["processes"] if isinstance(data, dict) else data
    recs = []
    for row in rows:
        if "started" in row:
            start = parse_started(row["started"])
        else:
            start = (start_times or {}).get(row["pid"], 0.0)
        files = list(row.get("open_files") or [])
        sockets = []
        for fd in row.get("fds") or []:
            target = fd.get("target", "")
            if target.startswith("/"):
                files.append(target)
            if "tcp" in fd:
                state, local, _arrow, remote = fd["tcp"].split(" ")
                sockets.append(TcpSocket(state, local, remote))
        recs.append(
            Rec(
                pid=row["pid"],
                ppid=row["ppid"],
                comm=row["comm"],
                exe=row.get("exe") or "",
                argv=list(row.get("argv") or []),
                cwd=row.get("cwd"),
                start_time=start,
                start_ticks=str(row["start_ticks"]) if row.get("start_ticks") else None,
                env=dict(row.get("env") or {}),
                open_files=files,
                tcp=sockets,
            )
        )
    return recs


class RecordedProcesses:
    """The ProcessView of a recorded tree, with the recorded home mapped to the test's."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.recs: dict[int, Rec] = {}

    def show(self, recs: Iterable[Rec]) -> None:
        self.recs = {r.pid: r for r in recs}

    def _local(self, path: str) -> str:
        if path == RECORDED_HOME or path.startswith(RECORDED_HOME + "/"):
            return str(self.home) + path[len(RECORDED_HOME) :]
        return path

    def uid(self, pid: int) -> int | None:
        return os.getuid() if pid in self.recs else None

    def environ(self, pid: int) -> dict[str, str] | None:
        rec = self.recs.get(pid)
        if rec is None:
            return None
        return {**{k: self._local(v) for k, v in rec.env.items()}, "HOME": str(self.home)}

    def start_ticks(self, pid: int) -> str | None:
        rec = self.recs.get(pid)
        return rec.start_ticks if rec else None

    def exe(self, pid: int) -> str | None:
        rec = self.recs.get(pid)
        return rec.exe if rec else None

    def argv(self, pid: int) -> list[str]:
        rec = self.recs.get(pid)
        return list(rec.argv) if rec else []

    def children(self, pid: int) -> list[int]:
        return [r.pid for r in self.recs.values() if r.ppid == pid]

    def open_files(self, pid: int) -> set[str]:
        rec = self.recs.get(pid)
        return {self._local(f) for f in rec.open_files} if rec else set()

    def tcp(self, pid: int) -> list[TcpSocket]:
        rec = self.recs.get(pid)
        return list(rec.tcp) if rec else []


def agents(recs: Iterable[Rec], home: Path) -> list[AgentProcess]:
    """What the scanner makes of a recorded tree: the same matcher, the same folding."""
    known: dict[int, KnownProcess] = {}
    for rec in recs:
        cwd = rec.cwd  # as the process had it (only the state files moved to the test's home)
        match = match_process(
            BUILTIN_PLATFORMS, name=rec.comm, exe=rec.exe, argv=rec.argv, cwd=rec.cwd
        )
        agent = None
        if match is not None:
            agent = AgentProcess(
                platform=match.platform,
                pid=rec.pid,
                ppid=rec.ppid,
                start_time=rec.start_time,
                user="dev",
                exe=rec.exe,
                cwd=cwd,
                name=rec.comm,
                matched_by=match.matched_by,
                signing_id="sha256:" + "0" * 64,
                uid=os.getuid(),
            )
        known[rec.pid] = KnownProcess(
            rec.start_time, rec.ppid, rec.comm, agent, helper=bool(match and match.helper)
        )
    return fold_trees(known)


class Clock:
    def __init__(self, start: float) -> None:
        self.t = start  # epoch seconds: the wall clock; monotonic runs with it

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t


class Replay:
    """One agent's story: call :meth:`step` with each step's processes and time. What the
    tracker decides goes through a real store (SQLite in the home's parent), so that
    :meth:`restart` is a daemon restart: everything rebuilt from the database."""

    def __init__(
        self,
        home: Path,
        start: float,
        idle_after: float = 3600.0,
        readers: tuple[ReaderSpec, ...] | None = None,
    ) -> None:
        self.home = home
        self.idle_after = idle_after
        self.readers = readers if readers is not None else READERS
        self.clock = Clock(start)
        self.view = RecordedProcesses(home)
        self.db = home.parent / "replay.db"
        self.store = Store(self.db)
        self.sources, self.tracker = self._parts()
        self.events: list[LifecycleEvent] = []
        self.agents: list[AgentProcess] = []

    def _parts(self) -> tuple[SourceManager, SessionTracker]:
        sources = SourceManager(
            SourceSettings(watch=False),
            clock=self.clock.monotonic,
            readers=self.readers,
            processes=self.view,
            wall=lambda: self.clock.t,
        )
        tracker = SessionTracker(MACHINE, idle_after=self.idle_after, clock=self.clock)
        return sources, tracker

    def restart(self) -> None:
        """quintd stops and starts again: new readers, a tracker restored from disk."""
        self.store.close()
        self.store = Store(self.db)
        self.sources, self.tracker = self._parts()
        self.tracker.restore(self.store.load_sessions(), self.store.load_ended())

    def step(self, recs: list[Rec], at: float) -> list[LifecycleEvent]:
        self.clock.t = max(self.clock.t, at)
        self.view.show(recs)
        self.agents = agents(recs, self.home)
        facts, pending = self.sources.observe(self.agents)
        changes = self.tracker.plan(self.agents, facts, pending, self.sources.waiting)
        self.store.apply(changes.events, changes.upserts, changes.removals)
        self.tracker.commit(changes)
        self.events += changes.events
        return changes.events

    def advance(self, seconds: float) -> list[LifecycleEvent]:
        """Time passes with nothing new on disk or in the process table."""
        recs = list(self.view.recs.values())
        return self.step(recs, self.clock.t + seconds)


Line = tuple[str, str, str | None, str | None, str | None]


def story(events: list[LifecycleEvent]) -> list[Line]:
    """(session, state, name, model, parent) per event, sessions labelled by first sight."""
    names: dict[str, str] = {}
    out = []
    for e in events:
        label = names.setdefault(e.session_id, f"s{len(names) + 1}")
        parent = names.get(e.parent_id) if e.parent_id else None
        out.append((label, e.state, e.session_name, e.model, parent))
    return out


def copy_tree(source: Path, target: Path) -> None:
    """Copy a snapshot's files over the home (they only ever grew)."""
    for path in source.rglob("*"):
        if path.is_file():
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


_FILES_LINE = re.compile(r"^\s*(\d+)\s+(?:born (\S+)\s+mod (\S+)\s+)?(\S+)")


def files_txt(path: Path) -> dict[str, tuple[int, str | None]]:
    """``files.txt`` of a snapshot: relative path -> (size, modification time of day)."""
    found = {}
    for line in path.read_text().splitlines():
        match = _FILES_LINE.match(line)
        if match:
            size, _born, mod, name = match.groups()
            found[name] = (int(size), mod)
    return found


def at_size(final: Path, target: Path, size: int) -> None:
    """A file as it stood when it was ``size`` bytes long (append-only files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(final.read_bytes()[:size])


def set_mtime(path: Path, epoch: float) -> None:
    os.utime(path, (epoch, epoch))


def uuid7_time(thread: str) -> float:
    return int(thread.replace("-", "")[:12], 16) / 1000


def day_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def clock_time(day: str, hms: str) -> float:
    base = datetime.fromisoformat(day).replace(tzinfo=UTC)
    h, m, s = hms.split(":")
    return (base + timedelta(hours=int(h), minutes=int(m), seconds=float(s))).timestamp()
