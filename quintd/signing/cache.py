"""Identities kept across restarts, in the state database's ``signing_cache`` table (made
by the store's schema): a restart examines no file it examined before, unchanged.

Rows are keyed by the file's identity (device, inode, size, mtime, ctime: see
:data:`~quintd.signing.resolver.FileKey`); rows older than ``max_age_s`` are forgotten at
load, and a row that does not parse (an older or damaged one) is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from quintd.signing.info import SigningInfo
from quintd.signing.resolver import FileKey

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]

MAX_AGE_S = 90 * 86400


class StoredSigningCache:
    """``transaction``: the state database's (``Store.transaction``), so that the cache
    shares its one connection and its lock."""

    def __init__(self, transaction: Transaction, max_age_s: float = MAX_AGE_S) -> None:
        self._transaction = transaction
        self._max_age_s = max_age_s

    def load_signing(self) -> dict[FileKey, SigningInfo]:
        """Identities examined before, by file identity; older ones are forgotten."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM signing_cache WHERE seen_at < ?", (time.time() - self._max_age_s,)
            )
            rows = conn.execute(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, info FROM signing_cache"
            ).fetchall()
        found: dict[FileKey, SigningInfo] = {}
        for dev, ino, size, mtime, ctime, info in rows:
            parsed = signing_from_json(str(info))
            if parsed is not None:
                found[(int(dev), int(ino), int(size), int(mtime), int(ctime))] = parsed
        return found

    def save_signing(self, key: FileKey, info: SigningInfo) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO signing_cache(dev, ino, size, mtime_ns, ctime_ns, info, "
                "seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, signing_to_json(info), time.time()),
            )


def signing_to_json(info: SigningInfo) -> str:
    data = dataclasses.asdict(info)
    data["authorities"] = list(info.authorities)
    return json.dumps(data)


def signing_from_json(text: str) -> SigningInfo | None:
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        data["authorities"] = tuple(data.get("authorities") or ())
        return SigningInfo(**data)
    except (ValueError, TypeError):
        return None
