"""The delivery policy as a table: no server, no thread, no clock of its own."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from quintd.delivery_policy import (
    AUTH_PAUSE_S,
    BACKOFF_CAP_S,
    MIN_PACE,
    OUTAGE_S,
    PACE_GROWTH,
    START_SPREAD_S,
    TURN_WAIT_MAX_S,
    TURN_WAIT_MIN_S,
    TURN_WAIT_PER_EVENT_S,
    TURN_WAIT_SPREAD,
    Action,
    Answer,
    Backoff,
    Failure,
    Outcome,
    Pace,
    PaceMode,
    SendWindow,
    classify,
    parse_retry_after,
    pipeline_outcome,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("answer", "events", "action", "wait"),
    [
        (Answer(200), 1, Action.DELIVERED, None),
        (Answer(202), 5, Action.DELIVERED, None),
        (Answer(204), 1, Action.DELIVERED, None),
        (Answer(400, "bad"), 1, Action.DEAD_LETTER, None),
        (Answer(422, "bad"), 1, Action.DEAD_LETTER, None),
        (Answer(413, "too big"), 1, Action.DEAD_LETTER, None),
        (Answer(400, "bad"), 2, Action.SPLIT, None),
        (Answer(413), 500, Action.SPLIT, None),
        (Answer(401), 1, Action.AUTH_PAUSE, AUTH_PAUSE_S),
        (Answer(403), 3, Action.AUTH_PAUSE, AUTH_PAUSE_S),
        (Answer(429, retry_after="7"), 1, Action.RETRY_AFTER, 7.0),
        (Answer(503, retry_after="0"), 1, Action.RETRY_AFTER, 0.0),
        (
            Answer(429, retry_after=email.utils.formatdate(NOW + 30, usegmt=True)),
            1,
            Action.RETRY_AFTER,
            30.0,
        ),
        (Answer(429, retry_after="99999999"), 1, Action.RETRY_AFTER, 3600.0),
        (Answer(429), 1, Action.BACKOFF, None),  # no header: our own backoff
        (Answer(429, retry_after="soon"), 1, Action.BACKOFF, None),  # garbage header
        (Answer(500), 1, Action.BACKOFF, None),
        (Answer(502), 10, Action.BACKOFF, None),
        (Answer(404), 1, Action.BACKOFF, None),  # a misrouted endpoint: never dead-letter
        (Answer(301), 1, Action.BACKOFF, None),  # redirects are not followed
        (Failure("ConnectError: refused"), 1, Action.BACKOFF, None),
        (Failure("ReadTimeout"), 7, Action.BACKOFF, None),
    ],
)
def test_classify(
    answer: Answer | Failure, events: int, action: Action, wait: float | None
) -> None:
    outcome = classify(answer, events=events, now=NOW)
    assert outcome.action is action
    assert outcome.wait == wait
    assert outcome.halts == (action in (Action.AUTH_PAUSE, Action.RETRY_AFTER, Action.BACKOFF))


def test_dead_letters_keep_the_servers_words_and_pauses_say_why() -> None:
    dead = classify(Answer(400, '{"error":"bad_request"}'), events=1, now=NOW)
    assert (dead.status, dead.reason) == (400, '{"error":"bad_request"}')
    pause = classify(Answer(401, "revoked"), events=1, now=NOW)
    assert "401" in pause.reason and "token refused" in pause.reason


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], None),
        ([Outcome(Action.DELIVERED, "")], None),
        ([Outcome(Action.DEAD_LETTER, "")], None),
        ([Outcome(Action.BACKOFF, "a"), Outcome(Action.DELIVERED, "")], "a"),
        ([Outcome(Action.BACKOFF, "a"), Outcome(Action.RETRY_AFTER, "r", wait=5)], "r"),
        (
            [
                Outcome(Action.RETRY_AFTER, "short", wait=5),
                Outcome(Action.RETRY_AFTER, "long", wait=9),
            ],
            "long",
        ),
        (
            [Outcome(Action.RETRY_AFTER, "r", wait=60), Outcome(Action.AUTH_PAUSE, "p", wait=900)],
            "p",
        ),
    ],
)
def test_the_round_waits_for_its_strongest_outcome(
    outcomes: list[Outcome], expected: str | None
) -> None:
    chosen = pipeline_outcome(outcomes)
    assert (chosen.reason if chosen else None) == expected


def test_backoff_counts_rounds_not_requests() -> None:
    """Three sessions in flight failing together are one failed round: the wait grows
    once, not three times (before, a third round waited 111 s)."""
    backoff = Backoff(rand=lambda: 1.0)
    round_ = [Outcome(Action.BACKOFF, "500")] * 3
    waits = []
    for _ in range(3):
        chosen = pipeline_outcome(round_)
        assert chosen is not None
        waits.append(backoff.wait_after(chosen))
    assert waits == [1.0, 2.0, 4.0]
    assert backoff.failures == 3


def test_backoff_is_exponential_from_one_second() -> None:
    """README (Delivery): "exponential backoff from 1 s, capped at 300 s, with full
    jitter": the ceilings of the failed rounds in a row (the waits with the jitter at its
    top), and the jitter over the whole range below each."""
    top = Backoff(rand=lambda: 1.0)
    ceilings = [top.wait_after(Outcome(Action.BACKOFF, "500")) for _ in range(12)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert BACKOFF_CAP_S == 300
    quarter = Backoff(rand=lambda: 0.25)
    waits = [quarter.wait_after(Outcome(Action.BACKOFF, "500")) for _ in range(4)]
    assert waits == [0.25, 0.5, 1.0, 2.0]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "exponential backoff from 1 s, capped at 300 s, with full jitter" in readme


def test_backoff_full_jitter_after_the_cap_and_never_a_hot_loop() -> None:
    assert Backoff(rand=lambda: 0.5).wait_after(Outcome(Action.BACKOFF, "")) == 0.5
    capped = Backoff(rand=lambda: 1.0)
    for _ in range(40):
        last = capped.wait_after(Outcome(Action.BACKOFF, ""))
    assert last == BACKOFF_CAP_S
    half = Backoff(rand=lambda: 0.5)
    for _ in range(40):
        last = half.wait_after(Outcome(Action.BACKOFF, ""))
    assert last == BACKOFF_CAP_S / 2  # jitter applied after the cap
    assert Backoff(rand=lambda: 0.0).wait_after(Outcome(Action.BACKOFF, "")) == 0.1


def test_backoff_takes_retry_after_as_given_and_resets_on_success() -> None:
    backoff = Backoff(rand=lambda: 1.0)
    assert backoff.wait_after(Outcome(Action.RETRY_AFTER, "", wait=7.0)) == 7.0
    assert backoff.wait_after(Outcome(Action.AUTH_PAUSE, "", wait=900.0)) == 900.0
    assert backoff.failures == 2
    backoff.reset()
    assert backoff.wait_after(Outcome(Action.BACKOFF, "")) == 1.0


def test_retry_after_spread_lengthens_only() -> None:
    spread = Backoff(rand=lambda: 1.0, spread=0.2)
    assert spread.wait_after(Outcome(Action.RETRY_AFTER, "", wait=10.0)) == pytest.approx(12.0)
    none = Backoff(rand=lambda: 0.0, spread=0.2)
    assert none.wait_after(Outcome(Action.RETRY_AFTER, "", wait=10.0)) == 10.0


def test_send_window_starts_small_and_doubles() -> None:
    window = SendWindow(100)
    sizes = []
    for _ in range(9):
        sizes.append(window.size())
        window.went_through()
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 100, 100]
    window.halted()
    assert window.size() == 1
    assert SendWindow(0).size() == 1


def test_retry_after_edge_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    # Far from UTC: a date read as local time instead of UTC would be hours off.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    now = 1_800_000_000.0
    assert parse_retry_after(" 5 ", now) == 5.0  # spaces around
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after(past, now) == 0.0  # a date gone by: at once, never negative
    # "-0000" (a date with no zone information) is read as UTC.
    naive = email.utils.formatdate(now + 30, usegmt=True).replace("GMT", "-0000")
    try:
        assert parse_retry_after(naive, now) == pytest.approx(30.0)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_3xx_is_not_a_delivery_and_a_bare_401_says_its_status() -> None:
    assert classify(Answer(300), events=1, now=0).action is Action.BACKOFF
    assert classify(Answer(299), events=1, now=0).action is Action.DELIVERED
    refused = classify(Answer(401, ""), events=1, now=0)
    assert refused.action is Action.AUTH_PAUSE and refused.reason.endswith("token refused: 401")


def test_pipeline_outcome_ranks_by_kind_before_length() -> None:
    pause = Outcome(Action.AUTH_PAUSE, "401", 401, wait=900.0)
    long_wait = Outcome(Action.RETRY_AFTER, "429", 429, wait=3600.0)
    assert pipeline_outcome([long_wait, pause]) is pause  # a refused token over any wait
    failed = Outcome(Action.BACKOFF, "500", 500)
    at_once = Outcome(Action.RETRY_AFTER, "429", 429, wait=0.0)
    assert pipeline_outcome([failed, at_once]) is at_once  # a Retry-After over a failure


def test_send_window_of_one_stays_one() -> None:
    for limit in (0, 1):
        window = SendWindow(limit)
        window.went_through()
        assert window.size() == 1


def test_a_503_retry_after_is_taken_as_given() -> None:
    """A 503 with a Retry-After is an outage, not the limit: the backoff takes it."""
    unavailable = Outcome(Action.RETRY_AFTER, "503", status=503, wait=2.0)
    assert Backoff(rand=lambda: 1.0).wait_after(unavailable) == 2.0


# -- the pace --------------------------------------------------------------------------

OK = Outcome(Action.DELIVERED, "HTTP 200", 200)
REFUSED = Outcome(Action.RETRY_AFTER, "HTTP 429", 429, wait=1.0)
DOWN = Outcome(Action.BACKOFF, "HTTP 503", 503)


def _queued(n: int) -> Callable[[], int]:
    return lambda: n


def test_the_pace_starts_in_rounds_with_a_slow_start() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    sizes = []
    for t in range(5):
        sizes.append(pace.size())
        assert pace.after_round(float(t), [OK] * pace.size(), _queued(500)) == 0.0
    assert sizes == [1, 2, 4, 8, 16] and pace.mode is PaceMode.ROUNDS


def test_a_daemon_with_the_window_to_itself_waits_a_429_out_exactly() -> None:
    """Five accepted in the last second, then refused: the window was this daemon's. It
    comes back when the window opens, in rounds again (a lone daemon keeps its limit)."""
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(10.0, [OK] * 5, _queued(500))
    assert pace.after_round(10.2, [REFUSED], _queued(500)) == 1.0
    assert pace.mode is PaceMode.ROUNDS and pace.size() == 1  # the slow start again


def test_refused_after_a_few_accepted_it_sends_at_what_it_got() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(10.0, [OK, OK], _queued(500))
    wait = pace.after_round(10.1, [OK, REFUSED], _queued(500))
    assert (pace.mode, pace.rate) == (PaceMode.PACED, 3.0)  # three in the last second
    assert wait == pytest.approx(1.0 + 0.5 / 3.0)  # the Retry-After, then a random gap
    assert pace.size() == 1  # one request at a time


def test_a_paced_pipeline_grows_with_each_acceptance_and_keeps_its_gap() -> None:
    """The gap runs from when the round was sent: its round trip is part of it."""
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    assert pace.after_round(10.0, [OK, REFUSED], _queued(500)) == 1.5  # paced at 1/s
    assert pace.after_round(20.0, [OK], _queued(500)) == 0.0  # the gap is long past
    assert pace.rate == pytest.approx(1.0 + PACE_GROWTH)
    # Sent at once (20.0), answered 50 ms later: the next goes a gap after the send.
    wait = pace.after_round(20.05, [OK], _queued(500))
    assert pace.rate == pytest.approx((1.0 + PACE_GROWTH) ** 2)
    assert wait == pytest.approx(1.0 / pace.rate - 0.05)


def test_pace_back_to_rounds_when_fast_enough() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(0.0, [OK, REFUSED], _queued(500))
    t, wait = 1.0, 1.0
    while pace.mode is PaceMode.PACED:
        t += 1.0
        wait = pace.after_round(t, [OK], _queued(500))
    assert pace.mode is PaceMode.ROUNDS and pace.size() == 1
    assert wait == 0.0  # the first round goes at once


def test_refused_below_the_minimum_pace_it_waits_its_turn() -> None:
    """Cut below MIN_PACE, a daemon waits in proportion to its queue (give or take a
    tenth), then sends one request; accepted, it is paced at MIN_PACE."""
    for rand, queued, expected in [
        (0.5, 10, 10 * TURN_WAIT_PER_EVENT_S / MIN_PACE),
        (1.0, 10, 10 * TURN_WAIT_PER_EVENT_S / MIN_PACE * (1 + TURN_WAIT_SPREAD)),
        (0.0, 10, 10 * TURN_WAIT_PER_EVENT_S / MIN_PACE * (1 - TURN_WAIT_SPREAD)),
        (0.5, 1, TURN_WAIT_MIN_S),
        (0.5, 10_000, TURN_WAIT_MAX_S),
    ]:
        pace = Pace(100, now=0.0, rand=lambda r=rand: r)  # type: ignore[misc]
        pace.after_round(10.0, [OK], _queued(queued))  # started: something went through
        pace.after_round(11.5, [OK, REFUSED], _queued(queued))  # paced at 1/s
        assert pace.rate == 1.0
        wait = pace.after_round(14.0, [REFUSED], _queued(queued))
        assert pace.mode is PaceMode.WAITING
        assert wait == pytest.approx(expected)
        pace.after_round(100.0, [OK], _queued(queued))
        assert (pace.mode, pace.rate) == (PaceMode.PACED, MIN_PACE)


def test_refused_before_any_success_it_comes_back_after_the_start_up_jitter() -> None:
    """A fleet restarting together: the refused come back once every daemon has had its
    first try, spread a little; refused again, as much; then twice as wide each time."""
    half = Pace(100, now=0.0, start_jitter=33.0, rand=lambda: 0.5)
    assert half.after_round(10.0, [REFUSED], _queued(3)) == pytest.approx(23.0 + START_SPREAD_S / 2)
    pace = Pace(100, now=0.0, start_jitter=33.0, rand=lambda: 1.0)
    assert pace.after_round(10.0, [REFUSED], _queued(3)) == pytest.approx(23.0 + START_SPREAD_S)
    assert pace.after_round(37.0, [REFUSED], _queued(3)) == pytest.approx(START_SPREAD_S)
    assert pace.after_round(41.0, [REFUSED], _queued(3)) == pytest.approx(2 * START_SPREAD_S)
    pace.after_round(45.0, [OK], _queued(3))  # its turn: paced at MIN_PACE
    # After a success, refused again: the turn is the queue's (3 events, 1.5 s each).
    wait = pace.after_round(45.5, [REFUSED], _queued(3))
    assert pace.mode is PaceMode.WAITING
    assert wait == pytest.approx(3 * TURN_WAIT_PER_EVENT_S / MIN_PACE * (1 + TURN_WAIT_SPREAD))


def test_back_from_an_outage_the_pipeline_starts_paced() -> None:
    """Three failed rounds in a row, over at least OUTAGE_S, make an outage: the first
    success is paced at MIN_PACE, so a fleet comes back as the service does, not in
    rounds. A blip (fewer failures, or a few seconds) keeps the rounds."""
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    for t in (0.0, 10.0, OUTAGE_S):
        pace.after_round(t, [DOWN], _queued(60))
    pace.after_round(OUTAGE_S + 1, [OK], _queued(60))
    assert (pace.mode, pace.rate) == (PaceMode.PACED, MIN_PACE)
    for failures, back in (((0.0, 40.0), 50.0), ((0.0, 1.0, 3.0, 7.0), OUTAGE_S - 1)):
        blip = Pace(100, now=0.0, rand=lambda: 0.5)
        for t in failures:
            blip.after_round(t, [DOWN], _queued(60))
        assert blip.after_round(back, [OK], _queued(60)) == 0.0
        assert blip.mode is PaceMode.ROUNDS, failures


def test_a_paced_pipeline_that_sent_everything_is_back_in_rounds() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(0.0, [OK, REFUSED], _queued(5))
    assert pace.mode is PaceMode.PACED
    pace.drained()
    assert pace.mode is PaceMode.ROUNDS and pace.size() == 1  # a slow start
    waiting = Pace(100, now=0.0, rand=lambda: 0.5)
    waiting.after_round(0.0, [OK], _queued(5))
    waiting.after_round(5.0, [REFUSED], _queued(5))
    waiting.drained()
    assert waiting.mode is PaceMode.WAITING  # it has not had its turn yet


def test_a_round_with_nothing_accepted_and_no_halt_changes_no_mode() -> None:
    """Dead letters or a split: the service answers, but its turn has not come."""
    rejected = Outcome(Action.DEAD_LETTER, "bad", 400)
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(0.0, [OK], _queued(5))
    pace.after_round(5.0, [REFUSED], _queued(5))
    assert pace.after_round(20.0, [rejected], _queued(5)) == 0.0
    assert pace.mode is PaceMode.WAITING
    paced = Pace(100, now=0.0, rand=lambda: 0.5)
    paced.after_round(0.0, [OK, REFUSED], _queued(5))
    assert paced.after_round(20.0, [rejected], _queued(5)) == 0.0  # the gap is long past
    assert (paced.mode, paced.rate) == (PaceMode.PACED, 1.0)


def test_acceptances_count_when_they_were_answered() -> None:
    """A long round: only what was accepted in the last second counts as the window's."""
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    answered = [1.0, 2.0, 3.0, 4.0, 4.2, 4.5]
    wait = pace.after_round(4.5, [OK] * 5 + [REFUSED], _queued(500), answered)
    assert (pace.mode, pace.rate) == (PaceMode.PACED, 2.0)  # two in the last second, not 5
    assert wait == pytest.approx(1.0 + 0.5 / 2.0)


