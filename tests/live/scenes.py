"""The checks every live day makes, in the words of the day: the first event, a turn that
stays busy, a state reached, a quit timed from the keystroke to the exit and from the exit
to ``ended``."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest
from day import IDLE_AFTER, Day, ExitWatch, wait_until
from installs import Install, install, versions
from live_user import LiveUser

# quit -> every session of the agent ended: at most this long after the process exited.
ENDED_WITHIN_S = 1.0


@pytest.fixture(scope="session", name="live_user")
def live_user_fixture() -> LiveUser:
    """The unprivileged user the agents run as (import it into a test module)."""
    return LiveUser.get()


@functools.cache
def installed(layout: str) -> Install:
    """Every agent in ``layout``, installed once per run (kept across runs, installs.py)."""
    return install(LiveUser.get(), layout, versions())


def first_session(day: Day, platform: str, name: str | None = None) -> dict[str, Any]:
    """The agent's first event: ``active``, its platform, its name and its signing identity
    (the announcement waits for the identity)."""
    first: dict[str, Any] = day.wait(
        lambda events: next((e for e in events if e.get("platform") == platform), None),
        f"{platform}'s first event",
        timeout=60,
    )
    assert first["state"] == "active", first
    assert first.get("parent_id") is None, first
    assert first.get("signing_id"), f"the first event has no signing_id: {first}"
    if name is not None:
        assert first.get("session_name") == name, first
    return first


def status_session(day: Day, session_id: str) -> dict[str, Any] | None:
    report = day.daemon.status() or {}
    return next((s for s in report.get("sessions", []) if s["session_id"] == session_id), None)


# How soon after the model is asked quintd must show the session busy: the prompt's write
# wakes it (a session waiting for its first prompt is idle until then).
NOTICE_S = 5.0


def assert_stays_busy(day: Day, session_id: str) -> None:
    """While the model holds its answer, the session turns ``active`` within
    :data:`NOTICE_S` and stays so for longer than ``idle_after`` (status says how long it
    has been in its state)."""
    wait_until(
        lambda: (status_session(day, session_id) or {}).get("state") == "active",
        NOTICE_S,
        "the session to be busy once the model is asked",
    )

    def probe() -> dict[str, Any] | None:
        found = status_session(day, session_id)
        if found is None:
            return None
        assert found["state"] == "active", f"not busy while the model works: {found}"
        return found if found["in_state_s"] > IDLE_AFTER + 1.5 else None

    wait_until(probe, 30, "the busy session to outlast idle_after")
    assert (status_session(day, session_id) or {}).get("state") == "active"


def wait_state(day: Day, session_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
    """Waits until the session's newest event is in ``state``."""
    found: dict[str, Any] = day.wait(
        lambda _: (
            (latest := day.latest(session_id)) is not None and latest["state"] == state and latest
        ),
        f"{session_id} to be {state}",
        timeout,
    )
    return found


def quit_and_time(day: Day, pid: int, *keys: str, timeout: float = 60) -> float:
    """Quits the agent with ``keys`` (text lines, or tmux key names after ``"keys:"``);
    the moment (monotonic) its process exited. The time from the keystroke to the exit is
    noted in the day's report."""
    watch = ExitWatch(pid).start()
    typed = time.monotonic()
    for key in keys:
        if key.startswith("keys:"):
            day.terminal.keys(*key[5:].split())
        else:
            day.terminal.type(key)
    exited = watch.wait(timeout)
    day.notes.append(f"quit -> process exit: {exited - typed:.2f} s")
    return exited


def assert_ended_on_exit(day: Day, exited: float, session_ids: list[str]) -> None:
    """Every session still live at the exit is ``ended`` within ENDED_WITHIN_S of it."""

    def ended_at() -> dict[str, float] | None:
        found = {}
        for r in day.events():
            if r.event["session_id"] in session_ids and r.event["state"] == "ended":
                found[r.event["session_id"]] = r.received_at
        return found if set(found) == set(session_ids) else None

    found: dict[str, float] = wait_until(ended_at, 30, "every session to end")
    for sid, at in found.items():
        day.notes.append(f"process exit -> ended {sid}: {at - exited:.3f} s")
        assert at - exited <= ENDED_WITHIN_S, f"{sid} ended {at - exited:.2f} s after the exit"
