"""zstd-compressed JSON from an agent's database (Zed's threads; newer Crush message parts),
decompressed within bounds.

Python 3.11 has no zstd: the ``zstandard`` package (a dependency) is imported on first use
only, so a daemon that never meets such a value never loads it (importing it costs about
0.9 MiB of RSS and 10 ms, measured on CPython 3.11 / zstandard 0.25.0; README,
"Benchmarks"). Where it cannot be imported (a platform without its wheel) the values are
reported :data:`UNAVAILABLE` and a reader does without them.

The bytes are a user's: the output is capped (a 1 KiB frame can claim gigabytes), and so
is the window the decoder may allocate (a frame header can ask for 2 GiB of it).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

log = logging.getLogger("quintd.sources")

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The decoder's window: zstd level 3 (what Zed writes) uses 2 MiB at most for any input.
MAX_WINDOW_BYTES = 8 * 1024 * 1024
_CHUNK = 256 * 1024

UNAVAILABLE = "no zstandard module"
TOO_LARGE = "larger than allowed"
CORRUPT = "not a zstd frame"

_module: list[ModuleType | None] = []  # [] until the first import was tried


class Undecodable(Exception):
    """The value could not be decompressed: ``reason`` is one of :data:`UNAVAILABLE`,
    :data:`TOO_LARGE`, :data:`CORRUPT`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _zstandard() -> ModuleType | None:
    if not _module:
        try:
            import zstandard
        except ImportError as exc:  # the reader goes on without what is compressed
            log.warning("cannot read zstd-compressed agent data: %s", exc)
            _module.append(None)
        else:
            _module.append(zstandard)
    return _module[0]


def decompress(blob: bytes, limit: int) -> bytes:
    """The bytes of one zstd frame, at most ``limit`` of them; raises :class:`Undecodable`."""
    if not blob.startswith(ZSTD_MAGIC):
        raise Undecodable(CORRUPT)
    zstd = _zstandard()
    if zstd is None:
        raise Undecodable(UNAVAILABLE)
    chunks: list[bytes] = []
    total = 0
    try:
        decoder: Any = zstd.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
        with decoder.stream_reader(blob) as reader:
            while True:
                chunk = reader.read(min(_CHUNK, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise Undecodable(TOO_LARGE)
    except zstd.ZstdError:
        raise Undecodable(CORRUPT) from None
    return b"".join(chunks)
