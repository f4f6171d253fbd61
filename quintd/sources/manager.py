"""The source manager: finds each agent process's state directory, watches it, and asks
that platform's reader for the conversation the process runs.

For each agent process of a platform with a reader, the state directory comes from that
process's own environment (``CLAUDE_CONFIG_DIR``, ``CODEX_HOME``, ``HOME``), falling back
to its owner's home directory, so that quintd running as root sees every user's agents.
A directory not owned by the process's user (or root) is not trusted.

Files are read when watchdog reports a change (and once when first needed), never by
re-reading every pass. If a directory cannot be watched, its known files are polled
instead, and status says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts
from quintd.part_settings import PartSettings, setting
from quintd.protocol import AgentStateReport
from quintd.sources import sqlite_files
from quintd.sources.attribution import Pass
from quintd.sources.files import PASS_BUDGET, ReadStats, trusted_dir
from quintd.sources.processes import LiveProcesses, ProcessView, Trees
from quintd.sources.registry import READERS, readers_by_platform
from quintd.sources.spec import AgentState, ReaderContext, ReaderSpec
from quintd.sources.sqlite_files import STOPPING

log = logging.getLogger("quintd.sources")

# A process this young, of an agent that writes its state as it starts, may not have
# written it yet.
PENDING_GRACE_S = 3.0

# How often directories that did not exist yet are looked for without an event.
WATCH_RECHECK_S = 10.0
# Events a second from one watch beyond which it is too noisy to be an agent at work (a
# turn writes a few records a second): unwatched and polled for NOISY_BACKOFF_S.
NOISY_EVENTS_PER_S = 200
NOISY_BACKOFF_S = 60

Found = ConversationFacts | Sequence[ConversationFacts]


class SourceSettings(PartSettings):
    watch: bool = setting(
        True, doc="Watch state directories for changes (else poll the files known)."
    )
    watches_per_user: int = setting(
        1000,
        file="scan.watches_per_user",
        ge=0,
        le=1_000_000,
        doc="inotify watches one user's agent directories may hold (0 to 1000000): root's "
        "limit is shared by every root service. Beyond it that user's directories are "
        "polled, counted in `agent_state.watches_refused`.",
    )


class SourceManager:
    def __init__(
        self,
        settings: SourceSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        readers: tuple[ReaderSpec, ...] = READERS,
        processes: ProcessView | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or SourceSettings()
        self._processes = processes or LiveProcesses()
        self._context = ReaderContext(clock=clock, processes=self._processes)
        self._wall = wall
        self._readers = readers_by_platform(readers)
        self._states: dict[tuple[str, Path], AgentState] = {}
        self._watch_lists: dict[tuple[str, Path], tuple[Path, ...]] = {}  # as last asked
        self._roots: dict[tuple[int, int], Path | None] = {}
        # Roots trusted while they do not exist yet: looked at (one stat) each pass, the
        # owner's trust checked again once they exist (not the process's environment and
        # owner read again every pass).
        self._unmade: dict[tuple[int, int], Path] = {}
        self._events: deque[str] = deque()
        self._observer: object | None = None
        self._watched: set[Path] = set()
        self._handles: dict[Path, object] = {}  # watchdog's handle of each watch
        # Each watch's owner and cost in inotify watches (a recursive one: its directories)
        self._watch_costs: dict[Path, tuple[int, int, bool]] = {}
        self.watches_refused: dict[int, int] = {}  # by user: directories polled instead
        self._noisy: deque[Path] = deque()  # directories whose events came too fast
        self._quiet_until: dict[Path, float] = {}  # unwatched until then (too noisy)
        self.watches_noisy = 0  # directories unwatched for a while for their noise
        # Roots whose watches are not all in place (a directory not created yet).
        self._unsettled: set[Path] = set()
        self._absent: set[Path] = set()  # roots that do not exist yet
        self._next_watch_check = 0.0
        self._unwatchable: set[Path] = set()
        self._lock = threading.Lock()
        self._last: dict[tuple[int, int], Found] = {}
        self._complained: dict[str, str] = {}  # where -> the last error logged there
        self.errors = 0
        self.waiting: set[int] = set()  # the last observation's waiting pids (observe)
        STOPPING.clear()  # a daemon before this one in the same process stopped
        # Called (from the watcher's thread) on each change under a watched state
        # directory, with whether a file or directory appeared: an agent starting writes
        # its state, and the main loop may pass at once instead of at the next interval.
        self.on_change: Callable[[bool], None] | None = None

    def reconfigure(self, settings: SourceSettings) -> None:
        if settings.watch and not self.settings.watch:
            self._unsettled.update(root for _, root in self._states)
        self.settings = settings

    def observe(self, processes: list[AgentProcess]) -> tuple[dict[int, Found], set[int]]:
        """Facts for each process whose agent state could be read, and the pids of young
        processes whose state may still appear. The pids of processes whose agent's state
        directory is there and names no conversation of them (a TUI waiting for its first
        prompt, or one that closed its conversation as it quits) are left in
        :attr:`waiting`: they wait, and their CPU says nothing (an idle TUI redraws, and
        quitting takes work)."""
        PASS_BUDGET.refill()  # what every reader may read in this pass, together
        self._route_events()
        now = self._context.clock()
        if now >= self._next_watch_check:
            self._next_watch_check = now + WATCH_RECHECK_S
            self._unsettled.update(root for _, root in self._states)
            self._recount_watches()
        facts: dict[int, Found] = {}
        pending: set[int] = set()
        waiting: set[int] = set()
        self.waiting = waiting
        live = set()
        self._prepare(processes)
        for proc in processes:
            reader = self._readers.get(proc.platform)
            if reader is None:
                continue
            live.add(proc.key)
            try:
                found, young = self._facts_for(proc, reader)
            except Exception as exc:  # an agent's garbage must never stop the daemon
                self._error(f"reading {proc.platform} state for pid {proc.pid}", exc)
                # Keep what was known: a reading error is not the end of a conversation.
                found, young = self._last.get(proc.key), False
            if found is not None:
                facts[proc.pid] = found
                self._last[proc.key] = found
            elif young:
                pending.add(proc.pid)
            elif reader.waits_without_conversation and self._has_state(proc, reader):
                waiting.add(proc.pid)
        for key in self._roots.keys() - live:
            del self._roots[key]
        for key in self._unmade.keys() - live:
            del self._unmade[key]
        for key in self._last.keys() - live:
            del self._last[key]
        return facts, pending

    def _prepare(self, processes: list[AgentProcess]) -> None:
        """Hand each state directory its pass (the processes that use it, their trees, the
        horizon, the clock), once per pass; each tree is walked once a pass, whichever
        reader asks."""
        trees = Trees(self._processes)
        groups: dict[tuple[str, Path], list[AgentProcess]] = {}
        for proc in processes:
            reader = self._readers.get(proc.platform)
            if reader is None:
                continue
            try:
                root = self._root(proc, reader)
                if root is not None:
                    self._state(proc.platform, reader, root)
                    groups.setdefault((proc.platform, root), []).append(proc)
            except Exception as exc:
                self._error(f"finding {proc.platform} state for pid {proc.pid}", exc)
        for key, members in groups.items():
            try:
                state = self._states[key]
                if not self.settings.watch or (
                    self._unwatchable and any(d in self._unwatchable for d in state.watch_dirs())
                ):
                    state.poll()  # no change events from there: look at its files again
                state.prepare(Pass.of(members, self._processes, self._context.clock, trees))
                watched = tuple(state.watch_dirs())
                if self._watch_lists.get(key) != watched:
                    # The reader found directories to watch as it read (an editor's
                    # workspace in use): watched at the next pass, not a recheck later.
                    self._watch_lists[key] = watched
                    self._unsettled.add(key[1])
            except Exception as exc:
                self._error(f"reading {key[0]} state under {key[1]}", exc)

    def _error(self, where: str, exc: Exception) -> None:
        """Counted every time; logged (with its traceback) once per place and error, so
        that a file that breaks a reader cannot flood the log every pass."""
        self.errors += 1
        what = f"{type(exc).__name__}: {exc}"[:500]
        if self._complained.get(where) == what:
            return
        if len(self._complained) > 1000:
            self._complained.clear()
        self._complained[where] = what
        log.warning("%s failed (counted, logged once): %s", where, what, exc_info=exc)

    def _has_state(self, proc: AgentProcess, reader: ReaderSpec) -> bool:
        """Whether the agent's state directory exists (the agent has run there): what it
        does not name, it has not started."""
        root = self._roots.get(proc.key)
        return root is not None and root.is_dir()

    def _facts_for(self, proc: AgentProcess, reader: ReaderSpec) -> tuple[Found | None, bool]:
        """The process's conversations, and whether it is young enough to wait for one."""
        young = reader.writes_at_start and self._wall() - proc.start_time < PENDING_GRACE_S
        root = self._root(proc, reader)
        if root is None:
            return None, young
        state = self._state(proc.platform, reader, root)
        found = state.facts(proc) or None
        return found, found is None and young

    def stats(self) -> dict[str, int]:
        totals = ReadStats()
        for state in list(self._states.values()):  # a copy: the main loop may add one
            totals.lines += state.stats.lines
            totals.garbage += state.stats.garbage
            totals.refused += state.stats.refused
        return {
            "state_dirs": len(self._states),
            "watched_dirs": len(self._watched),
            "unwatchable_dirs": len(self._unwatchable),
            "lines_read": totals.lines,
            "garbage_lines": totals.garbage,
            "files_refused": totals.refused,
            "errors": self.errors,
        }

    def budgets(self) -> dict[str, Any]:
        """What users' files cost the daemon, against their budgets (status)."""
        return {
            "watches": sum(cost for _, cost, _ in self._watch_costs.values()),
            "watches_refused": sum(self.watches_refused.values()),
            "watches_noisy": self.watches_noisy,
            "databases_set_aside": sqlite_files.SET_ASIDE.reasons(),
            "copied_bytes": sqlite_files.COPIES.bytes_copied,
            "copies_refused": dict(sqlite_files.COPIES.refused),
            "passes_over_read_budget": PASS_BUDGET.exhausted,
        }

    def report(self, refused_claims: int) -> AgentStateReport:
        """The agents' state as status shows it (``refused_claims``: the tracker's count of
        conversations another user's files named)."""
        return AgentStateReport(
            **{**self.stats(), **self.budgets(), "refused_claims": refused_claims}
        )

    def interrupt(self) -> None:
        """The daemon stops (from a signal handler): a database query under way ends at
        its next step, whatever its budget left (SIGTERM is honoured within seconds)."""
        STOPPING.set()

    def close(self) -> None:
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(timeout=5)  # type: ignore[attr-defined]
            self._observer = None

    # -- where state lives --------------------------------------------------------------

    def _root(self, proc: AgentProcess, reader: ReaderSpec) -> Path | None:
        if proc.key not in self._roots:
            unmade = self._unmade.get(proc.key)
            if unmade is not None and not os.path.isdir(unmade):
                return unmade
            root = find_state_dir(proc, reader, self._processes)
            if root is not None and not root.is_dir():
                # Not there yet: trusted for now (the agent makes it as its user), checked
                # again once it is (it might be made by someone else: never read then).
                self._unmade[proc.key] = root
                return root
            self._unmade.pop(proc.key, None)
            self._roots[proc.key] = root
        return self._roots[proc.key]

    def _state(self, platform: str, reader: ReaderSpec, root: Path) -> AgentState:
        state = self._states.get((platform, root))
        if state is None:
            state = self._states[(platform, root)] = reader.factory(root, self._context)
            self._unsettled.add(root)
        if root in self._absent and os.path.isdir(root):  # one stat: created since
            self._absent.discard(root)
            self._unsettled.add(root)
        if self.settings.watch and root in self._unsettled:
            # Looked at once; again after an event under the root or a while (a directory
            # that does not exist yet), never every pass.
            self._unsettled.discard(root)
            self._ensure_watched(state)
        return state

    def prospect(self, homes: Iterable[tuple[int, Path]]) -> int:
        """Watch the state directories that already exist in these homes (uid, home), before
        any agent runs there: the first write of an agent starting wakes the main loop.
        Returns how many were found."""
        found = 0
        for uid, home in homes:
            for platform, reader in self._readers.items():
                root = home / reader.home_dir
                if (platform, root) in self._states:
                    found += 1
                    continue
                try:
                    info = root.lstat()
                except OSError:
                    continue
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
                    continue
                try:
                    self._state(platform, reader, root)
                    found += 1
                except Exception as exc:
                    self._error(f"watching {platform} state under {root}", exc)
        return found

    # -- watching -----------------------------------------------------------------------

    def _ensure_watched(self, state: AgentState) -> None:
        """Watch the state's directories; one that does not exist yet has its parent
        watched meanwhile."""
        for directory in state.watch_dirs():
            if directory in self._watched or directory in self._unwatchable:
                continue
            if directory.is_symlink():
                # Never watch (or read) through a link out of the agent's directory.
                self._unwatchable.add(directory)
                log.warning("not watching %s: it is a symbolic link", directory)
                continue
            # A reader may ask for a directory without its subdirectories (opencode's data
            # dir holds a git object store of hundreds of directories: inotify watches).
            flat: Callable[[], set[Path]] | None = getattr(state, "flat_dirs", None)
            target, recursive = directory, not (flat is not None and directory in flat())
            if not directory.is_dir():
                # Watch the parent until the directory exists; then watch it.
                target, recursive = state.root, False
                if not target.is_dir():
                    # Nothing to watch yet (an agent's first run creates it all): looked
                    # for again each pass, by one stat.
                    self._absent.add(target)
                    continue
                if target in self._watched:
                    continue
            uid = _owner(state.root)
            cost = _watch_cost(target, recursive, self._watch_room(uid) + 1)
            if cost > self._watch_room(uid):
                # One user's directories would take more of root's inotify watches (shared
                # by every root service) than a user may: poll them instead, counted.
                self._unwatchable.add(directory)
                self.watches_refused[uid] = self.watches_refused.get(uid, 0) + 1
                log.warning(
                    "not watching %s: user %s's directories would need %d+ inotify watches "
                    "(scan.watches_per_user: %d); its files are polled",
                    directory,
                    uid,
                    cost,
                    self.settings.watches_per_user,
                )
                continue
            try:
                self._schedule(target, recursive)
            except OSError as exc:  # e.g. the inotify watch limit
                self._unwatchable.add(directory)
                log.warning(
                    "cannot watch %s (%s); its changes are seen less promptly", directory, exc
                )
                continue
            self._watched.add(target)
            self._watch_costs[target] = (uid, cost, recursive)
            state.poll()  # files written before the watch existed

    def _watch_room(self, uid: int) -> int:
        used = sum(c for u, c, _ in self._watch_costs.values() if u == uid)
        return self.settings.watches_per_user - used

    def _recount_watches(self) -> None:
        """A recursively watched tree grows (each new directory is one more watch): a user
        over the budget has its largest tree unwatched, and polled."""
        for target, (uid, _, recursive) in list(self._watch_costs.items()):
            if recursive and target in self._watched:
                limit = self.settings.watches_per_user + 1
                self._watch_costs[target] = (uid, _watch_cost(target, True, limit), True)
        for uid in {u for u, _, _ in self._watch_costs.values()}:
            while self._watch_room(uid) < 0:
                mine = [(c, t) for t, (u, c, r) in self._watch_costs.items() if u == uid and r]
                if not mine:
                    break
                _, target = max(mine)
                del self._watch_costs[target]
                self._watched.discard(target)
                self._unwatchable.add(target)
                self.watches_refused[uid] = self.watches_refused.get(uid, 0) + 1
                with self._lock:
                    self._unschedule(target)
                log.warning(
                    "not watching %s any more: user %s's directories need more inotify "
                    "watches than scan.watches_per_user allows; its files are polled",
                    target,
                    uid,
                )

    def _schedule(self, directory: Path, recursive: bool) -> None:
        from watchdog import events as kinds
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        events = self._events
        manager = self
        rate = [0.0, 0]  # this second's start, and its events

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                now = time.monotonic()
                if now - rate[0] >= 1.0:
                    rate[0], rate[1] = now, 0
                rate[1] += 1
                if rate[1] == NOISY_EVENTS_PER_S:
                    manager._noisy.append(directory)  # the main loop unwatches it
                if rate[1] >= NOISY_EVENTS_PER_S:
                    return
                for path in (event.src_path, getattr(event, "dest_path", "")):
                    if path:
                        events.append(os.fsdecode(path))
                notify = manager.on_change
                if notify is not None:
                    notify(event.event_type in ("created", "moved"))

        # What changes a file (not opening or reading it: quintd's own reads too); the
        # kernel is asked for nothing else.
        changes = [
            kinds.FileCreatedEvent,
            kinds.FileDeletedEvent,
            kinds.FileModifiedEvent,
            kinds.FileMovedEvent,
            kinds.DirCreatedEvent,
            kinds.DirDeletedEvent,
            kinds.DirModifiedEvent,
            kinds.DirMovedEvent,
        ]

        with self._lock:
            if self._observer is None:
                observer = Observer()
                observer.daemon = True
                observer.start()
                self._observer = observer
            # A directory deleted and created again: its old watch is dead, and watchdog
            # would hand the same dead watch back for the same path. Drop it first.
            self._unschedule(directory)
            handle = self._observer.schedule(  # type: ignore[attr-defined]
                Handler(), str(directory), recursive=recursive, event_filter=changes
            )
            self._handles[directory] = handle

    def _quiet_noisy(self) -> None:
        """A directory whose events come faster than anyone's agent writes (a user
        creating and deleting files in a loop once cost the daemon 3 CPU-seconds in 10) is
        unwatched and polled for a while, counted; it is watched again after that."""
        now = time.monotonic()
        while self._noisy:
            directory = self._noisy.popleft()
            if directory not in self._watched:
                continue
            self._watched.discard(directory)
            self._watch_costs.pop(directory, None)
            with self._lock:
                self._unschedule(directory)
            self._unwatchable.add(directory)
            self._quiet_until[directory] = now + NOISY_BACKOFF_S
            self.watches_noisy += 1
            log.warning(
                "not watching %s for %d s: its files change faster than agents write (%d+ "
                "events a second); they are polled meanwhile",
                directory,
                NOISY_BACKOFF_S,
                NOISY_EVENTS_PER_S,
            )
        for directory, until in list(self._quiet_until.items()):
            if now >= until:
                del self._quiet_until[directory]
                self._unwatchable.discard(directory)
                self._unsettled.update(r for _, r in self._states)

    def _dead_watches(self) -> list[Path]:
        """Watched directories whose watch ended (watchdog stops a directory's emitter when
        the directory itself is deleted)."""
        with self._lock:
            observer = self._observer
            if observer is None:
                return []
            live = {
                Path(e.watch.path)
                for e in observer.emitters  # type: ignore[attr-defined]
                if e.is_alive()
            }
        return [w for w in self._watched if w in self._handles and w not in live]

    def _unschedule(self, directory: Path) -> None:
        handle = self._handles.pop(directory, None)
        if handle is not None and self._observer is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(handle)  # type: ignore[attr-defined]

    def _route_events(self) -> None:
        paths = set()
        while self._events:
            paths.add(Path(self._events.popleft()))
        if not paths:
            return
        self._quiet_noisy()
        for watched in self._dead_watches():
            # Its directory was removed (`rm -rf ~/.claude`; made again by the agent's next
            # start, perhaps under the same inode number): the kernel ended the watch. Watch
            # it again when it is there.
            self._watched.discard(watched)
            self._watch_costs.pop(watched, None)
            with self._lock:
                self._unschedule(watched)
            self._unsettled.update(r for _, r in self._states)
        for state in self._states.values():
            touched = False
            for path in paths:
                if path.is_relative_to(state.root):
                    state.changed(path)
                    touched = True
            if touched:
                self._unsettled.add(state.root)  # a directory it waits for may be there now


