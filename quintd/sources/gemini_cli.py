"""Gemini CLI: ``~/.gemini/tmp/<project>/chats/session-<start>-<id8>.jsonl`` (seen with
0.61.0; ``../shared/fixtures/gemini-cli``).

- The file is written at start-up: the conversation is known at once. Line 0 is the
  header ``{sessionId, projectHash, startTime, lastUpdated, kind}``; ``projectHash`` is the
  SHA-256 of the project directory (the process's cwd).
- ``{"$set": {...}}`` records update metadata: ``summary`` is the title. Gemini writes it
  into the *previous* session's file at the next start: that file belongs to a process
  that has gone, so it never produces an event after that session's ``ended``.
- Message records ``{id, type, ...}``: ``user`` (a prompt, or a tool's functionResponse),
  ``gemini`` (``content``, ``toolCalls``, ``model``), ``info``. A record may be written
  again with the same id when it changes (the last one wins).
- Busy is not recorded; it is read from the last message: a ``user`` record with no answer
  yet, or a ``gemini`` record with neither text nor tool calls (a tool pending, or
  waiting for approval), is busy; a ``gemini`` record with text is idle, unless a tool
  runs: an answer with text *and* a tool call is written as text alone until the tool
  finished (seen with 0.61.0, ``tests/fixtures/gemini-cli-subagent``), so a tool process
  under the CLI (not its relaunched self) makes it busy. Waiting for the user to approve
  the call is waiting: idle.
- ``/clear`` starts a new file at once: the process's conversation is the file it began
  last.
- A sub-agent (``invoke_agent``, e.g. ``codebase_investigator``; seen with 0.61.0) writes
  ``chats/<parent sessionId>/<its sessionId>.jsonl``: a header with ``kind: "subagent"``,
  then the same records; it is done when its result is set (``{"$set": {"summary": <the
  result>}}``: not a title). It is a child session of its parent's conversation, busy
  until done; the parent is busy while it runs (the parent's ``invoke_agent`` call is
  written only once it returned, after an answer that looks final).

Before 0.39.0 (0.2.0 to 0.38.2, from Gemini CLI's source: ``chatRecordingService.ts``) a
chat was one JSON document, ``session-<YYYY-MM-DDTHH-MM>-<id8>.json`` in the same
directory, rewritten in place (``writeFileSync``, no rename) on every message:
``{sessionId, projectHash, startTime, lastUpdated, messages: [...], summary?, kind?}``,
each message as above (``content`` a string or a list of parts). No file exists before
the first message; ``/clear`` starts the next file at the next prompt. A tool call is
written only once it finished, so an answer is not known to be the end of the turn (a
tool may be awaiting approval or running): busy while the last message is a prompt, else
unknown (the process's CPU decides). :class:`LegacyChat` reads the document again
whenever it changed and hands its header, messages and summary to the same record rules; a
rewrite caught half way (an empty file, or a mix of two versions) is not JSON and is read
again at the next change. Seen with 0.38.2: ``tests/fixtures/gemini-legacy``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.conversation_files import Conversation, ConversationFiles, RecordSource
from quintd.sources.files import (
    COMPLAINTS,
    READ_BUDGET_BYTES,
    ReadStats,
    identifier,
    parse_object,
    read_whole,
    text,
)
from quintd.sources.registry import spec
from quintd.sources.times import CLOCK_SLACK_S, parse_time

_UUID = "????????-????-????-????-????????????"
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# A legacy chat is parsed whole at every change: a larger one is skipped (and counted).
MAX_LEGACY_CHAT_BYTES = 16 * 1024 * 1024


class GeminiState(ConversationFiles):
    platform = "gemini-cli"
    pattern = ("session-*.jsonl", "session-*.json", f"{_UUID}.jsonl")

    def watch_dirs(self) -> list[Path]:
        return [self.root / "tmp"]

    def _source(self, path: Path) -> RecordSource:
        if path.name.endswith(".json"):
            return LegacyChat(path, self.root, self.stats)
        return super()._source(path)

    def begin(self, now: Pass) -> None:
        """As the base, and: a conversation whose process has gone is over. A process that
        starts soon after (within the clock slack) must not take it over (seen: `gemini
        --list-sessions` run 0.4 s after a conversation ended claimed it), unless the
        conversation is written again (a resume)."""
        previous, live = dict(self._owner), {p.pid for p in now}
        super().begin(now)
        for path, pid in previous.items():
            conv = self._files.get(path)
            if conv is not None and pid not in live and "over_at" not in conv.extra:
                conv.extra["over_at"] = now.now
                self._owner.pop(path, None)
        for path in list(self._owner):
            conv = self._files[path]
            over = conv.extra.get("over_at")
            if over is not None and (conv.last_write is None or conv.last_write <= over):
                del self._owner[path]  # over, and not written since: nobody's

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        found = super().facts(proc)
        if found is None:
            return None
        if found.status == "idle" and self._tool_running(proc.pid):
            found = replace(found, status="busy")
        subs = [
            c
            for c in self._files.values()
            if c.extra.get("parent") == found.native_id and c.native_id is not None
        ]
        if not subs:
            return found
        subagents = tuple(
            SubagentFacts(
                agent_id=str(c.native_id),
                done=bool(c.extra.get("done")),
                last_write=c.last_write,
                status=None if c.extra.get("done") else "busy",
                model=c.model,
            )
            for c in subs
        )
        running = any(not sub.done for sub in subagents)
        return replace(found, subagents=subagents, status="busy" if running else found.status)

    def _tool_running(self, pid: int) -> bool:
        """Whether a process other than the CLI itself runs under it (a shell tool)."""
        for child in self.now.tree(pid, depth=4):
            argv = self.now.view.argv(child)
            if argv and not any("gemini" in arg for arg in argv[:4]):
                return True
        return False

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        if proc.cwd is None or conv.started is None or "parent" in conv.extra:
            return False  # a sub-agent's file belongs to its parent conversation
        digest = hashlib.sha256(proc.cwd.encode("utf-8", "surrogateescape")).hexdigest()
        same_project = conv.project_hash == digest or conv.tail.path.parent.parent.name == digest
        return same_project and conv.started >= proc.start_time - CLOCK_SLACK_S

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        if conv.native_id is None:
            if "sessionId" not in record:
                return  # not a header: a file must begin with one
            conv.native_id = identifier(record.get("sessionId"))
            conv.project_hash = identifier(record.get("projectHash"))
            conv.started = parse_time(record.get("startTime"))
            conv.status = "idle"  # waiting for its first prompt
            conv.extra["legacy"] = record.get("$legacy") is True
            if record.get("kind") == "subagent":
                parent = conv.tail.path.parent.name
                if _UUID_RE.match(parent):
                    conv.extra["parent"] = parent
            return
        updates = record.get("$set")
        if isinstance(updates, dict):
            if "parent" in conv.extra:
                if updates.get("summary") is not None:
                    conv.extra["done"] = True  # its result: not a title
            else:
                conv.title = text(updates.get("summary")) or conv.title
            return
        kind = record.get("type")
        if kind == "user":
            conv.status = "busy"  # a prompt, or a tool's result going back to the model
        elif kind == "gemini":
            conv.model = text(record.get("model")) or conv.model
            answered = _has_text(record.get("content"))
            calls = record.get("toolCalls")
            if conv.extra.get("legacy"):
                # Before 0.39 a tool call is written only once it finished: an answer may
                # be followed by a tool awaiting approval or running, with nothing on disk.
                # Unknown: the process's CPU decides (tests/fixtures/gemini-legacy).
                conv.status = None
            elif answered and not (isinstance(calls, list) and _pending(calls)):
                conv.status = "idle"
            else:
                conv.status = "busy"  # thinking, a tool running, or awaiting approval


def _has_text(content: Any) -> bool:
    """Whether a message's content says something: a string, or parts with ``text``."""
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list):
        return any(
            isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"].strip()
            for part in content
        )
    return False


