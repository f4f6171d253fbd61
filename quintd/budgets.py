"""Rates a user's actions may drive: a token bucket, on a clock the caller gives."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. ``ready(now)`` takes one if
    there is one; ``refused`` counts the times there was none (the caller waits for
    :meth:`next_token`)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None
        self.refused = 0
        self._waiting = False

    def _fill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now if self.stamp is None else max(self.stamp, now)

    def ready(self, now: float) -> bool:
        self._fill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self._waiting = False
            return True
        if not self._waiting:  # one wait counted once, however often it is asked
            self._waiting = True
            self.refused += 1
        return False

    def next_token(self, now: float) -> float:
        self._fill(now)
        return now + max(0.0, (1.0 - self.tokens) / self.rate)
