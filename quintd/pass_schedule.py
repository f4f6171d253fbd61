"""When the main loop's next pass is due: every ``scan.interval``; early, at most every
:data:`EVENT_PASS_GAP_S`, after an agent's exit, an identity resolved or a file that
appeared (those from files rate-limited: a user creating and deleting files in a watched
directory once made 21 whole passes a second); and within :data:`FOLLOW_UP_S` while
something is held back (a young agent's state, a signing identity).

Pure bookkeeping on a clock the caller passes in: the daemon's loop sleeps until
:meth:`PassSchedule.wake_at` and asks :meth:`PassSchedule.due` when it wakes. The flags
are set from other threads (the watcher, the signing thread): single assignments.
"""

from __future__ import annotations

from quintd.budgets import TokenBucket

# The shortest gap between two passes brought forward by events (exits, new files): a
# burst of events costs one pass, not one each.
EVENT_PASS_GAP_S = 0.05
# Passes brought forward by file events: this many a second, after a burst of so many.
WAKEUPS_PER_S = 2.0
WAKEUP_BURST = 5
# While something is held back, the longest wait for the next pass, whatever the interval.
FOLLOW_UP_S = 0.5


class PassSchedule:
    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self.next_tick = now + interval
        self.last_pass = now
        self.soon = False  # an exit or an identity: pass early
        self.file_soon = False  # a file event asked for an early pass (rate-limited)
        self.follow_up = False  # something held back: pass within FOLLOW_UP_S
        self.early_passes = 0
        self.wakeups = TokenBucket(WAKEUPS_PER_S, WAKEUP_BURST)

    def wake_at(self, now: float) -> float:
        """The monotonic time to wake at for the next pass (a file event's early pass
        turns into a due one when the rate allows)."""
        wake_at = self.next_tick
        if self.file_soon and self.wakeups.ready(now):
            self.file_soon = False
            self.soon = True
        elif self.file_soon:
            wake_at = min(wake_at, self.wakeups.next_token(now))
        if self.soon:
            wake_at = min(wake_at, self.last_pass + EVENT_PASS_GAP_S)
        elif self.follow_up:
            wake_at = min(wake_at, self.last_pass + FOLLOW_UP_S)
        return wake_at

    def due(self, now: float) -> bool:
        """Whether a pass is due now; if so it is counted as begun."""
        early = (self.soon and now >= self.last_pass + EVENT_PASS_GAP_S) or (
            self.follow_up and now >= self.last_pass + FOLLOW_UP_S
        )
        if now < self.next_tick and not early:
            return False
        if now >= self.next_tick:
            # In step with the interval; after a stall (a pass or more missed), one
            # interval from now, not a burst of the missed ones. The interval may have
            # changed on reload.
            following = self.next_tick + self.interval
            self.next_tick = following if following > now else now + self.interval
        else:
            self.early_passes += 1
        self.soon = False
        self.last_pass = now
        return True
