"""Time, as agents write it and as processes report it: the one parser of the times found
in agents' files, and the two slacks every reader compares them with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# How far before the oldest running process a file may have been written and still be one
# of its conversations (an agent stamps its conversation with a start time slightly before
# the one the OS reports, or on another clock): the horizon below which files are history.
CLOCK_SLACK_S = 10.0
# A process's start time (from ticks since a boot time known to the second) against a time
# the agent wrote (a lock's, a row's, a whole second of a database): this much either way
# is the same moment.
START_SLACK_S = 2.0


def horizon(start_times: list[float]) -> float:
    """The moment before which nothing written can belong to any of these processes."""
    return min(start_times, default=0.0) - CLOCK_SLACK_S


def parse_time(value: Any) -> float | None:
    """Epoch seconds from a time an agent wrote, or None: a number of seconds or of
    milliseconds (above 1e11), the same as digits, an ISO 8601 / RFC 3339 text (``Z`` or an
    offset; without one, UTC: agents write UTC), or a ``datetime``. Never raises."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
            value = int(value)
        if isinstance(value, int | float):
            seconds = float(value) / (1000 if value > 1e11 else 1)
            return seconds if 0 < seconds < 1e10 else None
        if isinstance(value, str) and len(value) < 64:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if isinstance(value, datetime):
            moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return None
