"""The delivery policy: what a server's answer (or a failed request) means, and how long
the pipeline waits before it tries again. Pure: no I/O, no threads, no clock of its own;
time and randomness are passed in, so the policy can be tested (and simulated for a whole
fleet) without a server.

| answer                                   | outcome                                       |
|------------------------------------------|-----------------------------------------------|
| 2xx                                      | delivered: delete from the queue              |
| 400, 413, 422 for several events         | split the batch in halves (each its own key)  |
| 400, 413, 422 for one event              | dead letter, with the server's reason         |
| 401, 403                                 | pause delivery (the token is refused)         |
| 429, 503 with a Retry-After              | wait as long as it says                       |
| any other status, a timeout, a reset ... | back off: exponential, capped, full jitter    |

A 429 is the organisation's limit, shared with every other daemon: :class:`Pace` decides
how fast the pipeline sends from the 429s it gets (tuned with tests/bench/fleet.py).
"""

from __future__ import annotations

import email.utils
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
AUTH_PAUSE_S = 900.0
MAX_RETRY_AFTER_S = 3600.0
MIN_WAIT_S = 0.1


class Action(StrEnum):
    DELIVERED = "delivered"
    DEAD_LETTER = "dead_letter"
    SPLIT = "split"
    AUTH_PAUSE = "auth_pause"
    RETRY_AFTER = "retry_after"
    BACKOFF = "backoff"


# Outcomes that concern the whole pipeline: every worker stops after its request, and the
# queue waits. The others concern only the events of that request.
HALTING = frozenset({Action.AUTH_PAUSE, Action.RETRY_AFTER, Action.BACKOFF})


@dataclass(frozen=True)
class Answer:
    """What the server answered."""

    status: int
    reason: str = ""  # the body or reason phrase, for the log and dead letters
    retry_after: str | None = None  # the header, as sent


@dataclass(frozen=True)
class Failure:
    """No answer: a timeout, a refused or dropped connection, a TLS error."""

    error: str


@dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str
    status: int | None = None
    wait: float | None = None  # seconds: from Retry-After, or the auth pause

    @property
    def halts(self) -> bool:
        return self.action in HALTING


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date, at most an
    hour), or None when absent or garbage. ``now``: epoch seconds."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(moment.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


def classify(answer: Answer | Failure, *, events: int, now: float) -> Outcome:
    """The outcome of one request that carried ``events`` events. ``now``: epoch seconds
    (an HTTP-date Retry-After is relative to it)."""
    if isinstance(answer, Failure):
        return Outcome(Action.BACKOFF, answer.error)
    status = answer.status
    reason = f"HTTP {status}: {answer.reason}" if answer.reason else f"HTTP {status}"
    if 200 <= status < 300:
        return Outcome(Action.DELIVERED, reason, status)
    if status in (400, 413, 422):
        # The server stored none of it: split until the culprit stands alone.
        action = Action.SPLIT if events > 1 else Action.DEAD_LETTER
        return Outcome(action, answer.reason, status)
    if status in (401, 403):
        refused = f"HTTP {status}: token refused: {answer.reason or status}"
        return Outcome(Action.AUTH_PAUSE, refused, status, AUTH_PAUSE_S)
    if status in (429, 503):
        wait = parse_retry_after(answer.retry_after, now)
        if wait is not None:
            return Outcome(Action.RETRY_AFTER, reason, status, wait)
    return Outcome(Action.BACKOFF, reason, status)


def pipeline_outcome(outcomes: Iterable[Outcome]) -> Outcome | None:
    """Of the halting outcomes of one round (several requests in flight), the one that
    decides the pipeline's wait: a refused token over a Retry-After (the longest) over a
    plain failure. None when nothing halted."""
    halting = [o for o in outcomes if o.halts]
    if not halting:
        return None
    rank = {Action.AUTH_PAUSE: 2, Action.RETRY_AFTER: 1, Action.BACKOFF: 0}
    return max(halting, key=lambda o: (rank[o.action], o.wait or 0.0))


class Backoff:
    """How long the pipeline waits after a failed round. It counts rounds, not requests:
    four requests failing together are one failure, not four. (A 429 with a Retry-After
    is not a failure: :class:`Pace` answers it.)"""

    def __init__(
        self,
        base: float = BACKOFF_BASE_S,
        cap: float = BACKOFF_CAP_S,
        rand: Callable[[], float] = random.random,
        spread: float = 0.0,
    ) -> None:
        """``spread``: a Retry-After (or a pause) is lengthened by up to this share of
        itself, at random, so that many clients told the same wait do not all return in
        the same instant."""
        self.base = base
        self.cap = cap
        self.spread = spread
        self._rand = rand
        self.failures = 0

    def reset(self) -> None:
        """A round went through: the next failure starts from the bottom again."""
        self.failures = 0

    def wait_after(self, outcome: Outcome) -> float:
        """One failed round: the seconds to wait before the next. A Retry-After (a 503's)
        or an auth pause is taken as given (lengthened by up to ``spread`` of itself);
        anything else backs off exponentially, capped, with full jitter (applied after the
        cap)."""
        self.failures += 1
        if outcome.wait is not None:
            extra = self.spread * self._rand() if self.spread else 0.0
            return max(outcome.wait * (1.0 + extra), MIN_WAIT_S)
        return full_jitter_backoff(self.failures, self._rand, self.base, self.cap)


