"""The delivery policy as a table: no server, no thread, no clock of its own."""

from __future__ import annotations

import email.utils
import time

import pytest

from quintd.delivery_policy import (
    AUTH_PAUSE_S,
    BACKOFF_CAP_S,
    REFUSED_SPREAD_CAP_S,
    REFUSED_SPREAD_S,
    Action,
    Answer,
    Backoff,
    Failure,
    Outcome,
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
    assert waits == [2.0, 4.0, 8.0]
    assert backoff.failures == 3


def test_backoff_full_jitter_after_the_cap_and_never_a_hot_loop() -> None:
    assert Backoff(rand=lambda: 0.5).wait_after(Outcome(Action.BACKOFF, "")) == 1.0
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
    assert backoff.wait_after(Outcome(Action.BACKOFF, "")) == 2.0


def test_retry_after_spread_lengthens_only() -> None:
    spread = Backoff(rand=lambda: 1.0, spread=0.2)
    assert spread.wait_after(Outcome(Action.RETRY_AFTER, "", wait=10.0)) == pytest.approx(12.0)
    none = Backoff(rand=lambda: 0.0, spread=0.2)
    assert none.wait_after(Outcome(Action.RETRY_AFTER, "", wait=10.0)) == 10.0


def test_a_429_after_requests_went_through_is_waited_out_exactly() -> None:
    """A daemon that had its share of the window comes back when the window opens: alone,
    it keeps the whole limit (the single-machine drain)."""
    backoff = Backoff(rand=lambda: 1.0)
    refused = Outcome(Action.RETRY_AFTER, "429", status=429, wait=1.0)
    assert backoff.wait_after(refused, went_through=3) == 1.0  # in the same round
    backoff.reset()  # a round went through since
    assert backoff.wait_after(refused) == 1.0
    assert backoff.refusals == 0


def test_429s_with_nothing_through_spread_over_a_doubling_range() -> None:
    """Refused again and again: the fleet must not all come back at the next window."""
    backoff = Backoff(rand=lambda: 1.0)
    refused = Outcome(Action.RETRY_AFTER, "429", status=429, wait=1.0)
    waits = [backoff.wait_after(refused) for _ in range(5)]
    spread = [w - 1.0 for w in waits]
    assert spread == [min(REFUSED_SPREAD_CAP_S, REFUSED_SPREAD_S * 2**n) for n in range(5)]
    assert spread[-1] == REFUSED_SPREAD_CAP_S
    zero = Backoff(rand=lambda: 0.0)
    assert zero.wait_after(refused) == 1.0  # never shorter than the Retry-After
    # A 503 with a Retry-After is an outage, not the limit: taken as given.
    unavailable = Outcome(Action.RETRY_AFTER, "503", status=503, wait=2.0)
    assert Backoff(rand=lambda: 1.0).wait_after(unavailable) == 2.0
    backoff.reset()
    assert backoff.wait_after(refused) == 1.0  # through again: the range starts over


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


def test_one_request_through_is_enough_to_wait_out_a_429_exactly() -> None:
    refused = Outcome(Action.RETRY_AFTER, "429", status=429, wait=1.0)
    backoff = Backoff(rand=lambda: 1.0)
    assert backoff.wait_after(refused, went_through=1) == 1.0
    # Refused twice with nothing through: the spread grew; then a round with requests
    # through and a refusal: exact; the next refusal without starts the range over.
    backoff.wait_after(refused)
    assert backoff.wait_after(refused) == 1.0 + 2 * REFUSED_SPREAD_S
    assert backoff.wait_after(refused, went_through=2) == 1.0
    assert backoff.wait_after(refused) == 1.0 + REFUSED_SPREAD_S


def test_send_window_of_one_stays_one() -> None:
    for limit in (0, 1):
        window = SendWindow(limit)
        window.went_through()
        assert window.size() == 1