class LegacyChat:
    """A chat of Gemini CLI before 0.39: one JSON document rewritten in place. Read whole
    when its size, modification time or inode changed; yields its header (once), then
    every message and the summary, which the record rules take as they come (the last
    word wins)."""

    def __init__(self, path: Path, root: Path, stats: ReadStats) -> None:
        self.path = path
        self.root = root
        self.stats = stats
        self.offset = 0
        self.owner: int | None = None
        self._signature: tuple[int, int, int] | None = None
        self._header_sent = False

    def read_new(self, budget: int = READ_BUDGET_BYTES) -> tuple[list[dict[str, Any]], bool]:
        whole = read_whole(self.path, self.root, self.stats, MAX_LEGACY_CHAT_BYTES, self._signature)
        if whole is None:
            return [], False  # absent, refused, or unchanged
        self._signature, self.owner, info = whole.signature, whole.info.st_uid, whole.info
        if whole.raw is None:
            return [], False  # too large to read whole (counted)
        raw = whole.raw
        self.offset += len(raw)
        document = parse_object(raw)
        if document is None:
            if raw.strip():  # empty: a rewrite caught half way; the next change is read
                self.stats.garbage += 1
                COMPLAINTS.warn(self.path, info, "a chat that is not a JSON object")
            return [], False
        self.stats.lines += 1
        records: list[dict[str, Any]] = []
        if not self._header_sent:
            header = {k: document.get(k) for k in ("sessionId", "projectHash", "startTime")}
            header["$legacy"] = True
            if header["sessionId"] is None:
                self.stats.garbage += 1
                return [], False
            records.append(header)
            self._header_sent = True
        messages = document.get("messages")
        if isinstance(messages, list):
            records += [m for m in messages if isinstance(m, dict)]
        if document.get("summary") is not None:
            records.append({"$set": {"summary": document.get("summary")}})
        return records, False


def _pending(calls: list[Any]) -> bool:
    """Whether a tool call of the record has no result yet."""
    return any(isinstance(c, dict) and c.get("result") in (None, []) for c in calls)


SPEC = spec("gemini-cli")  # where it keeps its state: the registry's line
