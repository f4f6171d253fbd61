#!/usr/bin/env python3
"""Benchmark (a simulation): the delivery policies tried against fleet.py's goals, and where
each lands. Not a test: a record of the search, to rerun when the policy or the goals move.

fleet.py's goals for a fleet of daemons ten times its organisation's limit: accepted
requests >= 90% of the limit, <= 10% of requests answered 429, no second above 2x the limit,
after a 1-hour outage and after a fleet-wide reboot. Every policy below runs through
fleet.py's own simulation (the same service, fleet, scenarios and seed), at full scale by
default (at --daemons 1000 --limit 100 it is ten times faster, and the per-second noise is
larger: the reboot fares worse there).

- "shipped": quintd's ``Pace`` (quintd/delivery_policy.py): rounds while the window is the
  daemon's, paced at a learned rate when refused after a few accepted, waiting its turn
  (in proportion to its queue) when refused with none, paced from the minimum after an
  outage, back after the start-up jitter when refused before its first success.
- "0.2": the policy before it: rounds with a slow start, a refusal after requests went
  through waited out exactly, refusals with nothing through spread over a doubling range
  (32 s, capped at 120 s), a start-up jitter of 30 s; and two variants of it: a longer
  spread (up to 600 s), and the constants that made the reboot alone meet every goal at
  1/10 scale (spread from 2 s up to 240 s, start-up jitter 35 s; not at full scale).
- "0.2 staggered": 0.2 sending one request at a time every RTT/window instead of a round
  of up to 3 together (a full window refuses one request of a daemon, not its round), and
  a refusal right after requests went through keeps the window; "share-paced": on top,
  after that refusal it sends evenly at the rate it got accepted in the last second.
- paced without waiting turns (every daemon paced, never below a floor):
  - "x(1+g)": the rate grows 2% per accepted request and 0.4% per second, halves per
    429; a daemon refused before anything went through starts at 0.2 requests/s;
  - "8x fill": it starts at 8 times the rate the daemon's queue filled (queued events
    over the age of the oldest), grows 2% per accepted request, halves per 429, never
    below 2x the fill rate; "convex": the growth speeds up with the time since the last
    429 (squared, per minute);
  - "horizon": the rate is the queue over a drain horizon (300 s at the first 429), which
    shrinks 2% per accepted request (faster with time since the last 429) and doubles per
    429; never below 3x the fill rate.

Run: python3 tests/bench/fleet_policies.py [--daemons 10000] [--limit 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fleet

from quintd.delivery_policy import (
    Backoff,
    Outcome,
    SendWindow,
    full_jitter_backoff,
    pipeline_outcome,
)
from quintd.shipper import DeliverySettings

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
            self.next_at = t + fleet.RTT_S + self.backoff.wait_after(halting)
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


class Previous:
    """quintd 0.2's policy (``stagger``: one request at a time; ``share_paced``: then at
    the rate the last second accepted)."""

    def __init__(
        self,
        rand: random.Random,
        *,
        spread: float = 32.0,
        spread_cap: float = 120.0,
        stagger: bool = False,
        share_paced: bool = False,
    ) -> None:
        self.rand = rand
        self.spread, self.spread_cap = spread, spread_cap
        self.stagger, self.share_paced = stagger, share_paced
        self.window = SendWindow(fleet.BATCH_SIZE)
        self.next_at = 0.0
        self.failures = 0
        self.refusals = 0  # 429s in a row with nothing through in between
        self.through = False  # requests went through since the last wait
        self.pace: float | None = None
        self.accepted_at: deque[float] = deque()

    def count(self, t: float, queued: int, oldest: float) -> int:
        return 1 if self.stagger else self.window.size()

    def settle(self, t: float, outcomes: list[Outcome], delivered: int) -> None:
        self.accepted_at.extend([t] * delivered)
        while self.accepted_at and self.accepted_at[0] < t - 1.0:
            self.accepted_at.popleft()
        halting = pipeline_outcome(outcomes)
        through, self.through = self.through or delivered > 0, False
        if halting is None:
            self.failures, self.through = 0, True
            self.window.went_through()
            if self.pace:
                self.pace *= 1.05
                gap = (0.5 + self.rand.random()) / self.pace
                self.next_at = t + max(fleet.RTT_S / 3, gap)
            elif self.stagger:
                self.next_at = t + fleet.RTT_S / min(self.window.size(), fleet.SESSIONS)
            else:
                self.next_at = t + fleet.RTT_S
            return
        self.pace = None
        if halting.status == 429 and halting.wait is not None:
            wait = halting.wait
            if through:
                self.refusals = 0
                if self.share_paced:
                    self.pace = float(len(self.accepted_at)) or None
                if not self.stagger:
                    self.window.halted()
            else:
                self.window.halted()
                ceiling = min(self.spread_cap, self.spread * 2.0**self.refusals)
                self.refusals = min(self.refusals + 1, 30)
                wait += ceiling * self.rand.random()
        else:
            self.window.halted()
            self.failures += 1
            wait = full_jitter_backoff(self.failures, self.rand.random)
        self.next_at = t + fleet.RTT_S + wait
        if self.pace:
            self.next_at += self.rand.random() / self.pace


def paced(pacing: Pacing) -> Callable[[random.Random], fleet.Policy]:
    return lambda rand: Paced(rand, pacing)


Maker = Callable[[random.Random], fleet.Policy] | None
CANDIDATES: list[tuple[str, Maker, float]] = [  # name, policy, start-up jitter
    ("shipped", None, DeliverySettings().start_jitter),
    ("0.2", lambda rand: Previous(rand), 30.0),
    ("0.2, refusal spread up to 600 s", lambda rand: Previous(rand, spread_cap=600.0), 30.0),
    (
        "0.2, spread from 2 s, jitter 35 s",
        lambda rand: Previous(rand, spread=2.0, spread_cap=240.0),
        35.0,
    ),
    ("0.2 staggered", lambda rand: Previous(rand, stagger=True), 30.0),
    (
        "0.2 staggered, share-paced",
        lambda rand: Previous(rand, stagger=True, share_paced=True),
        30.0,
    ),
    ("paced x(1+g)", paced(Pacing(per_second=0.004)), 30.0),
    ("paced 8x fill", paced(Pacing(fill_multiple=8.0, floor_fill=2.0)), 30.0),
    (
        "paced 8x fill, convex",
        paced(Pacing(fill_multiple=8.0, floor_fill=2.0, convex_after=60.0)),
        30.0,
    ),
    ("paced horizon", paced(Pacing(horizon=300.0, floor_fill=3.0, convex_after=60.0)), 30.0),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=1000)
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
    for name, policy, jitter in CANDIDATES:
        common = dict(
            daemons=args.daemons,
            limit=args.limit,
            seed=args.seed,
            start_jitter=jitter,
            in_flight=DeliverySettings().in_flight,
            policy=policy,
        )
        for scenario, outage, backlog in (
            ("outage", (60.0, 3660.0), 0),
            ("reboot", None, fleet.REBOOT_BACKLOG),
        ):
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
                f"{r.limited_share:>11.1%}{wave:>11.2f}x  {'all met' if met else 'missed'}",
                flush=True,
            )
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
