"""What the main loop says in the log, and how often: each stored transition (one line
per event), a user's sessions waiting their turn (once a minute per user), a failed pass
(counted every time, logged with its traceback once per distinct error)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from quintd.logs import fields
from quintd.model import format_timestamp
from quintd.tracker import Changes

log = logging.getLogger("quintd.daemon")


def log_stored(changes: Changes) -> None:
    for event in changes.events:
        log.info(
            "session %s",
            event.kind,
            extra=fields(
                session_id=event.session_id,
                state=event.state,
                platform=event.platform,
                pid=changes.pids.get(event.session_id),
                uid=changes.uids.get(event.session_id),
            ),
        )


class DeferredNotice:
    """Once a minute per user: its new sessions wait (its announcement budget)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next: dict[int | None, float] = {}  # uid -> next log allowed

    def note(self, deferred: dict[int | None, int], per_minute: int) -> None:
        now = self._clock()
        for uid, count in deferred.items():
            if now < self._next.get(uid, 0.0):
                continue
            self._next[uid] = now + 60.0
            log.warning(
                "user %s's agents announced %d new sessions in the last minute "
                "(sessions.new_per_user_per_minute): %d more wait their turn",
                uid,
                per_minute,
                count,
            )


class PassErrors:
    """Failed passes: counted every time; logged with the traceback once per distinct
    error (a pass failing the same way every second says it once)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None  # with its time, for status
        self._last_logged: str | None = None

    def failed(self, exc: Exception) -> None:
        self.count += 1
        what = f"{type(exc).__name__}: {exc}"
        self.last = f"{format_timestamp(datetime.now(UTC))} {what}"
        if what != self._last_logged:
            self._last_logged = what
            log.exception("scan pass failed; will retry (the same error is not logged again)")
