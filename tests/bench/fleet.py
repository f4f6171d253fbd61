#!/usr/bin/env python3
"""Benchmark (a simulation): does a whole fleet of quintd daemons recover gently?

10,000 daemons, each with the real delivery policy objects (``classify`` and the shipper's
``Pace`` from quintd.delivery_policy, used as the shipper uses them, and the start-up
jitter of the default settings), on a virtual clock: no threads, no sockets. One
organisation-wide limit of 1,000 requests/s (fixed one-second windows) answers 429 with a
Retry-After to the next window once exceeded; the network round trip is 50 ms.

Each daemon sends as the shipper does at the default settings: one event per request,
up to ``in_flight`` (4) requests at once but one per session (3 sessions each), round after
round while events wait; a round in which anything halted waits as the policy says.
Each daemon produces an event a minute, at its own phase.

Scenarios:
- outage: the ingest service fails every request (503, no Retry-After) for an hour, then
  recovers; every daemon has an hour of events queued;
- reboot: every daemon starts in the same second, each with 3 events queued (the `ended`
  of the sessions that were live at shutdown).

Reported for the recovery (from the end of the outage, or the reboot, until every event
queued by then has been accepted): time to drain, accepted requests per second against
the limit (goal >= 90%), share of requests answered 429 (goal <= 10%), and the largest
number of requests arriving in any one second (goal <= 2x the limit).

Scale: the mean behaviour is the same for a fleet N times its limit in requests/s (here
10x); a run at --daemons 1000 --limit 100 is ten times faster, but its per-second noise is
larger (the reboot's accepted share drops a few points there). Other ratios show how the
tuning carries over: --daemons 5000 (half the fleet) or 20000 (twice).

Run: python3 tests/bench/fleet.py [--daemons 10000] [--limit 1000] [--seed 1]
     [--start-jitter SECONDS]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from quintd.delivery_policy import (
    Action,
    Answer,
    Outcome,
    Pace,
    classify,
    full_jitter_backoff,
    pipeline_outcome,
)
from quintd.shipper import DeliverySettings

RTT_S = 0.05
BATCH_SIZE = DeliverySettings().batch_size  # events in a round (at most)
SESSIONS = 3  # distinct sessions in a daemon's queue: requests it may have in flight
EVENT_EVERY_S = 60.0
REBOOT_BACKLOG = 3  # the `ended` of the sessions live at shutdown
SHUTDOWN_BEFORE_S = 5.0  # the reboot's backlog was made this long before the start
EPOCH = 1_800_000_000.0  # the virtual clock's origin, in epoch seconds (HTTP dates)


class Service:
    """The organisation's ingest service: a limit per one-second window, and outages."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.down: tuple[float, float] | None = None
        self.arrivals: Counter[int] = Counter()
        self.accepted: Counter[int] = Counter()
        self.limited: Counter[int] = Counter()

    def answer(self, t: float) -> Answer:
        second = int(t)
        self.arrivals[second] += 1
        if self.down is not None and self.down[0] <= t < self.down[1]:
            return Answer(503, "unavailable")
        if self.arrivals[second] - self.limited[second] > self.limit:
            self.limited[second] += 1
            retry_after = max(1, math.ceil(second + 1 - t))
            return Answer(429, "rate limited", str(retry_after))
        self.accepted[second] += 1
        return Answer(200)


class Policy(Protocol):
    """How one daemon's pipeline paces itself: the shipped policy below, or an alternative
    (tests/bench/fleet_policies.py)."""

    next_at: float  # no attempt before (a wait the policy set)

    def count(self, t: float, queued: int, oldest: float) -> int:
        """Requests this round may carry (before the session and in-flight limits);
        ``oldest``: when the oldest queued event was made."""
        ...

    def settle(self, t: float, outcomes: list[Outcome], delivered: int) -> None:
        """A round ended: set ``next_at``."""
        ...


