#!/usr/bin/env python3
"""Benchmark (a simulation): the delivery policies tried against fleet.py's goals, and where
each lands. Not a test: a record of the search, to rerun when the policy or the goals move.

fleet.py's goals for a fleet of daemons ten times its organisation's limit: accepted
requests >= 90% of the limit, <= 10% of requests answered 429, no second above 2x the limit.
The shipped policy meets the first and third and misses the second. Every policy below is
run through fleet.py's own simulation (the same service, fleet, scenarios and seed), at
--daemons 1000 --limit 100 by default: the same fleet ten times faster to simulate
(fleet.py's docstring says why the figures hold).

The paced policies share one shape: a daemon sends as the shipper does (slow start, as
fast as the window allows) until its first 429; from then on it sends one request at a
time, at a rate it adjusts, at random gaps around 1/rate, and waits at least the
Retry-After. What differs is where the rate starts and how it moves:
- "x(1+g)": the rate grows 2% per accepted request and 0.4% per second, halves per 429;
  a daemon refused before anything went through starts at 0.2 requests/s;
- "8x fill": it starts at 8 times the rate the daemon's queue filled (queued events over
  the age of the oldest), grows 2% per accepted request, halves per 429, never below
  2x the fill rate;
- "8x fill, convex": as above, and the growth per accepted request speeds up with the
  time since the last 429 (squared, per minute);
- "horizon": the rate is the queue over a drain horizon (300 s at the first 429), which
  shrinks 2% per accepted request (faster with time since the last 429) and doubles per
  429; never below 3x the fill rate.
And the shipped policy with other constants: a longer refusal spread (600 s), and the
constants that make the reboot alone meet every goal (refusal spread from 2 s, up to
240 s, start-up jitter 35 s). And two that change how the shipped policy sends, not how it
waits:
- "staggered": the same pipeline rate, one request at a time every RTT/window instead
  of a round of up to 3 together, and a refusal right after requests went through keeps
  the window: a full window refuses one request of a daemon, not its whole round;
- "staggered, share-paced": as above, and after that refusal the daemon sends evenly at
  the rate it got accepted in the last second (growing 5% per accepted request), so the
  window fills at its end, not at its start.

Run: python3 tests/bench/fleet_policies.py [--daemons 1000] [--limit 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fleet

from quintd import delivery_policy
from quintd.config import QueueConfig
from quintd.delivery_policy import Backoff, Outcome, SendWindow, pipeline_outcome

UNPACED_ABOVE = 50.0  # requests/s: a rate this high sends as the shipper does again


@dataclass(frozen=True)
class Pacing:
    cut: float = 0.5  # the rate is multiplied by this per 429
    per_accepted: float = 0.02  # relative growth per accepted request
    per_second: float = 0.0  # relative growth per second
    convex_after: float = 0.0  # seconds: growth per accepted request speeds up after this
    first_rate: float = 0.2  # requests/s after a 429 with nothing through
    fill_multiple: float = 0.0  # the first rate: this times the queue's fill rate
    floor_fill: float = 0.0  # never below this times the fill rate
    horizon: float = 0.0  # > 0: the rate is queued / horizon, and the horizon moves


class Paced:
    def __init__(self, rand: random.Random, pacing: Pacing) -> None:
        self.rand = rand
        self.p = pacing
        self.backoff = Backoff(rand=rand.random)
        self.window = SendWindow(fleet.BATCH_SIZE)
        self.next_at = 0.0
        self.value: float | None = None  # the rate, or the horizon; None: not paced
        self.last_seen = 0.0
        self.last_429 = 0.0
        self.queued = 0
        self.oldest = 0.0

    def count(self, t: float, queued: int, oldest: float) -> int:
        self.queued, self.oldest = queued, oldest
        return self.window.size() if self.value is None else 1

    def _fill(self, t: float) -> float:
        return self.queued / max(1.0, t - self.oldest)

    def _rate(self, t: float) -> float:
        assert self.value is not None
        rate = self.queued / self.value if self.p.horizon else self.value
        return max(rate, self.p.floor_fill * self._fill(t), 1 / 600)

    def settle(self, t: float, outcomes: list[Outcome], delivered: int) -> None:
        elapsed, self.last_seen = t - self.last_seen, t
        halting = pipeline_outcome(outcomes)
        if halting is not None and halting.status == 429 and halting.wait is not None:
            self.window.halted()
            self.backoff.reset()
            self.last_429 = t
            if self.p.horizon:
                self.value = self.p.horizon if self.value is None else self.value / self.p.cut
            elif self.value is None:
                fill = self.p.fill_multiple * self._fill(t)
                self.value = fill or self.p.first_rate
            else:
                self.value *= self.p.cut
            self._pace(t, halting.wait)
            return
        if halting is not None:
            self.window.halted()
            self.next_at = t + fleet.RTT_S + self.backoff.wait_after(halting, delivered)
            return
        self.backoff.reset()
        self.window.went_through()
        if self.value is not None:
            per = self.p.per_accepted
            if self.p.convex_after:
                per *= max(1.0, (t - self.last_429) / self.p.convex_after) ** 2
            growth = (1 + per) ** delivered * math.exp(self.p.per_second * elapsed)
            self.value = self.value / growth if self.p.horizon else self.value * growth
        self._pace(t, 0.0)

    def _pace(self, t: float, at_least: float) -> None:
        if self.value is not None and self._rate(t) >= UNPACED_ABOVE:
            self.value = None
        if self.value is None:
            self.next_at = t + fleet.RTT_S + at_least
            return
        gap = 2 * self.rand.random() / self._rate(t)
        self.next_at = t + max(fleet.RTT_S, fleet.RTT_S + at_least, gap)


class Staggered:
    def __init__(self, rand: random.Random, *, share_paced: bool = False) -> None:
        self.rand = rand
        self.share_paced = share_paced
        self.backoff = Backoff(rand=rand.random)
        self.window = SendWindow(fleet.BATCH_SIZE)
        self.next_at = 0.0
        self.pace: float | None = None  # requests/s, after a refusal that followed some
        self.accepted_at: deque[float] = deque()

    def count(self, t: float, queued: int, oldest: float) -> int:
        return 1

    def settle(self, t: float, outcomes: list[Outcome], delivered: int) -> None:
        self.accepted_at.extend([t] * delivered)
        while self.accepted_at and self.accepted_at[0] < t - 1.0:
            self.accepted_at.popleft()
        through = self.backoff._through or delivered > 0
        halting = pipeline_outcome(outcomes)
        if halting is not None:
            refused_after_through = halting.status == 429 and through
            wait = self.backoff.wait_after(halting, delivered)
            self.pace = None
            if refused_after_through and self.share_paced:
                self.pace = float(len(self.accepted_at)) or None
            if not refused_after_through:
                self.window.halted()
            self.next_at = t + fleet.RTT_S + wait
            if self.pace:
                self.next_at += self.rand.random() / self.pace
            return
        self.window.went_through()
        self.backoff.reset()
        if self.pace:
            self.pace *= 1.05
            gap = (0.5 + self.rand.random()) / self.pace
            self.next_at = t + max(fleet.RTT_S / 3, gap)
        else:
            self.next_at = t + fleet.RTT_S / min(self.window.size(), fleet.SESSIONS)


@contextmanager
def refusal_spread(first: float, cap: float) -> Iterator[None]:
    saved = delivery_policy.REFUSED_SPREAD_S, delivery_policy.REFUSED_SPREAD_CAP_S
    delivery_policy.REFUSED_SPREAD_S, delivery_policy.REFUSED_SPREAD_CAP_S = first, cap
    try:
        yield
    finally:
        delivery_policy.REFUSED_SPREAD_S, delivery_policy.REFUSED_SPREAD_CAP_S = saved


def paced(pacing: Pacing) -> Callable[[random.Random], fleet.Policy]:
    return lambda rand: Paced(rand, pacing)


CANDIDATES: list[tuple[str, Callable[[random.Random], fleet.Policy] | None, dict[str, float]]] = [
    ("shipped", None, {}),
    ("shipped, refusal spread up to 600 s", None, {"spread_cap": 600.0}),
    (
        "shipped, spread from 2 s, jitter 35 s",
        None,
        {"spread": 2.0, "spread_cap": 240.0, "jitter": 35.0},
    ),
    ("staggered", lambda rand: Staggered(rand), {}),
    ("staggered, share-paced", lambda rand: Staggered(rand, share_paced=True), {}),
    ("paced x(1+g)", paced(Pacing(per_second=0.004)), {}),
    ("paced 8x fill", paced(Pacing(fill_multiple=8.0, floor_fill=2.0)), {}),
    (
        "paced 8x fill, convex",
        paced(Pacing(fill_multiple=8.0, floor_fill=2.0, convex_after=60.0)),
        {},
    ),
    ("paced horizon", paced(Pacing(horizon=300.0, floor_fill=3.0, convex_after=60.0)), {}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{args.daemons} daemons, limit {args.limit} requests/s, fleet.py's simulation; "
        "goals: accepted/limit >= 90%, 429 share <= 10%, max wave <= 2x the limit"
    )
    print()
    print(
        f"{'policy':40}{'scenario':9}{'drain s':>8}{'accepted':>10}{'429 share':>11}"
        f"{'wave/limit':>12}  goals"
    )
    started = time.perf_counter()
    for name, policy, knobs in CANDIDATES:
        spread = knobs.get("spread", delivery_policy.REFUSED_SPREAD_S)
        cap = knobs.get("spread_cap", delivery_policy.REFUSED_SPREAD_CAP_S)
        common = dict(
            daemons=args.daemons,
            limit=args.limit,
            seed=args.seed,
            start_jitter=knobs.get("jitter", QueueConfig.start_jitter),
            in_flight=QueueConfig.in_flight,
            policy=policy,
        )
        for scenario, outage, backlog in (
            ("outage", (60.0, 3660.0), 0),
            ("reboot", None, fleet.REBOOT_BACKLOG),
        ):
            with refusal_spread(spread, cap):
                r = fleet.simulate(
                    scenario,
                    outage=outage,
                    reboot_backlog=backlog,
                    **common,  # type: ignore[arg-type]
                )
            wave = r.max_wave / args.limit
            met = r.accepted_share >= 0.9 and r.limited_share <= 0.1 and wave <= 2
            print(
                f"{name:40}{scenario:9}{r.drain_s:>8.0f}{r.accepted_share:>10.0%}"
                f"{r.limited_share:>11.1%}{wave:>11.2f}x  {'all met' if met else 'missed'}"
            )
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