def _owner(path: Path) -> int:
    try:
        return path.lstat().st_uid
    except OSError:
        return -1


def _watch_cost(directory: Path, recursive: bool, limit: int) -> int:
    """The inotify watches a watch of ``directory`` takes: one, or one per directory of
    its tree (counted up to ``limit``; links are not followed, as watchdog does not)."""
    if not recursive:
        return 1
    count = 0
    for _current, dirs, _files in os.walk(directory, followlinks=False):
        count += 1
        if count >= limit:
            dirs[:] = []
            break
    return max(count, 1)


def find_state_dir(
    proc: AgentProcess, reader: ReaderSpec, processes: ProcessView | None = None
) -> Path | None:
    """The agent's state directory: from its environment, else its owner's home; only
    if it is a real directory owned by the process's user."""
    processes = processes or LiveProcesses()
    uid = processes.uid(proc.pid)
    if uid is None:
        return None
    env = processes.environ(proc.pid) or {}
    root: Path | None = None
    if reader.env_dir and env.get(reader.env_dir):
        root = Path(env[reader.env_dir])
    elif env.get("HOME"):
        root = Path(env["HOME"]) / reader.home_dir
    else:
        try:
            root = Path(pwd.getpwuid(uid).pw_dir) / reader.home_dir
        except KeyError:
            return None
    if not root.is_absolute():
        return None
    # Not there yet: trusted for now (the agent makes it as its user), checked again once
    # it is.
    return root if trusted_dir(root, uid, absent=True) else None
