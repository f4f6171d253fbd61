"""A file's SHA-256: the identity of what no signature vouches for (macOS, Windows)."""

from __future__ import annotations

import os

from quintd.signing.examine import Deadline, Target, digest, open_target


def sha256_file(path: str) -> str:
    """The SHA-256 of a file, opened safely (examine.py); raises ``Refused``."""
    fd, _ = open_target(Target(path))
    try:
        return digest(fd, Deadline())
    finally:
        os.close(fd)
