"""Reading a VS Code-family editor's ``state.vscdb``: the SQLite key/value store VS Code,
Cursor, Windsurf and VSCodium keep in ``User/globalStorage/`` and in each
``User/workspaceStorage/<id>/``.

The file is what VS Code's ``SQLiteStorageDatabase`` makes (microsoft/vscode
``src/vs/base/parts/storage/node/storage.ts`` at ``12cf3b0f7b1879bc5e86e79d1a8d1470345f3dde``):
``CREATE TABLE ItemTable (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)``, rollback
journal (no WAL), written by ``INSERT INTO ItemTable VALUES (?,?)``. Cursor adds a table of
the same shape, ``cursorDiskKV``. A value is JSON text. Because a key's row is replaced on
every write (``ON CONFLICT REPLACE``), its ``rowid`` grows each time it is written: the
rowids say which keys were written since a read without touching a value.

Everything here runs inside :func:`~quintd.sources.sqlite_files.read_database` (read-only,
immutable where nobody holds it, the guard's budget and value cap). Values are never
loaded whole into Python: only the paths asked for are taken out by SQLite's
``json_extract`` (one parse per key), at most :data:`MAX_KEYS` keys are listed, and a key
whose value is over the guard's cap (``string or blob too big``) or not JSON is skipped
and reported as such, without failing the read of the others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from quintd.sources.files import parse_json
from quintd.sources.sqlite_files import columns, quote_name

STATE_DB = "state.vscdb"
ITEM_TABLE = "ItemTable"
DISK_KV = "cursorDiskKV"  # Cursor's
MAX_KEYS = 20_000  # keys listed per prefix and read
MAX_PATHS = 16  # JSON paths taken out of one value


class Unusable(Enum):
    """Why a key's value gave nothing."""

    TOO_BIG = "too big"  # over the guard's cap on one value
    NOT_JSON = "not JSON"
    MISSING = "missing"  # the key is not there (any more)


@dataclass(frozen=True)
class KeyRow:
    key: str
    rowid: int  # grows each time the key is written


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    """Whether the database has this key/value table (with its two columns)."""
    return {"key", "value"} <= columns(conn, table)


def keys_with_prefix(
    conn: sqlite3.Connection, table: str, prefix: str, limit: int = MAX_KEYS
) -> list[KeyRow]:
    """The keys starting with ``prefix`` and their rowids, from the key's index alone (no
    value is read): at most ``limit``, in key order."""
    if not prefix:
        raise ValueError("an empty prefix lists the whole table")
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    rows = conn.execute(
        f"SELECT rowid, key FROM {quote_name(table)} WHERE key >= ? AND key < ? LIMIT ?",
        (prefix, upper, limit),
    ).fetchall()
    return [KeyRow(str(key), int(rowid)) for rowid, key in rows if isinstance(key, str)]


def json_fields(
    conn: sqlite3.Connection, table: str, key: str, paths: Sequence[str]
) -> list[Any] | Unusable:
    """The values at ``paths`` (``$.status``, ``$.modelConfig.modelName`` ...) in one
    key's JSON value, in order (None where a path is absent), or why there are none. The
    value is parsed once, by SQLite; a value over the guard's cap or not JSON is this
    key's problem only."""
    if not 2 <= len(paths) <= MAX_PATHS:
        raise ValueError("between 2 and MAX_PATHS paths (one path returns no array)")
    marks = ", ".join("?" for _ in paths)
    try:
        row = conn.execute(
            f"SELECT json_extract(value, {marks}) FROM {quote_name(table)} WHERE key = ?",
            (*paths, key),
        ).fetchone()
    except sqlite3.DataError:
        return Unusable.TOO_BIG  # "string or blob too big": SQLITE_LIMIT_LENGTH
    except sqlite3.OperationalError as exc:
        if "malformed JSON" in str(exc):
            return Unusable.NOT_JSON
        raise  # the guard's interruption, a missing json_extract...: the read fails
    if row is None:
        return Unusable.MISSING
    found = parse_json(row[0])
    if not isinstance(found, list) or len(found) != len(paths):
        return Unusable.NOT_JSON
    return found
