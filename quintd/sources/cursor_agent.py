"""Cursor's CLI agent (``cursor-agent`` / ``agent``; closed source): one directory per chat,
``~/.cursor/chats/<md5 of the cwd>/<chat id>/``. Built from third-party readers and writers
tested against real cursor-agent builds, as no Cursor source is public:
``inference-sh/agentprotocol`` ``transcript/sqlite/cursor.go`` and
``transcript/cursor/cursor.go`` at ``33ea7b316c5a1119f9aca414b48c4852bf33e2ce`` with their
cursor-written test files (``testdata/cursor/.cursor/chats/e87a7c25.../meta.json`` and
``agent-transcripts/287974f9-....jsonl`` at ``2cc7eef26588429ce1195fcce49e515750909e2e``),
``skillsynchq/txcript`` ``docs/formats/cursor.md`` at
``6ce1fab0e7df8cd580229c80bdcb694d43a2edf3`` (cursor-agent 2026.06.26), and
``kenn-io/agentsview`` ``internal/parser/cursor_provider.go`` at
``538600744d1b87614d3746d36a0966c1f2ac1cad``. **Unverified against a real run** (the CLI is
installed from cursor.com, unreachable here).

Files under ``~/.cursor`` (no environment override is known):
- ``chats/<md5(cwd)>/<id>/store.db``: SQLite, ``meta(key, value)`` and ``blobs(id, data)``.
  The ``meta`` row ``"0"`` is JSON (hex-encoded, or plain in some versions): ``agentId``,
  ``name`` (the title), ``createdAt`` (ms), ``lastUsedModel``, ``workspacePath``, ...
  ``store.db-wal`` exists while the CLI has it open.
- ``chats/<md5(cwd)>/<id>/meta.json``: ``{schemaVersion, createdAtMs, updatedAtMs,
  hasConversation, cwd, title?}`` (older versions have none).
- ``acp-sessions/<id>/store.db`` (+ ``meta.json``): the same, for ``cursor-agent acp``.
- ``projects/<cwd, runs of non-alphanumerics as '-'>/agent-transcripts/<id>/<id>.jsonl``
  (or ``agent-transcripts/<id>.jsonl``): ``{"role": "user"|"assistant", "message": ...}``
  rows and ``{"type": "turn_ended", "status": ...}`` at the end of each turn (TUI and
  ``agent -p`` only).

- Owning process: the cursor-agent process (or one of its descendants) that holds the
  chat's ``store.db`` open ("Cursor holds the session's store.db open while it serves the
  session", agentprotocol); else the process whose cwd hashes to the chat's directory and
  that ran when the chat was last written (the last started before it began), or that
  names it in ``--resume``. A process's conversation is the chat it holds (of several, the
  one written last): a new chat (a new ``<id>`` directory) ends the previous one.
- id: the chat directory's name (= ``agentId``); name: ``meta["0"].name`` (not the
  placeholder "New Agent"), else ``meta.json`` ``title``; model: ``lastUsedModel``.
- busy: the transcript's last row is a prompt or an answer with no ``turn_ended`` after
  it; idle: ``turn_ended``. No transcript (ACP, older versions): unknown, the CPU decides.
- sub-agents: not stored locally in any source read; none.
- exit: not recorded; the process's exit ends its conversation.

Reading: directories are listed (only the md5 directories of running processes' cwds) at
start and when watchdog reports a change; ``store.db`` is read (read-only, its ``meta``
row only) when it or ``meta.json`` changed, at most every few seconds while it streams;
open files are asked of a process only when a chat appeared or none is bound yet.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import Pass, flag_value, latest, owner_of
from quintd.sources.changes import listing, lmtime
from quintd.sources.conversation_files import Transcript
from quintd.sources.cursor_chats import (
    Chat,
    chat_times,
    cwd_hash,
    project_slug,
    read_meta_json,
    read_store,
)
from quintd.sources.files import JsonlTail
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.sqlite_sessions import RETRY_S
from quintd.sources.times import START_SLACK_S

MAX_CHATS_PER_DIR = 512
_CHAT_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")


class CursorAgentState(Reader):
    platform = "cursor-agent"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._chats: dict[str, Chat] = {}
        self._dirty: set[str] = set()  # chats whose files changed
        self._dirty_transcripts: set[str] = set()
        self._listed: set[Path] = set()  # md5 directories listed (again when changed)
        self._appeared = False  # a chat directory appeared: open files are asked again
        self._unheld_written = False
        self._recheck: set[tuple[int, int]] = set()  # to ask again once due (a resume?)
        self._held: dict[tuple[int, int], set[str]] = {}
        self._asked: dict[tuple[int, int], float] = {}
        self._argv: dict[tuple[int, int], list[str]] = {}
        self._bucket: dict[tuple[int, int], Path | None] = {}  # chats/<md5 of its cwd>
        self._current: dict[tuple[int, int], tuple[str, float]] = {}

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root / "chats", self.root / "acp-sessions", self.root / "projects"]

    def changed(self, path: Path) -> None:
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return
        if len(parts) >= 2 and parts[0] == "chats" and _MD5.match(parts[1]):
            self._listed.discard(self.root / "chats" / parts[1])
            if len(parts) >= 3 and parts[2] in self._chats:
                self._dirty.add(parts[2])
        elif len(parts) >= 2 and parts[0] == "acp-sessions":
            if parts[1] in self._chats:
                self._dirty.add(parts[1])
            else:
                self._appeared = True
        elif len(parts) >= 4 and parts[0] == "projects" and parts[2] == "agent-transcripts":
            name = parts[-1]
            if name.endswith(".jsonl") and name[: -len(".jsonl")] in self._chats:
                self._dirty_transcripts.add(name[: -len(".jsonl")])

    def poll(self) -> None:
        self._listed.clear()
        self._dirty.update(self._chats)
        self._dirty_transcripts.update(self._chats)

    def has_registry_dir(self) -> bool:
        return (self.root / "chats").is_dir()

    def begin(self, now: Pass) -> None:
        horizon, processes = now.horizon, now.processes
        live = {p.key for p in processes}
        for table in (self._held, self._asked, self._argv, self._bucket):
            for key in [k for k in table if k not in live]:
                del table[key]
        for proc in processes:
            if proc.key not in self._argv:
                self._argv[proc.key] = now.view.argv(proc.pid)
                cwd = proc.cwd
                self._bucket[proc.key] = self.root / "chats" / cwd_hash(cwd) if cwd else None
        self._listed &= set(self._bucket.values())  # forget directories nobody runs in
        for bucket in set(self._bucket.values()):
            if bucket is not None:
                self._list(bucket, horizon)
        self._ask_open_files(now)
        self._read_changes(horizon)
        self._bind(list(processes))

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        found = self._current.get(proc.key)
        chat = self._chats.get(found[0]) if found is not None else None
        if found is None or chat is None:
            return None
        status = chat.status
        if status == "busy" and chat.transcript_at < found[1] - START_SLACK_S:
            status = "idle"  # a turn left open by an earlier process
        return ConversationFacts(
            native_id=chat.native_id,
            status=status,
            name=chat.name,
            model=chat.model,
            last_write=chat.transcript.last_write if chat.transcript else None,
            owner_uid=chat.owner,
        )

    # -- files ----------------------------------------------------------------------------

    def _list(self, directory: Path, horizon: float) -> None:
        """The chats of one project directory that can belong to a running process."""
        if directory in self._listed:
            return
        self._listed.add(directory)
        for name, _ in listing(directory, _CHAT_ID, limit=MAX_CHATS_PER_DIR):
            if name in self._chats:
                continue
            chat = Chat(name, directory / name)
            if max(chat_times(chat)) < horizon:
                continue  # history
            self._chats[name] = chat
            self._dirty.add(name)
            self._dirty_transcripts.add(name)
            self._appeared = True

    def _held_chat(self, path: str) -> str | None:
        """The chat whose ``store.db`` an open file is, adding ACP sessions as found."""
        candidate = Path(path)
        if candidate.name not in ("store.db", "store.db-wal"):
            return None
        directory = candidate.parent
        chats, acp = self.root / "chats", self.root / "acp-sessions"
        if directory.parent.parent == chats and _MD5.match(directory.parent.name):
            pass
        elif directory.parent != acp:
            return None
        native_id = directory.name
        if not _CHAT_ID.match(native_id):
            return None
        if native_id not in self._chats:
            self._chats[native_id] = Chat(native_id, directory)
            self._dirty.add(native_id)
            self._dirty_transcripts.add(native_id)
        return native_id

    def _read_changes(self, horizon: float) -> None:
        now = self._clock()
        held = set().union(*self._held.values()) if self._held else set()
        for native_id, chat in list(self._chats.items()):
            if chat.written < horizon and native_id not in held and native_id not in self._dirty:
                del self._chats[native_id]
        dirty, self._dirty = self._dirty, set()
        for native_id in dirty:
            changed = self._chats.get(native_id)
            if changed is None:
                continue
            chat = changed
            signature = chat_times(chat)
            chat.written = max(signature)
            if signature != chat.signature:
                if chat.signature and native_id not in held:
                    self._unheld_written = True  # a chat nobody holds was written: a resume?
                chat.signature = signature
                chat.store_pending = True
                read_meta_json(chat, self.root, self.stats)
        for pending in self._chats.values():
            # While a chat streams, its store is read at most every few seconds.
            if pending.store_pending and now - pending.store_read_at >= RETRY_S:
                pending.store_pending, pending.store_read_at = False, now
                read_store(pending, self.root, self.stats)
        dirty_transcripts, self._dirty_transcripts = self._dirty_transcripts, set()
        for native_id in dirty_transcripts:
            grown = self._chats.get(native_id)
            if grown is not None:
                self._read_transcript(grown)

    def _read_transcript(self, chat: Chat) -> None:
        if chat.transcript is None:
            if chat.cwd is None:
                self._dirty_transcripts.add(chat.native_id)  # once the cwd is known
                return
            base = self.root / "projects" / project_slug(chat.cwd) / "agent-transcripts"
            path = base / chat.native_id / f"{chat.native_id}.jsonl"
            if lmtime(path) == 0.0 and lmtime(base / f"{chat.native_id}.jsonl") > 0.0:
                path = base / f"{chat.native_id}.jsonl"
            if lmtime(path) == 0.0:
                return  # none (yet): the next change event under projects brings it
            chat.transcript = Transcript(JsonlTail(path, self.root, stats=self.stats))
        if chat.transcript.read(self._clock(), partial(_record, chat)):
            self._dirty_transcripts.add(chat.native_id)
        chat.transcript_at = lmtime(chat.transcript.tail.path)
        chat.written = max(chat.written, chat.transcript_at)

    # -- which process runs which chat ----------------------------------------------------

    def _ask_open_files(self, now: Pass) -> None:
        """Which chats each process holds: asked of a new process and when a chat
        appeared; when a chat nobody holds was written (a resume), at most every few
        seconds. Never for an idle agent."""
        live = {p.key for p in now}
        self._recheck = (self._recheck | live if self._unheld_written else self._recheck) & live
        for proc in now:
            asked = self._asked.get(proc.key)
            due = proc.key in self._recheck and asked is not None and now.now - asked >= RETRY_S
            if asked is None or self._appeared or due:
                self._recheck.discard(proc.key)  # each asked once, when due, not forgotten
                self._asked[proc.key] = now.now
                self._held[proc.key] = {
                    native_id
                    for files in now.holding(proc).values()
                    for path in files
                    if (native_id := self._held_chat(path)) is not None
                }
        self._appeared = self._unheld_written = False

    def _bind(self, processes: list[AgentProcess]) -> None:
        held = [(proc, self._chats[c]) for proc in processes for c in self._held.get(proc.key, ())]
        held = [(proc, chat) for proc, chat in held if chat.native_id in self._chats]
        self._current = latest(held, _order)
        claimed = {chat.native_id for _, chat in held}
        rest = [p for p in processes if p.key not in self._current]
        self._current.update(latest(self._fallback(rest, claimed), _order))

    def _fallback(
        self, processes: list[AgentProcess], claimed: set[str]
    ) -> list[tuple[AgentProcess, Chat]]:
        """Processes holding no chat: ``--resume <id>``, else the chats of their cwd's
        directory begun or written while they ran."""
        claims: list[tuple[AgentProcess, Chat]] = []
        for proc in processes:
            resumed = flag_value(self._argv.get(proc.key, []), ("--resume",))
            if resumed in self._chats and resumed not in claimed:
                chat = self._chats[resumed]
                if chat.written >= proc.start_time - START_SLACK_S:
                    claims.append((proc, chat))
                    claimed.add(resumed)
        for chat in self._chats.values():
            if chat.native_id in claimed or chat.directory.parent.name == "acp-sessions":
                continue
            here = [p for p in processes if self._bucket.get(p.key) == chat.directory.parent]
            created = chat.created or chat.written
            owner = owner_of(created, chat.written, here)
            if owner is not None:
                claims.append((owner, chat))
        return claims


def _order(chat: Chat) -> tuple[float, float, str]:
    return (chat.written, chat.created or 0.0, chat.native_id)


def _record(chat: Chat, record: dict[str, Any]) -> None:
    if record.get("type") == "turn_ended":
        chat.status = "idle"
    elif record.get("role") in ("user", "assistant"):
        chat.status = "busy"


SPEC = spec("cursor-agent")  # where it keeps its state: the registry's line
