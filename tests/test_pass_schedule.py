"""When the main loop passes (quintd/pass_schedule.py), on a clock the test moves: the
interval, early passes after an exit, file events rate-limited, follow-ups while
something is held back, and no burst after a stall."""

from __future__ import annotations

from quintd.pass_schedule import EVENT_PASS_GAP_S, FOLLOW_UP_S, WAKEUP_BURST, PassSchedule


def test_passes_come_every_interval_and_not_before() -> None:
    schedule = PassSchedule(interval=1.0, now=100.0)
    assert schedule.wake_at(100.0) == 101.0
    assert not schedule.due(100.99)
    assert schedule.due(101.0)
    assert schedule.wake_at(101.0) == 102.0
    assert schedule.early_passes == 0


def test_a_stall_brings_one_pass_not_a_burst() -> None:
    schedule = PassSchedule(interval=1.0, now=0.0)
    assert schedule.due(10.5)  # the loop was stuck for ten intervals
    assert not schedule.due(10.6)
    assert schedule.wake_at(10.6) == 11.5


def test_an_exit_brings_a_pass_after_the_gap_counted_early() -> None:
    schedule = PassSchedule(interval=300.0, now=0.0)
    schedule.soon = True
    assert schedule.wake_at(0.01) == EVENT_PASS_GAP_S
    assert not schedule.due(EVENT_PASS_GAP_S / 2)
    assert schedule.due(EVENT_PASS_GAP_S)
    assert schedule.early_passes == 1 and not schedule.soon
    assert schedule.wake_at(1.0) == 300.0  # nothing more asked


def test_file_events_bring_passes_at_their_rate_only() -> None:
    schedule = PassSchedule(interval=300.0, now=0.0)
    now, passes = 1.0, 0
    while now < 11.0:  # a user churning files: an event every 10 ms for 10 s
        schedule.file_soon = True
        if now >= schedule.wake_at(now) and schedule.due(now):
            passes += 1
        now += 0.01
    # A burst, then two a second: not a hundred a second.
    assert WAKEUP_BURST <= passes <= WAKEUP_BURST + 2 * 10 + 1
    assert schedule.wakeups.refused >= 1


def test_something_held_back_is_looked_at_again_soon() -> None:
    schedule = PassSchedule(interval=300.0, now=0.0)
    schedule.follow_up = True
    assert schedule.wake_at(0.0) == FOLLOW_UP_S
    assert schedule.due(FOLLOW_UP_S)
    schedule.follow_up = False
    assert schedule.wake_at(FOLLOW_UP_S) == 300.0


def test_a_new_interval_applies_from_the_next_pass() -> None:
    schedule = PassSchedule(interval=1.0, now=0.0)
    schedule.interval = 5.0
    assert schedule.due(1.0)
    assert schedule.wake_at(1.0) == 6.0