def test_a_failure_backs_off_whatever_the_pace() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 1.0)
    pace.after_round(0.0, [OK, REFUSED], _queued(5))
    assert pace.mode is PaceMode.PACED
    assert pace.after_round(1.0, [DOWN], _queued(5)) == 1.0  # the backoff's first step
    assert pace.mode is PaceMode.PACED  # a blip does not change the pace


# The pace's finer rules, one test each (written for the survivors of the mutation run).


def test_accepted_exactly_a_second_ago_still_counts() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(10.0, [OK] * 5, _queued(500))
    assert pace.after_round(11.0, [REFUSED], _queued(500)) == 1.0  # still a big user
    assert pace.mode is PaceMode.ROUNDS


def test_a_503_with_retry_after_is_a_failure_not_the_limit() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(0.0, [OK, REFUSED], _queued(5))
    unavailable = Outcome(Action.RETRY_AFTER, "HTTP 503", 503, wait=2.0)
    assert pace.after_round(5.0, [unavailable], _queued(5)) == 2.0
    assert (pace.mode, pace.rate) == (PaceMode.PACED, 1.0)  # not cut: not the limit


def test_a_failure_restarts_the_rounds_small() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    for t in range(3):
        pace.after_round(float(t), [OK], _queued(500))
    assert pace.size() == 8
    pace.after_round(5.0, [DOWN], _queued(500))
    assert pace.size() == 1