def full_jitter_backoff(
    failures: int,
    rand: Callable[[], float] = random.random,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
) -> float:
    """The wait after ``failures`` failed rounds in a row (1 for the first): a ceiling of
    ``base * 2^(failures - 1)`` (1, 2, 4, 8 ... s), capped, then jittered over the whole
    range (never below 0.1 s: no hot loop)."""
    ceiling = min(cap, base * 2.0 ** min(max(failures - 1, 0), 30))
    return max(MIN_WAIT_S, ceiling * float(rand()))


class SendWindow:
    """How many events the next round may carry: after a start or a halt one, doubling
    with each round that goes through, up to ``limit`` (a slow start). A fleet coming back
    together (an outage ends, a reboot) first sends one request per daemon, not a burst
    of ``in_flight`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._size = 1

    def size(self) -> int:
        return self._size

    def went_through(self) -> None:
        self._size = min(self.limit, self._size * 2)

    def halted(self) -> None:
        self._size = 1


# -- the pace: the organisation's limit, shared with every other daemon ---------------------
# Tuned with tests/bench/fleet.py (10,000 daemons, one limit of 1,000 requests/s, after a
# 1-hour outage and after a fleet-wide reboot); the comments say what each one does.

MIN_PACE = 1.0  # requests/s: a daemon that would have to send slower waits its turn instead
PACE_GROWTH = 0.02  # the pace grows by this share with every request accepted,
PACE_CUT = 0.5  # and is cut by this factor at every 429
ROUNDS_ABOVE = 50.0  # requests/s: paced this fast, the pipeline sends in rounds again
BIG_USER = 5  # accepted in the last second: refused now, the window was this daemon's
TURN_WAIT_PER_EVENT_S = 1.5  # waiting its turn: this long per queued request (at MIN_PACE),
TURN_WAIT_MIN_S = 2.0  # at least this,
TURN_WAIT_MAX_S = 120.0  # at most this,
TURN_WAIT_SPREAD = 0.1  # give or take this share, at random
START_SPREAD_S = 4.0  # refused before its first success: back after the start-up jitter
LONG_FAILURE = 3  # failed rounds in a row, over at least OUTAGE_S, make an outage:
OUTAGE_S = 30.0  # come back from it paced (a blip of a few seconds is no outage)


class PaceMode(StrEnum):
    ROUNDS = "rounds"  # as fast as the send window and in_flight allow
    PACED = "paced"  # one request at a time, at a learned rate
    WAITING = "waiting"  # its turn to come: one request after a wait


class Pace:
    """How the pipeline sends while the organisation's limit is shared: how many requests
    the next round may carry, and how long to wait after a round.

    - In rounds (``SendWindow`` slow start, up to ``in_flight`` at once): at start-up, and
      for a daemon that has the window mostly to itself: refused after ``BIG_USER``
      requests accepted in the last second, it waits the Retry-After exactly and goes on
      (a lone daemon keeps its whole limit).
    - Paced: refused with fewer accepted, it sends one request at a time, at random gaps
      around 1 / pace; the pace starts at what the last second accepted, grows with every
      request accepted and is cut at every 429. Spread over the second, a fleet's requests
      leave the window's end to the refused, instead of filling it at its start.
    - Waiting its turn: refused with nothing accepted, or paced below ``MIN_PACE``, it
      waits in proportion to its queue (a daemon with much to send would hold the window
      long), then sends one request; accepted, it is paced at ``MIN_PACE``. Refused before
      anything went through since it started (a fleet restarting together), it comes back
      once the start-up jitter is over, spread over ``START_SPREAD_S``.
    - After an outage (``LONG_FAILURE`` failed rounds in a row over ``OUTAGE_S``), the first
      success is paced at ``MIN_PACE``: a fleet comes back as the service recovers, not in
      rounds.
    - A paced pipeline that has sent everything (:meth:`drained`) goes back to rounds: the
      pace is for a backlog, not for the next event an hour later.

    The caller says what each round's answers were (:meth:`after_round`) and when nothing
    is left to send (:meth:`drained`). Pure: ``now`` (seconds, monotonic) and randomness
    come in from outside."""

    def __init__(
        self,
        window_limit: int,
        *,
        now: float,
        start_jitter: float = 0.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.window = SendWindow(window_limit)
        self.backoff = Backoff(rand=rand)
        self.mode = PaceMode.ROUNDS
        self.rate = 0.0  # requests/s, while paced
        self._rand = rand
        self._start_until = now + start_jitter
        self._accepted: deque[float] = deque()  # when requests were accepted, last second
        self._failed_rounds = 0
        self._failing_since = now
        self._sent_at = now  # when the current round went
        self._accepted_since_start = False
        self._start_refusals = 0

    def size(self) -> int:
        """Requests the next round may carry."""
        return self.window.size() if self.mode is PaceMode.ROUNDS else 1

    def drained(self) -> None:
        """Nothing is left to send: a paced pipeline goes back to rounds (with the window
        it was halted to when pacing began: a slow start)."""
        if self.mode is PaceMode.PACED:
            self.mode = PaceMode.ROUNDS

    def after_round(
        self,
        now: float,
        outcomes: Sequence[Outcome],
        queued: Callable[[], int],
        answered: Sequence[float] | None = None,
    ) -> float:
        """A round's outcomes (its requests, the last answered at ``now``; ``answered``:
        when each was, if known): the seconds to wait before the next, 0 for at once.
        ``queued``: how many requests' worth of events wait, asked only when it matters."""
        times = sorted(
            t
            for o, t in zip(outcomes, answered or [now] * len(outcomes), strict=False)
            if o.action is Action.DELIVERED
        )
        accepted = len(times)
        self._accepted_since_start = self._accepted_since_start or accepted > 0
        self._accepted.extend(times)
        while self._accepted and self._accepted[0] < now - 1.0:
            self._accepted.popleft()
        halting = pipeline_outcome(outcomes)
        if halting is None:
            wait = self._went_through(now, accepted)
            if self.mode is PaceMode.PACED:
                # The gap runs from the round's start: its round trip is part of it.
                wait = max(wait - (now - self._sent_at), 0.0)
        elif halting.status == 429 and halting.wait is not None:
            wait = self._refused(now, halting.wait, queued)
        else:
            self.window.halted()
            if not self._failed_rounds:
                self._failing_since = now
            self._failed_rounds += 1
            wait = self.backoff.wait_after(halting)
        self._sent_at = now + wait  # when the next round goes
        return wait

    def _went_through(self, now: float, accepted: int) -> float:
        self.backoff.reset()
        back_from_outage = (
            self._failed_rounds >= LONG_FAILURE and now - self._failing_since >= OUTAGE_S
        )
        self._failed_rounds = 0
        if not accepted:  # dead letters, a split: the service answers, nothing went through
            return (0.5 + self._rand()) / self.rate if self.mode is PaceMode.PACED else 0.0
        if back_from_outage or self.mode is PaceMode.WAITING:
            self.mode, self.rate = PaceMode.PACED, MIN_PACE  # its turn came
        elif self.mode is PaceMode.PACED:
            self.rate *= (1.0 + PACE_GROWTH) ** accepted
            if self.rate >= ROUNDS_ABOVE:
                self.mode = PaceMode.ROUNDS  # the window restarts small: halted at the 429
                return 0.0
        else:
            self.window.went_through()
            return 0.0
        return (0.5 + self._rand()) / self.rate

    def _refused(self, now: float, retry_after: float, queued: Callable[[], int]) -> float:
        self.window.halted()
        self.backoff.reset()
        self._failed_rounds = 0
        got = len(self._accepted)
        if got >= BIG_USER:
            self.mode = PaceMode.ROUNDS  # the window was mostly this daemon's: go on
            return max(retry_after, MIN_WAIT_S)
        if self.mode is PaceMode.ROUNDS and got:
            self.mode, self.rate = PaceMode.PACED, max(MIN_PACE, float(got))
        elif self.mode is PaceMode.PACED and self.rate * PACE_CUT >= MIN_PACE:
            self.rate *= PACE_CUT
        else:
            self.mode = PaceMode.WAITING
            return self._turn(now, retry_after, queued)
        return max(retry_after, MIN_WAIT_S) + self._rand() / self.rate

    def _turn(self, now: float, retry_after: float, queued: Callable[[], int]) -> float:
        """The wait of a daemon waiting its turn."""
        if not self._accepted_since_start:
            # Refused before anything went through since the start: a fleet restarting
            # together. Back once the start-up jitter is over, spread a little; refused
            # again and again, spread twice as wide each time (a fleet larger than its
            # jitter spreads itself).
            doublings = max(self._start_refusals - 1, 0)
            spread = min(START_SPREAD_S * 2.0**doublings, TURN_WAIT_MAX_S)
            self._start_refusals = min(self._start_refusals + 1, 30)
            wait = max(self._start_until - now, 0.0) + spread * self._rand()
            return max(retry_after, wait, MIN_WAIT_S)
        turn = TURN_WAIT_PER_EVENT_S * max(queued(), 1) / MIN_PACE
        turn = min(max(turn, TURN_WAIT_MIN_S), TURN_WAIT_MAX_S)
        turn *= 1.0 + TURN_WAIT_SPREAD * (2.0 * self._rand() - 1.0)
        return max(retry_after, turn, MIN_WAIT_S)
