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
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Iterable
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


# A refused pipeline that got nothing through since (a 429 after a 429): how long it adds
# to the Retry-After, at random, before trying again; doubling with each refusal, capped.
# Tuned with tests/bench/fleet.py (10,000 daemons against one organisation's limit).
REFUSED_SPREAD_S = 32.0
REFUSED_SPREAD_CAP_S = 120.0


class Backoff:
    """How long the pipeline waits after a failed round. It counts rounds, not requests:
    four requests failing together are one failure, not four.

    A refusal by the organisation's limit (429 with a Retry-After) right after requests
    went through is waited out exactly: the pipeline had its share of the window, and a
    daemon alone keeps the whole limit. Refusals with nothing through in between add a
    random spread over a range that doubles each time (``REFUSED_SPREAD_S``, capped): many
    daemons refused together come back over minutes, not all at the next window."""

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
        self.refusals = 0  # 429s in a row with nothing through in between
        self._through = False  # requests went through since the last wait

    def reset(self) -> None:
        """A round went through: the next failure starts from the bottom again (and the
        next refusal is one right after requests went through)."""
        self.failures = 0
        self._through = True

    def wait_after(self, outcome: Outcome, went_through: int = 0) -> float:
        """One failed round (``went_through``: its requests that were accepted): the
        seconds to wait before the next. A Retry-After or an auth pause is taken as given
        (lengthened by up to ``spread`` of itself, and by the refusal spread above);
        anything else backs off exponentially, capped, with full jitter (applied after the
        cap)."""
        self.failures += 1
        through, self._through = self._through or went_through > 0, False
        if outcome.wait is not None:
            extra = self.spread * self._rand() if self.spread else 0.0
            wait = max(outcome.wait * (1.0 + extra), MIN_WAIT_S)
            if outcome.status == 429:
                if through:
                    self.refusals = 0
                else:
                    ceiling = min(REFUSED_SPREAD_CAP_S, REFUSED_SPREAD_S * 2.0**self.refusals)
                    self.refusals = min(self.refusals + 1, 30)
                    wait += ceiling * self._rand()
            return wait
        return full_jitter_backoff(self.failures, self._rand, self.base, self.cap)


def full_jitter_backoff(
    failures: int,
    rand: Callable[[], float] = random.random,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
) -> float:
    """The wait after ``failures`` failed rounds in a row: a ceiling of ``base * 2^n``,
    capped, then jittered over the whole range (never below 0.1 s: no hot loop)."""
    ceiling = min(cap, base * 2.0 ** min(failures, 30))
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