class ShippedPolicy:
    """quintd's: the shipper's ``Pace``, as the shipper uses it: a round carries
    ``pace.size()`` requests; when its answers are in, ``pace.after_round`` says how long
    to wait before the next."""

    def __init__(self, rand: random.Random, *, start_jitter: float) -> None:
        self.pace = Pace(BATCH_SIZE, now=0.0, start_jitter=start_jitter, rand=rand.random)
        self.next_at = 0.0
        self.queued = 0

    def count(self, t: float, queued: int, oldest: float) -> int:
        self.queued = queued
        return self.pace.size()

    def settle(self, t: float, outcomes: list[Outcome], delivered: int) -> None:
        answered = t + RTT_S
        queued = self.queued - delivered
        self.next_at = answered + self.pace.after_round(answered, outcomes, lambda: queued)

    def drained(self) -> None:
        self.pace.drained()


class BeforePolicy:
    """The policy before this benchmark tuned it: every round ``in_flight`` requests, a
    429 waited out exactly, failures backed off with full jitter, no start-up jitter."""

    def __init__(self, rand: random.Random, *, in_flight: int) -> None:
        self.rand = rand
        self.in_flight = in_flight
        self.failures = 0
        self.next_at = 0.0

    def count(self, t: float, queued: int, oldest: float) -> int:
        return self.in_flight

    def settle(self, t: float, outcomes: list[Outcome], delivered: int) -> None:
        halting = pipeline_outcome(outcomes)
        wait = 0.0
        if halting is not None and halting.wait is not None:
            wait = halting.wait
        elif halting is not None:
            self.failures += 1
            wait = full_jitter_backoff(self.failures, self.rand.random)
        else:
            self.failures = 0
        self.next_at = t + RTT_S + wait


@dataclass
class Daemon:
    phase: float
    policy: Policy
    backlog: int = 0  # events queued before the simulation
    accepted: int = 0
    scheduled: bool = False
    target: int = 0  # events to deliver for the recovery to count as done
    done_at: float | None = None

    def _made(self, t: float) -> int:
        """Events made by time t (the small term: t may be exactly an event's time, as
        computed by next_event_at, give or take a rounding)."""
        return 0 if t < self.phase else int((t - self.phase) / EVENT_EVERY_S + 1e-9) + 1

    def produced(self, t: float) -> int:
        return self.backlog + self._made(t)

    def next_event_at(self, t: float) -> float:
        return self.phase + self._made(t) * EVENT_EVERY_S

    def oldest_queued(self) -> float:
        """When the oldest event not yet accepted was made (the reboot's backlog: at the
        shutdown, just before the simulation starts)."""
        if self.accepted < self.backlog:
            return -SHUTDOWN_BEFORE_S
        return self.phase + (self.accepted - self.backlog) * EVENT_EVERY_S


@dataclass
class Result:
    name: str
    drain_s: float
    accepted_share: float
    limited_share: float
    max_wave: int
    requests: int


