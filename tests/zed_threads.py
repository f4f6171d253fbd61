"""Zed's ``threads/threads.db``, written the way Zed's native agent writes it. No editor runs
here: the table, the upsert and the serialised thread follow Zed's own source
(zed-industries/zed ``crates/agent/src/db.rs`` at 0642ec7e49e2d2c06f55db8c5bb2d4eca0f5223b:
``ThreadsDatabase::new``, ``save_thread_sync``, ``DbThread``; ``crates/agent/src/thread.rs``
at 000e783fddd704e6a0fa2be12fe41c56c94e820c: ``Message``, ``flush_pending_message``,
``to_db``). Used by tests/test_zed.py, tests/test_fuzz_readers.py and the fixture's
generator (tests/fixtures/zed/generate.py)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard

# The table as ThreadsDatabase::new leaves it: created, then its columns added one by one.
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS threads (id TEXT PRIMARY KEY, summary TEXT NOT NULL, "
    "updated_at TEXT NOT NULL, data_type TEXT NOT NULL, data BLOB NOT NULL)",
    "ALTER TABLE threads ADD COLUMN parent_id TEXT",
    "ALTER TABLE threads ADD COLUMN folder_paths TEXT",
    "ALTER TABLE threads ADD COLUMN folder_paths_order TEXT",
    "ALTER TABLE threads ADD COLUMN created_at TEXT",
]
UPSERT = (
    "INSERT INTO threads (id, parent_id, folder_paths, folder_paths_order, summary, "
    "updated_at, data_type, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, "
    "folder_paths = excluded.folder_paths, folder_paths_order = excluded.folder_paths_order, "
    "summary = excluded.summary, updated_at = excluded.updated_at, "
    "data_type = excluded.data_type, data = excluded.data"
)
VERSION = "0.3.0"  # DbThread::VERSION
CANCELLED = "Tool canceled by user"
MODEL = {"provider": "zed.dev", "model": "claude-sonnet-4-5"}


def rfc3339(at: float) -> str:
    """chrono's ``to_rfc3339`` of a UTC time (nanoseconds where there are any)."""
    moment = datetime.fromtimestamp(at, UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        base += f".{moment.microsecond:06d}000"
    return base + "+00:00"


def serde_time(at: float) -> str:
    """chrono's serde form of the same time (``Z``)."""
    return rfc3339(at).replace("+00:00", "Z")


@dataclass
class Thread:
    """A thread as Zed's ``Thread`` holds it, for ``to_db``."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    title: str = ""
    updated_at: float = 0.0
    messages: list[Any] = field(default_factory=list)
    model: dict[str, str] | None = field(default_factory=lambda: dict(MODEL))
    parent: str | None = None  # subagent_context.parent_thread_id
    usage: dict[str, Any] = field(default_factory=dict)

    def prompt(self, text: str) -> str:
        """``send``: the user's message, pushed (``updated_at`` is left as it was)."""
        message_id = str(uuid.uuid4())
        self.messages.append({"User": {"id": message_id, "content": [{"Text": text}]}})
        return message_id

    def answer(self, at: float, text: str = "Done.", calls: int = 0, cancel: bool = False) -> None:
        """``flush_pending_message``: the model's response (with ``calls`` tool calls and
        their results, or the cancellation marker) pushed, and ``updated_at`` now."""
        content: list[Any] = [{"Text": text}]
        results: dict[str, Any] = {}
        for n in range(calls):
            call = f"toolu_{uuid.uuid4().hex[:20]}{n}"
            content.append(
                {
                    "ToolUse": {
                        "id": call,
                        "name": "read_file",
                        "raw_input": '{"path":"src/main.rs"}',
                        "input": {"path": "src/main.rs"},
                        "is_input_complete": True,
                    }
                }
            )
            results[call] = {
                "tool_use_id": call,
                "tool_name": "read_file",
                "is_error": cancel,
                "content": {"Text": CANCELLED if cancel else "fn main() {}"},
                "output": None,
            }
        self.messages.append(
            {"Agent": {"content": content, "tool_results": results, "reasoning_details": None}}
        )
        self.updated_at = at

    def data(self) -> dict[str, Any]:
        """The JSON ``save_thread_sync`` compresses: ``DbThread``'s fields in order, then
        ``version``."""
        usage = {"input_tokens": 1200, "output_tokens": 80}
        return {
            "title": self.title,
            "messages": self.messages,
            "updated_at": serde_time(self.updated_at),
            "detailed_summary": None,
            "initial_project_snapshot": None,
            "cumulative_token_usage": usage,
            "request_token_usage": self.usage,
            "model": self.model,
            "profile": "write",
            "imported": False,
            "subagent_context": (
                {"parent_thread_id": self.parent, "depth": 1} if self.parent else None
            ),
            "speed": None,
            "thinking_enabled": False,
            "thinking_effort": None,
            "draft_prompt": None,
            "ui_scroll_position": None,
            "sandboxed_terminal_temp_dir": None,
            "version": VERSION,
        }


class ZedThreads:
    """``threads.db`` as ThreadsDatabase writes it (rollback journal, as sqlez opens it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        for statement in SCHEMA:
            # A column there already: ThreadsDatabase ignores that error too.
            with contextlib.suppress(sqlite3.OperationalError):
                self.conn.execute(statement)

    def save(self, thread: Thread, folders: tuple[str, ...] = ("/home/dev/src/shop",)) -> None:
        """``save_thread_sync``: the whole thread, zstd level 3, upserted."""
        raw = json.dumps(thread.data(), separators=(",", ":")).encode()
        # zstd::encode_all streams: the frame does not carry its content size.
        blob = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw)
        self.raw(thread.id, thread.title, thread.updated_at, "zstd", blob, thread.parent, folders)

    def raw(
        self,
        thread_id: object,
        title: object,
        updated_at: float | str,
        data_type: object,
        data: object,
        parent: object = None,
        folders: tuple[str, ...] = (),
    ) -> None:
        updated = rfc3339(updated_at) if isinstance(updated_at, float) else updated_at
        self.conn.execute(
            UPSERT,
            (
                thread_id,
                parent,
                "\n".join(folders) or None,
                ",".join(str(n) for n in range(len(folders))) or None,
                title,
                updated,
                data_type,
                data,
                updated,  # created_at: the first save's updated_at
            ),
        )

    def delete(self, thread_id: str) -> None:
        self.conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

    def close(self) -> None:
        self.conn.close()
