"""A file's SHA-256: the identity of what no signature vouches for."""

from __future__ import annotations

import hashlib

_CHUNK = 1024 * 1024
MAX_HASH_BYTES = 4 * 1024 * 1024 * 1024


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    remaining = MAX_HASH_BYTES
    with open(path, "rb") as fh:
        while remaining > 0:
            chunk = fh.read(min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()