def simulate(
    name: str,
    daemons: int,
    limit: int,
    seed: int,
    *,
    outage: tuple[float, float] | None,
    reboot_backlog: int,
    start_jitter: float,
    in_flight: int,
    policy: Callable[[random.Random], Policy] | None = None,
) -> Result:
    """``policy``: makes each daemon's policy from its own random source (the shipped one
    when None)."""
    make = policy or (lambda rand: ShippedPolicy(rand, start_jitter=start_jitter))
    rng = random.Random(seed)
    service = Service(limit)
    service.down = outage
    fleet = [
        Daemon(
            phase=rng.uniform(0, EVENT_EVERY_S),
            policy=make(random.Random(rng.random())),
            backlog=reboot_backlog,
        )
        for _ in range(daemons)
    ]
    start = outage[1] if outage is not None else 0.0
    heap: list[tuple[float, int]] = []
    for i, d in enumerate(fleet):
        # Every daemon starts in the same second; its first attempt is spread over the
        # start-up jitter, as the shipper does.
        begin = rng.random() + start_jitter * rng.random()
        d.policy.next_at = begin
        d.scheduled = True
        heapq.heappush(heap, (begin, i))
    pending_targets = daemons
    requests_in_recovery = 0
    limited_in_recovery = 0
    end = start
    horizon = start + 6 * 3600
    while heap and pending_targets:
        t, i = heapq.heappop(heap)
        if t > horizon:
            break
        d = fleet[i]
        p = d.policy
        d.scheduled = False
        if t >= start and d.target == 0:
            d.target = d.produced(start)
        queued = d.produced(t) - d.accepted
        if queued <= 0:
            drained = getattr(p, "drained", None)  # the shipper tells its pace so
            if drained is not None:
                drained()
            _schedule(heap, d, i, max(d.next_event_at(t), p.next_at))
            continue
        if t < p.next_at:
            _schedule(heap, d, i, p.next_at)
            continue
        # One RTT of the round: up to one request per session in flight at once.
        count = min(p.count(t, queued, d.oldest_queued()), SESSIONS, in_flight, queued)
        outcomes: list[Outcome] = []
        for _ in range(count):
            answer = service.answer(t)
            outcomes.append(classify(answer, events=1, now=EPOCH + t))
        delivered = sum(1 for o in outcomes if o.action is Action.DELIVERED)
        d.accepted += delivered
        if t >= start:
            requests_in_recovery += count
            limited_in_recovery += sum(1 for o in outcomes if o.status == 429)
        p.settle(t, outcomes, delivered)
        if d.done_at is None and t >= start and d.accepted >= d.target:
            d.done_at = t + RTT_S
            pending_targets -= 1
            end = max(end, d.done_at)
        _schedule(heap, d, i, p.next_at)
    drain = end - start
    seconds = range(int(start), int(end) + 1)
    accepted = sum(service.accepted[s] for s in seconds)
    return Result(
        name=name,
        drain_s=drain,
        accepted_share=accepted / (limit * max(drain, 1.0)),
        limited_share=limited_in_recovery / max(requests_in_recovery, 1),
        max_wave=max((service.arrivals[s] for s in seconds), default=0),
        requests=requests_in_recovery,
    )


def _schedule(heap: list[tuple[float, int]], d: Daemon, i: int, at: float) -> None:
    if not d.scheduled:
        d.scheduled = True
        heapq.heappush(heap, (at, i))


def run_scenarios(common: dict[str, float], *, before: bool) -> list[Result]:
    label = " (before)" if before else ""
    in_flight = int(common["in_flight"])
    policy = (lambda rand: BeforePolicy(rand, in_flight=in_flight)) if before else None
    return [
        simulate(
            "1 h outage, then recovery" + label,
            outage=(60.0, 3660.0),
            reboot_backlog=0,
            policy=policy,
            **common,  # type: ignore[arg-type]
        ),
        simulate(
            "fleet-wide reboot, same second" + label,
            outage=None,
            reboot_backlog=REBOOT_BACKLOG,
            policy=policy,
            **common,  # type: ignore[arg-type]
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start-jitter", type=float, default=DeliverySettings().start_jitter)
    parser.add_argument(
        "--before", action="store_true", help="also the policy before tuning, for comparison"
    )
    args = parser.parse_args()
    defaults = DeliverySettings()
    common = dict(
        daemons=args.daemons,
        limit=args.limit,
        seed=args.seed,
        start_jitter=args.start_jitter,
        in_flight=defaults.in_flight,
    )
    results = run_scenarios(common, before=False)
    if args.before:
        results += run_scenarios(dict(common, start_jitter=0.0), before=True)
    print(
        f"{args.daemons} daemons, limit {args.limit} requests/s for the organisation, "
        f"start_jitter {args.start_jitter:g} s, in_flight {defaults.in_flight}, "
        f"RTT {RTT_S * 1000:.0f} ms, one event per request"
    )
    print()
    header = f"{'scenario':43}{'drain s':>9}{'accepted/limit':>16}{'429 share':>11}"
    print(header + f"{'max wave/s':>12}{'requests':>10}")
    for r in results:
        print(
            f"{r.name:43}{r.drain_s:>9.0f}{r.accepted_share:>15.0%} {r.limited_share:>10.1%}"
            f"{r.max_wave:>12}{r.requests:>10}"
        )
    print()
    print(f"goals: accepted/limit >= 90%, 429 share <= 10%, max wave <= {2 * args.limit}/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