def test_a_paced_gap_after_a_refusal_counts_from_the_send() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    wait = pace.after_round(10.0, [OK, REFUSED], _queued(500))  # paced at 1/s
    sent = 10.0 + wait
    assert pace.after_round(sent + 0.05, [OK], _queued(500)) == pytest.approx(
        1.0 / pace.rate - 0.05
    )


def test_success_and_refusal_start_the_backoff_over() -> None:
    for between in ([OK], [OK, REFUSED]):
        pace = Pace(100, now=0.0, rand=lambda: 1.0)
        assert [pace.after_round(1.0, [DOWN], _queued(5)) for _ in range(2)] == [1.0, 2.0]
        pace.after_round(2.0, between, _queued(5))
        assert pace.after_round(3.0, [DOWN], _queued(5)) == 1.0, between


def test_failures_count_as_an_outage_only_in_a_row() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    for t in (0.0, 40.0):
        pace.after_round(t, [DOWN], _queued(5))
    pace.after_round(50.0, [OK], _queued(5))
    for t in (60.0, 100.0):
        pace.after_round(t, [DOWN], _queued(5))
    pace.after_round(110.0, [OK], _queued(5))
    assert pace.mode is PaceMode.ROUNDS  # 2 + 2 failures, a success between
    # A 429 between failures also says the service is up.
    paced = Pace(100, now=0.0, rand=lambda: 0.5)
    for t in (0.0, 40.0):
        paced.after_round(t, [DOWN], _queued(5))
    paced.after_round(50.0, [OK, OK, REFUSED], _queued(5))  # paced at 2/s
    for t in (60.0, 100.0):
        paced.after_round(t, [DOWN], _queued(5))
    paced.after_round(110.0, [OK], _queued(5))
    assert paced.rate == pytest.approx(2.0 * (1 + PACE_GROWTH))  # grown, not restarted


