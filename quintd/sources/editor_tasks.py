"""The conversations ("tasks") of the Cline, Roo Code and Kilo Code extensions inside an
editor, read from the editor's ``User`` directory: one part of an editor's reader (the
editor's process is the process of every conversation; the composite that wires this part
into the VS Code, Cursor and Windsurf readers is not here).

Not verified against a running editor: the layout and the write patterns come from each
project's own storage code,

- Cline 3.x (``saoudrizwan.claude-dev``): cline/cline at
  9ee618111d58630fea30b27439216448225458e0 (the last commit before the extension moved to
  ``apps/vscode`` and to the 4.x session database): ``src/core/storage/disk.ts``
  (``atomicWriteFile``: ``<file>.tmp.<ms>.<random>.json`` renamed over the file;
  ``task_metadata.json`` written in place), ``src/core/task/message-state.ts``,
  ``src/shared/ExtensionMessage.ts`` (``ClineMessage``),
  ``src/core/context/context-tracking/ContextTrackerTypes.ts`` (``model_usage``),
  ``src/core/controller/task/deleteTasksWithIds.ts`` (a deleted task's files are removed);
- Roo Code (``rooveterinaryinc.roo-cline``): RooCodeInc/Roo-Code at
  cb836567180a3ff1da6d082f3178b90c3bd22a70: ``src/core/task-persistence/TaskHistoryStore.ts``
  (``tasks/<id>/history_item.json``, the debounced ``tasks/_index.json`` cache),
  ``src/utils/safeWriteJson.ts`` (``.<file>.new_<ms>_<random>.tmp``, the old file renamed
  to ``.<file>.bak_...tmp`` and the new one renamed in: for a moment the file is absent),
  ``packages/types/src/history.ts`` (``status``, ``parentTaskId``, ``rootTaskId``,
  ``childIds``), ``src/core/webview/ClineProvider.ts`` (delegation; ``deleteTaskWithId``
  removes the task's directory and its children's);
- Kilo Code 4.x (``kilocode.kilo-code``): the Roo layout (Kilo-Org/kilocode
  ``packages/types/src/history.ts`` at 0fc86cec2299b333cb21da87b649003b19319ecc). Kilo's
  newer extension (sessions in ``$XDG_DATA_HOME/kilo/kilo.db``) is not read here.

What each file of a task's directory (``User/globalStorage/<extension id>/tasks/<task
id>/``) says, and how, is in ``editor_task_files.py``.

A task whose transcript is gone (Cline's delete removes its files; Roo's its directory), or
whose ``history_item.json`` is gone (Roo: removed from history), is over: reported once
with ``over`` so that its session ends while the editor goes on. ``state/taskHistory.json``
(Cline) and ``tasks/_index.json`` (Roo) are caches of the per-task files: not read.

Native ids are ``<cline|roo|kilo>:<task id>``. Watches: each extension's ``tasks``
directory without its subdirectories (a long history is thousands of them), and the live
tasks' directories (at most :data:`MAX_WATCHED_TASKS`, the newest); the rest are looked at
again each pass by a stat."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import Pass, owner_of
from quintd.sources.changes import listing, lstat_signature
from quintd.sources.editor_task_files import (
    API_HISTORY,
    TASK_ID,
    UI_MESSAGES,
    Extension,
    Signature,
    Task,
    conversation,
    created,
    family_root,
    last_word,
    read_item,
    read_metadata,
    rewriting,
    signature,
)
from quintd.sources.files import open_counted, real_dir
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import START_SLACK_S

CLINE = Extension("saoudrizwan.claude-dev", "cline")
ROO = Extension("rooveterinaryinc.roo-cline", "roo")
KILO = Extension("kilocode.kilo-code", "kilo")
EXTENSIONS = (CLINE, ROO, KILO)

INDEX = "_index.json"  # Roo's cache of every history_item.json, rewritten 2 s after each
MAX_LIVE_TASKS = 256  # per extension: the newest live tasks kept
MAX_WATCHED_TASKS = 64  # task directories watched (the newest live ones)
MAX_GONE = 1024  # deleted tasks remembered to say so
RELIST_INTERVAL_S = 5.0  # a history's rewrite lists the tasks again at most this often
MAX_PENDING = 64  # task directories created without a transcript yet, watched meanwhile

ProcessKey = tuple[int, int]


@dataclass
class _Extension:
    ext: Extension
    tasks_dir: Path
    state_dir: Path  # Cline's state/taskHistory.json: rewritten at every save of a task
    listed_as: Signature = None  # the tasks directory's signature at its last listing
    listed_once: bool = False
    listed_at: float = 0.0  # monotonic
    # A history was rewritten (Cline's taskHistory.json, Roo's tasks/_index.json): a task
    # may have been resumed inside a directory that is not watched.
    relist_due: bool = False
    dirty: set[str] = field(default_factory=set)  # task ids to look at
    wanted: set[str] = field(default_factory=set)  # parents to read whatever their age
    pending: dict[str, None] = field(default_factory=dict)  # created, no transcript yet
    tasks: dict[str, Task] = field(default_factory=dict)  # the live ones


class ExtensionTasks(Reader):
    """The extensions' tasks under one editor ``User`` directory."""

    def __init__(self, user_dir: Path, context: ReaderContext) -> None:
        super().__init__(user_dir, context)
        self._extensions = [
            _Extension(
                ext,
                user_dir / "globalStorage" / ext.ext_id / "tasks",
                user_dir / "globalStorage" / ext.ext_id / "state",
            )
            for ext in EXTENSIONS
        ]
        self._rescan = True  # look at every live task again (first pass, poll)
        self._horizon: float | None = None
        self._placed: dict[str, ProcessKey] = {}  # root task -> the process it ran in
        # Deleted tasks, said to be over to the process that ran them while it runs.
        self._gone: dict[str, tuple[ProcessKey, int]] = {}
        self._deleted: dict[str, None] = {}  # deleted tasks (their leftovers are no task)
        self._facts: dict[ProcessKey, list[ConversationFacts]] = {}

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        dirs = [d for e in self._extensions for d in (e.tasks_dir, e.state_dir)]
        newest = sorted(
            (
                (t.updated, e.tasks_dir / t.task_id)
                for e in self._extensions
                for t in e.tasks.values()
            ),
            reverse=True,
        )
        dirs += [d for _, d in newest[:MAX_WATCHED_TASKS]]
        dirs += [e.tasks_dir / p for e in self._extensions for p in e.pending]
        return dirs

    def flat_dirs(self) -> set[Path]:
        return set(self.watch_dirs())

    def has_registry_dir(self) -> bool:
        return any(e.tasks_dir.is_dir() for e in self._extensions)

    def changed(self, path: Path) -> None:
        for extension in self._extensions:
            if path.parent == extension.state_dir or path == extension.tasks_dir / INDEX:
                extension.relist_due = True
            if not path.is_relative_to(extension.tasks_dir) or path == extension.tasks_dir:
                continue
            parts = path.relative_to(extension.tasks_dir).parts
            if TASK_ID.match(parts[0]):
                extension.dirty.add(parts[0])
                if len(parts) == 1 and parts[0] not in extension.tasks:
                    # A task directory appeared: watched at once, before its first write.
                    extension.pending[parts[0]] = None
                    while len(extension.pending) > MAX_PENDING:
                        del extension.pending[next(iter(extension.pending))]

    def poll(self) -> None:
        self._rescan = True

    def begin(self, now: Pass) -> None:
        if not now.processes:
            return
        rescan, self._rescan = self._rescan, False
        relist = self._horizon is None or now.horizon < self._horizon
        self._horizon = now.horizon
        watched = set(self.watch_dirs())
        for extension in self._extensions:
            self._scan(extension, now.horizon, rescan, relist, watched)
        self._bind(now)

    def facts(self, proc: AgentProcess) -> list[ConversationFacts]:
        return self._facts.get(proc.key, [])

    # -- reading --------------------------------------------------------------------------

    def _scan(
        self, extension: _Extension, horizon: float, rescan: bool, relist: bool, watched: set[Path]
    ) -> None:
        """Look at the tasks that may have changed: those events named; every live or
        pending one after a poll, and those not watched; every one written since the
        horizon when the tasks directory changed (a task made or deleted) or the horizon
        went back (an older process)."""
        listed = lstat_signature(extension.tasks_dir)
        clock = self._clock()
        due = extension.relist_due and clock - extension.listed_at >= RELIST_INTERVAL_S
        if relist or rescan or due or listed != extension.listed_as:
            # One stat an entry: for a history rewritten at every message, at most once
            # in RELIST_INTERVAL_S.
            extension.listed_as, extension.listed_at, extension.relist_due = listed, clock, False
            entries = listing(extension.tasks_dir, TASK_ID, newer_than=horizon, kind=stat.S_ISDIR)
            extension.dirty.update(name for name, _ in entries)
            extension.dirty.update(extension.tasks)  # a deleted one is listed no more
        for task_id in (*extension.tasks, *extension.pending):
            if rescan or extension.tasks_dir / task_id not in watched:
                extension.dirty.add(task_id)
        forced: set[str] = set()
        for _ in range(2):  # the second round: the parents of children just found
            dirty, extension.dirty = extension.dirty | forced, set()
            for task_id in sorted(dirty):
                self._look(extension, task_id, horizon, task_id in forced)
            forced, extension.wanted = extension.wanted, set()
        extension.listed_once = True
        if len(extension.tasks) > MAX_LIVE_TASKS:
            newest = sorted(extension.tasks.values(), key=lambda t: t.updated)
            extension.tasks = {t.task_id: t for t in newest[-MAX_LIVE_TASKS:]}

    def _look(self, extension: _Extension, task_id: str, horizon: float, forced: bool) -> None:
        """Read a task again (``forced``: a live child's parent, whatever its age)."""
        directory = extension.tasks_dir / task_id
        known = extension.tasks.get(task_id)
        ui = self._stat(directory / UI_MESSAGES)
        api = self._stat(directory / API_HISTORY)
        first = ui or api
        if first is None:
            if known is not None and not rewriting(directory, UI_MESSAGES):
                self._over(extension, known)
            elif known is None and not real_dir(directory):
                extension.pending.pop(task_id, None)
            return
        extension.pending.pop(task_id, None)
        updated = max(i.st_mtime for i in (ui, api) if i is not None)
        if known is None and (
            (updated < horizon and not forced)
            or f"{extension.ext.prefix}:{task_id}" in self._deleted
        ):
            return  # history (written before any of these processes started), or deleted
        transcript = (signature(ui), signature(api))
        task = known or Task(
            ext=extension.ext,
            task_id=task_id,
            owner=first.st_uid,
            created=created(task_id, updated),
            updated=updated,
            transcript=transcript,
            # Found by the first look: history until it grows. Found later: new work.
            last_write=self._clock() if extension.listed_once and not forced else None,
        )
        task.owner, task.updated = first.st_uid, updated
        if known is not None and transcript != known.transcript:
            task.last_write = self._clock()
        if known is None or transcript[0] != known.transcript[0]:
            task.said, task.said_at = (
                last_word(directory / UI_MESSAGES, self.root, self.stats),
                self._clock(),
            )
        task.transcript = transcript
        if not read_item(task, directory, self.root, self.stats):
            if known is not None:
                self._over(extension, known)
            return
        if task.parent is not None and task.parent not in extension.tasks:
            extension.wanted.add(task.parent)
        read_metadata(task, directory, self.root, self.stats)
        extension.tasks[task_id] = task

    def _stat(self, path: Path) -> os.stat_result | None:
        """A regular file's metadata, reached without following a link (a refusal is
        counted)."""
        opened = open_counted(self.root, path, self.stats)
        if opened is None:
            return None
        fd, info = opened
        os.close(fd)
        return info

    def _over(self, extension: _Extension, task: Task) -> None:
        del extension.tasks[task.task_id]
        self._deleted[task.native_id] = None
        while len(self._deleted) > MAX_GONE:
            del self._deleted[next(iter(self._deleted))]
        key = self._placed.pop(task.native_id, None)
        if key is not None:
            self._gone[task.native_id] = (key, task.owner)
            while len(self._gone) > MAX_GONE:
                del self._gone[next(iter(self._gone))]

    # -- binding --------------------------------------------------------------------------

    def _bind(self, now: Pass) -> None:
        """Each live root task (with its sub-tasks) to the editor process that ran it: of
        its owner's processes running when it was last written, the last started before
        it was created; and only if it was written since that process started."""
        tasks = {(t.ext, t.task_id): t for e in self._extensions for t in e.tasks.values()}
        families: dict[tuple[Extension, str], list[Task]] = {}
        for task in tasks.values():
            families.setdefault(family_root(task, tasks), []).append(task)
        self._facts = {}
        self._placed = {}
        clock = self._clock()
        for root_key, members in sorted(
            families.items(), key=lambda item: max(t.updated for t in item[1])
        ):
            root = tasks[root_key]
            if root.parent is not None and f"{root.ext.prefix}:{root.parent}" in self._deleted:
                continue  # a sub-task of a deleted task: gone with it
            updated = max(t.updated for t in members)
            mine = [p for p in now.processes if p.uid in (None, root.owner)]
            proc = owner_of(root.created, updated, mine)
            if proc is None or updated < proc.start_time - START_SLACK_S:
                continue
            self._placed[root.native_id] = proc.key
            self._facts.setdefault(proc.key, []).append(conversation(root, members, clock))
        live = now.keys
        for native_id, (key, owner) in list(self._gone.items()):
            if key not in live:
                del self._gone[native_id]
            elif native_id not in self._placed:
                over = ConversationFacts(native_id=native_id, owner_uid=owner, over=True)
                self._facts.setdefault(key, []).insert(0, over)
