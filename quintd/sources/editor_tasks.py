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

What is read, under ``User/globalStorage/<extension id>/tasks/<task id>/``:

- ``ui_messages.json`` (and ``api_conversation_history.json``): a task is live for an
  editor process when they were written since that process started (an editor opening
  with a long history has none live); their growth is work (``last_write``). Only the
  last 64 KiB of ``ui_messages.json`` is read, for its last message: ``partial`` or an
  ``api_req_started`` without ``cost`` or ``cancelReason`` (a request under way, as Roo's
  own resume logic reads it) is ``busy``; an ``ask`` waits for the user (``idle`` after a
  completion, else ``waiting``); anything else says nothing (``idle``: the files' growth
  alone tells work; the editor's CPU never does). A busy word unchanged for
  :data:`STALE_BUSY_S` is no longer believed (an extension host that died mid-request).
- ``task_metadata.json``: ``model_usage[-1].model_id`` is the model (Cline's; Roo records
  no model in a task's files).
- ``history_item.json`` (Roo, Kilo): ``parentTaskId``/``rootTaskId`` make a task a
  sub-conversation of its root (nested children are flattened onto the root: a session
  has one level of sub-agents); ``status`` ``completed`` ends a child, ``delegated``
  makes its parent wait.
- Names: neither extension lets the user title a task (``task`` is the first prompt,
  never sent), so no conversation has a name.

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
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass, owner_of
from quintd.sources.changes import listing, lstat_signature
from quintd.sources.files import (
    PASS_BUDGET,
    open_counted,
    parse_json,
    parse_object,
    read_json_file,
    read_whole,
    real_dir,
    text,
)
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import START_SLACK_S


@dataclass(frozen=True)
class Extension:
    ext_id: str  # its directory under globalStorage
    prefix: str  # of its native ids


CLINE = Extension("saoudrizwan.claude-dev", "cline")
ROO = Extension("rooveterinaryinc.roo-cline", "roo")
KILO = Extension("kilocode.kilo-code", "kilo")
EXTENSIONS = (CLINE, ROO, KILO)

UI_MESSAGES = "ui_messages.json"
API_HISTORY = "api_conversation_history.json"
HISTORY_ITEM = "history_item.json"
INDEX = "_index.json"  # Roo's cache of every history_item.json, rewritten 2 s after each
METADATA = "task_metadata.json"
TAIL_BYTES = 64 * 1024  # of ui_messages.json: its last message
MAX_METADATA_BYTES = 1024 * 1024  # task_metadata.json also lists the files in context
MAX_LIVE_TASKS = 256  # per extension: the newest live tasks kept
MAX_WATCHED_TASKS = 64  # task directories watched (the newest live ones)
MAX_GONE = 1024  # deleted tasks remembered to say so
STALE_BUSY_S = 600.0  # a busy last message unchanged this long is not believed
# A task id: Cline's is the ms epoch of its creation, Roo's a UUID v7 (its first 48 bits
# the ms epoch); ``_index.json`` and hidden entries are not tasks.
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_MS_ID = re.compile(r"^\d{13}$")
_UUID7 = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DONE_ASKS = frozenset({"completion_result", "resume_task", "resume_completed_task"})
_LAST_MESSAGE = b'{"ts":'  # every message is written with ``ts`` first

RELIST_INTERVAL_S = 5.0  # a history's rewrite lists the tasks again at most this often
MAX_PENDING = 64  # task directories created without a transcript yet, watched meanwhile

Signature = tuple[int, int, int] | None
ProcessKey = tuple[int, int]


@dataclass
class Task:
    ext: Extension
    task_id: str
    owner: int  # the uid owning its transcript
    created: float  # epoch seconds
    updated: float  # epoch seconds: its transcript last written
    transcript: tuple[Signature, Signature]  # ui_messages, api history
    last_write: float | None = None  # monotonic: when it last grew
    said: Status | None = None  # what its last message says
    said_at: float = 0.0  # monotonic: when that was read
    model: str | None = None
    metadata: Signature = None  # task_metadata.json, as last read
    item: Signature = None  # history_item.json, as last read
    parent: str | None = None  # its root task (Roo, Kilo)
    status: str | None = None  # Roo's history status: active, completed, delegated

    @property
    def native_id(self) -> str:
        return f"{self.ext.prefix}:{self.task_id}"


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
            if _TASK_ID.match(parts[0]):
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
            entries = listing(extension.tasks_dir, _TASK_ID, newer_than=horizon, kind=stat.S_ISDIR)
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
            if known is not None and not _rewriting(directory, UI_MESSAGES):
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
        transcript = (_signature(ui), _signature(api))
        task = known or Task(
            ext=extension.ext,
            task_id=task_id,
            owner=first.st_uid,
            created=_created(task_id, updated),
            updated=updated,
            transcript=transcript,
            # Found by the first look: history until it grows. Found later: new work.
            last_write=self._clock() if extension.listed_once and not forced else None,
        )
        task.owner, task.updated = first.st_uid, updated
        if known is not None and transcript != known.transcript:
            task.last_write = self._clock()
        if known is None or transcript[0] != known.transcript[0]:
            task.said, task.said_at = self._last_word(directory / UI_MESSAGES), self._clock()
        task.transcript = transcript
        if not self._read_item(task, directory):
            if known is not None:
                self._over(extension, known)
            return
        if task.parent is not None and task.parent not in extension.tasks:
            extension.wanted.add(task.parent)
        self._read_metadata(task, directory)
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

    def _last_word(self, path: Path) -> Status | None:
        """What the last message of ``ui_messages.json`` says (from its last
        :data:`TAIL_BYTES`)."""
        opened = open_counted(self.root, path, self.stats)
        if opened is None:
            return None
        fd, info = opened
        try:
            want = PASS_BUDGET.take(min(TAIL_BYTES, info.st_size))
            tail = os.pread(fd, want, info.st_size - want) if want > 0 else b""
        finally:
            os.close(fd)
        body = tail.rstrip()
        start = body.rfind(_LAST_MESSAGE)
        if not body.endswith(b"]") or start < 0:
            return None  # not a whole array's end, or a last message longer than the tail
        message = parse_object(body[start:-1])
        if message is None:
            self.stats.garbage += 1
            return None
        self.stats.lines += 1
        return _says(message)

    def _read_item(self, task: Task, directory: Path) -> bool:
        """Roo's and Kilo's ``history_item.json``: the root task and the status. False
        when it is gone (removed from history) after it was there."""
        path = directory / HISTORY_ITEM
        signature = lstat_signature(path)
        if signature is None:
            return task.item is None or _rewriting(directory, HISTORY_ITEM)
        if signature == task.item:
            return True
        found = read_json_file(path, self.root, self.stats)
        if found is None:
            return True  # refused or garbage (counted): what was known stands
        task.item = signature
        parent = found.data.get("rootTaskId") or found.data.get("parentTaskId")
        task.parent = parent if isinstance(parent, str) and _TASK_ID.match(parent) else None
        if task.parent == task.task_id:
            task.parent = None
        status = found.data.get("status")
        task.status = status if status in ("active", "completed", "delegated") else None
        return True

    def _read_metadata(self, task: Task, directory: Path) -> None:
        """Cline's ``task_metadata.json``: the model of the last request."""
        path = directory / METADATA
        signature = lstat_signature(path)
        if signature is None or signature == task.metadata:
            return
        task.metadata = signature
        whole = read_whole(path, self.root, self.stats, MAX_METADATA_BYTES)
        if whole is None or whole.raw is None:
            return
        data = parse_object(whole.raw)
        if data is None:
            if whole.raw.strip():
                self.stats.garbage += 1
            return
        usage = data.get("model_usage")
        if isinstance(usage, list) and usage and isinstance(usage[-1], dict):
            task.model = text(usage[-1].get("model_id")) or task.model

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
            families.setdefault(_root(task, tasks), []).append(task)
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
            self._facts.setdefault(proc.key, []).append(_conversation(root, members, clock))
        live = now.keys
        for native_id, (key, owner) in list(self._gone.items()):
            if key not in live:
                del self._gone[native_id]
            elif native_id not in self._placed:
                over = ConversationFacts(native_id=native_id, owner_uid=owner, over=True)
                self._facts.setdefault(key, []).insert(0, over)


def _conversation(root: Task, members: list[Task], clock: float) -> ConversationFacts:
    children = tuple(
        SubagentFacts(
            agent_id=child.task_id,
            done=child.status == "completed",
            last_write=child.last_write,
            status=_status(child, clock),
            model=child.model,
        )
        for child in sorted(members, key=lambda t: (t.created, t.task_id))
        if child is not root
    )
    return ConversationFacts(
        native_id=root.native_id,
        # Delegated: it waits for its child (whose work is its work too).
        status="waiting" if root.status == "delegated" else _status(root, clock),
        model=root.model,
        last_write=root.last_write,
        subagents=children,
        owner_uid=root.owner,
    )


def _status(task: Task, clock: float) -> Status:
    """Its last message's word (a busy word not believed once stale); else idle: its
    files' growth alone tells work."""
    if task.said == "busy" and clock - task.said_at >= STALE_BUSY_S:
        return "idle"
    return task.said or "idle"


def _says(message: dict[str, Any]) -> Status | None:
    if message.get("partial") is True:
        return "busy"  # streaming
    if message.get("type") == "ask":
        return "idle" if message.get("ask") in _DONE_ASKS else "waiting"
    if message.get("say") == "api_req_started":
        info = parse_json(message.get("text"), TAIL_BYTES)
        if isinstance(info, dict) and "cost" not in info and "cancelReason" not in info:
            return "busy"  # a request under way
    return None


def _root(task: Task, tasks: dict[tuple[Extension, str], Task]) -> tuple[Extension, str]:
    """The topmost live ancestor of a task (itself when it has none, or when its parents
    make a cycle: files someone wrote, not a delegation)."""
    start, seen = task, {task.task_id}
    while task.parent is not None and (task.ext, task.parent) in tasks:
        if task.parent in seen:
            return (start.ext, start.task_id)
        seen.add(task.parent)
        task = tasks[(task.ext, task.parent)]
    return (task.ext, task.task_id)


def _signature(info: os.stat_result | None) -> Signature:
    return None if info is None else (info.st_ino, info.st_size, info.st_mtime_ns)


def _rewriting(directory: Path, name: str) -> bool:
    """Roo's ``safeWriteJson`` renames the file away before renaming its new text in: a
    ``.<name>.bak_...`` or ``.<name>.new_...`` beside it means it is being rewritten."""
    pattern = re.compile(re.escape(f".{name}.") + r"(?:bak|new)_")
    return bool(listing(directory, pattern, limit=1))


def _created(task_id: str, fallback: float) -> float:
    """When a task was created: from its id (Cline's ms epoch, Roo's UUID v7), else when
    it was first seen written."""
    if _MS_ID.match(task_id):
        return int(task_id) / 1000
    uuid7 = _UUID7.match(task_id)
    if uuid7 is not None:
        return int(uuid7.group(1) + uuid7.group(2), 16) / 1000
    return fallback