def test_a_paced_daemon_that_got_much_through_goes_back_to_rounds() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(0.0, [OK, REFUSED], _queued(500))
    assert pace.mode is PaceMode.PACED
    for t in (10.0, 10.2, 10.4, 10.6, 10.8):
        pace.after_round(t, [OK], _queued(500))
    assert pace.after_round(10.9, [REFUSED], _queued(500)) == 1.0
    assert pace.mode is PaceMode.ROUNDS


def test_a_paced_refusal_halves_the_pace_down_to_the_minimum() -> None:
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    pace.after_round(0.0, [OK] * 3, _queued(500))
    pace.after_round(0.1, [OK, REFUSED], _queued(500))
    assert (pace.mode, pace.rate) == (PaceMode.PACED, 4.0)
    assert pace.after_round(10.0, [REFUSED], _queued(500)) == pytest.approx(1.0 + 0.5 / 2.0)
    assert (pace.mode, pace.rate) == (PaceMode.PACED, 2.0)
    pace.after_round(20.0, [REFUSED], _queued(500))
    assert (pace.mode, pace.rate) == (PaceMode.PACED, MIN_PACE)  # exactly the minimum: paced
    pace.after_round(30.0, [REFUSED], _queued(500))
    assert pace.mode is PaceMode.WAITING


