"""VS Code's chat (GitHub Copilot Chat and the other agents in its chat view): a part of the
editor's ``User`` directory's reader (``editors.py``).

From VS Code's own source, microsoft/vscode ``src/vs/workbench/contrib/chat/common/model/``:
``chatSessionStore.ts`` at ``047238f9fe1b7661362b3f27cfbddd503339cb1b``,
``chatSessionOperationLog.ts`` at ``03d43368c3ce601d54d8eceb01b11cf9758b9e4a``,
``objectMutationLog.ts`` at ``047238f9fe1b7661362b3f27cfbddd503339cb1b``,
``chatService/chatService.ts`` at ``00817b7f8e1cfff7ee8ff8ac8d23b50e4c131ac5``
(``ResponseModelState``) and ``chatService/chatServiceImpl.ts`` at
``00738c8d9c54646044b1f7d4debeb14163086cdb`` (``generateInitialChatTitleIfNeeded``).
**Unverified against a running VS Code**: no editor runs here.

- ``User/workspaceStorage/<workspace>/chatSessions/<sessionId>.jsonl`` (VS Code 1.109 and
  later, unless ``chat.useLogSessionStorage`` is false): an append-only log of JSON lines,
  replayed by ``copilot_chat_log.py`` (rewritten whole when it is compacted, after 1024
  entries). Before 1.109: ``<sessionId>.json``, the whole session rewritten. A window
  without a folder keeps its sessions in ``User/globalStorage/emptyWindowChatSessions/``.
- when it is written: at every flush of VS Code's storage (``onWillSaveState``: about once
  a minute while the window is idle, ``AbstractStorageService.DEFAULT_FLUSH_INTERVAL``),
  when a session is closed or renamed, and at shutdown; so a turn shows here up to a
  minute late. Deleting a session deletes its file.
- which process: the editor's main process. A session counts once its last request was
  made since that process started: a window opened on a long history reports only what is
  used now. Workspaces are looked into only when their directory changed since then (VS
  Code writes the workspace's ``state.vscdb`` within a minute of opening it).
- busy while the last request's answer is Pending (or requests are queued), waiting while
  it NeedsInput (a tool's confirmation), idle otherwise; the file deleted: it ends.
- model: the last request's ``modelId``. Name: none. ``customTitle`` is the title the chat
  agent generates from the first prompt (``generateInitialChatTitleIfNeeded`` in
  ``chatServiceImpl.ts`` calls ``setCustomTitle``) or the user's rename, with nothing to
  tell them apart. The index in the workspace's ``state.vscdb``
  (``chat.ChatSessionStore.index``) is not read: it holds the same title, and its
  ``lastResponseState`` never says Pending (``getSessionMetadataSync`` stores Cancelled).
- sub-agents: none read.

Reading: the workspace directories are listed (by ``lstat``) every :data:`RELIST_S` and
when one is added; a used workspace's ``chatSessions`` directory is watched (flat) and
listed when it changes; a session file is read when it changes, a log incrementally from
its last offset (unless the byte before that offset is no longer the end of a line: a
compaction rewrote it).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import Pass
from quintd.sources.changes import listing, lstat_signature
from quintd.sources.copilot_chat_log import ChatSession
from quintd.sources.files import JsonlTail, open_counted, parse_object, read_whole
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import START_SLACK_S

RELIST_S = 10.0
MAX_SESSIONS_PER_DIR = 400  # VS Code keeps at most 400 (maxPersistedSessions)
MAX_WORKSPACES = 200  # workspaces used at once, looked into
MAX_FLAT_BYTES = 8 * 1024 * 1024  # a pre-1.109 session file is read whole up to this
# A deleted session is reported closed this long (``over``): the editor's process, left
# with none, is then a session of its own again.
CLOSED_S = 60.0
_SESSION_FILE = re.compile(r"^([0-9A-Za-z][0-9A-Za-z_-]{0,127})\.(jsonl|json)$")
_WORKSPACE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,127}$")


@dataclass
class _Chat:
    """One session file and what was read of it."""

    path: Path
    native_id: str
    session: ChatSession = field(default_factory=ChatSession)
    tail: JsonlTail | None = None  # a log (.jsonl); None: a flat file (.json)
    flat_signature: tuple[int, int, int] | None = None
    owner: int | None = None
    read_once: bool = False
    last_write: float | None = None  # monotonic: a request came or changed, after the first read


class CopilotChat(Reader):
    platform = "vscode-copilot"

    def __init__(self, user_dir: Path, context: ReaderContext) -> None:
        super().__init__(user_dir, context)
        self._workspaces = user_dir / "workspaceStorage"
        self._empty_window = user_dir / "globalStorage" / "emptyWindowChatSessions"
        self._dirs: set[Path] = set()  # the chatSessions directories looked into
        self._targets: list[Path] = []  # what is watched of them
        self._relist = True
        self._listed_at = float("-inf")
        self._dirty_dirs: set[Path] = set()
        self._chats: dict[str, _Chat] = {}  # by session id
        self._dirty: set[str] = set()
        self._closed: dict[str, float] = {}  # deleted: when (monotonic)
        self._now = 0.0

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self._workspaces, self._empty_window, *self._targets]

    def flat_dirs(self) -> set[Path]:
        return set(self.watch_dirs())  # each workspace holds every extension's storage too

    def changed(self, path: Path) -> None:
        if path.parent == self._workspaces:
            self._relist = True  # a workspace added (or gone)
        elif path in self._dirs or path == self._empty_window:
            self._dirty_dirs.add(path)  # made, or changed as a whole
            self._retarget()
        elif path.parent in self._dirs or path.parent == self._empty_window:
            self._dirty_dirs.add(path.parent)
            match = _SESSION_FILE.match(path.name)
            if match and match.group(1) in self._chats:
                self._dirty.add(match.group(1))

    def poll(self) -> None:
        self._relist = True
        self._dirty_dirs.update(self._dirs)
        self._dirty.update(self._chats)

    def has_registry_dir(self) -> bool:
        return self._workspaces.is_dir() or self._empty_window.is_dir()

    def begin(self, now: Pass) -> None:
        self._now = now.now
        self._closed = {k: t for k, t in self._closed.items() if now.now - t < CLOSED_S}
        if not now.processes:
            return
        if self._relist or now.now - self._listed_at >= RELIST_S:
            self._list_workspaces(now)
        dirty_dirs, self._dirty_dirs = self._dirty_dirs, set()
        for directory in sorted(dirty_dirs & self._dirs):
            self._list_sessions(directory, now.horizon)
        dirty, self._dirty = self._dirty, set()
        for native_id in sorted(dirty):
            chat = self._chats.get(native_id)
            if chat is not None:
                self._read(chat, now)

    def facts(self, proc: AgentProcess) -> list[ConversationFacts] | None:
        since = proc.start_time - START_SLACK_S
        used = []
        for chat in self._chats.values():
            last = chat.session.last
            if last is not None and (last.timestamp or 0.0) >= since:
                used.append(chat)
        used.sort(key=lambda c: (c.session.created or 0.0, c.native_id))
        closed = [ConversationFacts(native_id=k, over=True) for k in self._closed]
        return [
            *closed,
            *(
                ConversationFacts(
                    native_id=chat.native_id,
                    status=chat.session.status,
                    model=chat.session.last.model if chat.session.last else None,
                    last_write=chat.last_write,
                    owner_uid=chat.owner,
                )
                for chat in used
            ),
        ] or None

    # -- where the sessions are -------------------------------------------------------------

    def _list_workspaces(self, now: Pass) -> None:
        """The chatSessions directories of the workspaces used since the horizon (their
        directory changed: VS Code writes each open workspace's state.vscdb beside it)."""
        self._relist, self._listed_at = False, now.now
        used = listing(self._workspaces, _WORKSPACE, newer_than=now.horizon, kind=stat.S_ISDIR)
        used.sort(key=lambda entry: -(entry[1].st_mtime if entry[1] else 0.0))
        dirs = {self._workspaces / name / "chatSessions" for name, _ in used[:MAX_WORKSPACES]}
        dirs.add(self._empty_window)
        for directory in dirs - self._dirs:
            self._dirty_dirs.add(directory)
        self._dirs = dirs
        self._retarget()
        for native_id, chat in list(self._chats.items()):
            if chat.path.parent not in dirs:
                del self._chats[native_id]

    def _retarget(self) -> None:
        """A used workspace without chat sessions yet has its own directory watched, to
        see the first."""
        dirs = self._dirs - {self._empty_window}
        self._targets = sorted({d if d.is_dir() else d.parent for d in dirs})

    def _list_sessions(self, directory: Path, horizon: float) -> None:
        files = listing(
            directory,
            _SESSION_FILE,
            newer_than=horizon,
            kind=stat.S_ISREG,
            limit=MAX_SESSIONS_PER_DIR * 2,
        )
        present: dict[str, Path] = {}
        for name, _ in files:
            match = _SESSION_FILE.match(name)
            assert match is not None
            native_id, suffix = match.groups()
            if suffix == "jsonl" or native_id not in present:  # the log wins over a flat file
                present[native_id] = directory / name
        for native_id, chat in list(self._chats.items()):
            if chat.path.parent == directory and present.get(native_id) != chat.path:
                self._forget(chat, deleted=native_id not in present)
        for native_id, path in present.items():
            if native_id not in self._chats:
                self._chats[native_id] = _Chat(path, native_id)
                self._dirty.add(native_id)

    # -- reading a session ------------------------------------------------------------------

    def _read(self, chat: _Chat, now: Pass) -> None:
        if lstat_signature(chat.path) is None:
            self._forget(chat, deleted=True)
            return
        before = chat.session.signature()
        try:
            more = self._read_log(chat) if chat.path.suffix == ".jsonl" else self._read_flat(chat)
        except (ValueError, TypeError):
            self.stats.garbage += 1
            more = False
        if more:
            self._dirty.add(chat.native_id)  # the rest next pass (the read budget)
        if chat.session.session_id not in (None, chat.native_id):
            self.stats.garbage += 1  # a session under another session's name
            chat.session = ChatSession()
        if chat.read_once and chat.session.signature() != before:
            chat.last_write = now.now
        chat.read_once = chat.read_once or not more

    def _forget(self, chat: _Chat, deleted: bool) -> None:
        """A session no longer read: deleted (it ends, if it was a conversation), or its
        log replaced its flat file (read again as the log)."""
        del self._chats[chat.native_id]
        if deleted and chat.session.requests:
            self._closed[chat.native_id] = self._now

    def _read_log(self, chat: _Chat) -> bool:
        if chat.tail is None or self._rewritten(chat.tail):
            # New, or rewritten whole (a compaction writes the session again as its first
            # line): read it from the start.
            chat.tail = JsonlTail(chat.path, self.root, stats=self.stats)
            chat.session = ChatSession()
        records, more = chat.tail.read_new()
        chat.owner = chat.tail.owner
        for record in records:
            try:
                chat.session.apply(record)
            except (ValueError, TypeError):
                self.stats.garbage += 1
        return more

    def _read_flat(self, chat: _Chat) -> bool:
        whole = read_whole(
            chat.path, self.root, self.stats, MAX_FLAT_BYTES, unless=chat.flat_signature
        )
        if whole is None or whole.raw is None:
            return False
        chat.flat_signature, chat.owner = whole.signature, whole.info.st_uid
        data = parse_object(whole.raw)
        if data is None:
            self.stats.garbage += 1
            return False
        session = ChatSession()
        session.load(data)
        chat.session = session
        return False

    def _rewritten(self, tail: JsonlTail) -> bool:
        """Whether the log was written again from its start since it was read: the last
        line read no longer ends where it did (a shorter file the tail notices itself)."""
        if tail.offset == 0 or tail.partial or tail.skipping:
            return False  # nothing read yet, or in the middle of a line
        opened = open_counted(self.root, tail.path, self.stats)
        if opened is None:
            return False
        fd, _info = opened
        try:
            return os.pread(fd, 1, tail.offset - 1) not in (b"\n", b"")
        finally:
            os.close(fd)