def test_an_outage_is_timed_from_its_first_failure() -> None:
    """Long after the start, a blip of a few seconds is still a blip; 30 s of failing,
    exactly, is an outage."""
    late = Pace(100, now=0.0, rand=lambda: 0.5)
    for t in (1000.0, 1001.0, 1003.0):
        late.after_round(t, [DOWN], _queued(5))
    late.after_round(1010.0, [OK], _queued(5))
    assert late.mode is PaceMode.ROUNDS
    edge = Pace(100, now=0.0, rand=lambda: 0.5)
    for t in (100.0, 110.0, 120.0):
        edge.after_round(t, [DOWN], _queued(5))
    edge.after_round(100.0 + OUTAGE_S, [OK], _queued(5))
    assert edge.mode is PaceMode.PACED


def test_a_paced_round_of_dead_letters_keeps_its_gap() -> None:
    rejected = Outcome(Action.DEAD_LETTER, "bad", 400)
    pace = Pace(100, now=0.0, rand=lambda: 0.5)
    assert pace.after_round(0.0, [OK, OK, REFUSED], _queued(5)) == 1.25  # paced at 2/s
    # Sent at 1.25, answered 50 ms later: the gap (1.0 / 2) counts from the send.
    assert pace.after_round(1.30, [rejected], _queued(5)) == pytest.approx(0.5 - 0.05)
