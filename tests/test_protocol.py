"""The control protocol: typed values, JSON both ways, every field checked."""

from __future__ import annotations

import dataclasses

import pytest

from quintd.protocol import (
    AgentStateReport,
    DeliveryReport,
    ProtocolError,
    QueueReport,
    RequeueRefusal,
    RequeueReply,
    RequeueRequest,
    ScanReport,
    SessionRow,
    SettingsReport,
    StatusReport,
    from_json,
    to_json,
)
from quintd.status_text import render_status


def report(**changes: object) -> StatusReport:
    base = StatusReport(
        version="0.1.0",
        pid=42,
        started_at="2026-11-29T00:00:00.000Z",
        uptime_s=61.5,
        config_file=None,
        reloads=0,
        last_reload_error=None,
        state_dir="/var/lib/quintd",
        endpoint="https://api.quintai.dev",
        token_set=True,
        sessions=[
            SessionRow(
                session_id="9b2f3c4e-0f41-5d7e-9a51-6f0e8d1c2b3a",
                platform="codex",
                pid=7,
                state="idle",
                session_name="Fix auth",
                model="gpt-x",
                parent_id=None,
                started_at="2026-11-29T00:00:01.000Z",
                in_state_s=12.0,
            )
        ],
        queue=QueueReport(
            depth=1,
            bytes=200,
            max_bytes=1 << 28,
            oldest_age_s=3.0,
            dead_letters=0,
            produced=5,
            coalesced=0,
            refused=0,
            lost_databases=0,
            last_loss=None,
        ),
        delivery=DeliveryReport(
            waiting_for_token=False,
            delivered=4,
            dead_lettered=0,
            last_success=None,
            last_error=None,
            paused=None,
            next_attempt_at=None,
            alive=True,
        ),
        agent_state=AgentStateReport(0, 0, 0, 0, 0, 0, 0),
        scan=ScanReport(passes=3, last_duration_ms=1.5, errors=0, last_error=None),
        settings=SettingsReport(
            scan_interval=1.0,
            platforms=21,
            idle_after=120.0,
            max_bytes=1 << 28,
            min_free_disk=1 << 26,
            endpoint="https://api.quintai.dev",
            timeout=10.0,
            batch_size=100,
            flush_interval=1.0,
            batch_body=False,
            in_flight=4,
            drain_timeout=5.0,
            start_jitter=0.0,
            log_level="info",
            log_format="text",
        ),
    )
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def test_status_round_trips_through_json() -> None:
    value = report()
    assert from_json(StatusReport, to_json(value)) == value


def test_requeue_messages_round_trip() -> None:
    ask = RequeueRequest(seqs=[3, 4], force=True)
    assert from_json(RequeueRequest, to_json(ask)) == ask
    assert from_json(RequeueRequest, {"seqs": None}) == RequeueRequest(seqs=None)
    reply = RequeueReply(requeued=1, refused=[RequeueRefusal(4, "ended already delivered")])
    assert from_json(RequeueReply, to_json(reply)) == reply


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("pid"), "status.pid: missing"),
        (lambda d: d.update(pid="42"), "status.pid: expected an integer"),
        (lambda d: d.update(pid=True), "status.pid: expected an integer"),
        (lambda d: d["queue"].update(depth=None), "status.queue.depth"),
        (lambda d: d.update(sessions={}), "status.sessions: expected a list"),
        (lambda d: d["sessions"][0].update(session_name=5), "status.sessions[0].session_name"),
    ],
)
def test_a_malformed_status_is_refused_with_the_field_named(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = to_json(report())
    mutate(data)
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_json(StatusReport, data, "status")


def test_requeue_request_rejects_non_integer_seqs() -> None:
    with pytest.raises(ProtocolError, match=r"request\.seqs"):
        from_json(RequeueRequest, {"seqs": ["1"]}, "request")


def test_status_text_renders_from_the_typed_report_and_prints_nothing_raw() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\u202eevil\nFORGED ROW"
    text = render_status(
        report(
            sessions=[
                SessionRow(
                    session_id="9b2f3c4e-0f41-5d7e-9a51-6f0e8d1c2b3a",
                    platform="codex",
                    pid=7,
                    state="idle",
                    session_name=hostile,
                    model=None,
                    parent_id=None,
                    started_at="2026-11-29T00:00:01.000Z",
                    in_state_s=1.0,
                )
            ],
            last_reload_error="bad\x1b[31m key",
        )
    )
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "]0;pwnedevil FORGED ROW" not in text.splitlines()[0]
    row = next(line for line in text.splitlines() if "9b2f3c4e" in line)
    assert "FORGED ROW" in row  # the newline became a space: one row, not two
    assert "up 1m01s" in text.splitlines()[0]


def test_status_text_says_how_delivery_paces_itself() -> None:
    base = report()
    assert "pace:" not in render_status(base)  # in rounds: nothing to say
    paced = dataclasses.replace(
        base, delivery=dataclasses.replace(base.delivery, pace="paced", pace_rate=2.5)
    )
    assert "pace:        2.5 request(s)/s, one at a time" in render_status(paced)
    waiting = dataclasses.replace(base, delivery=dataclasses.replace(base.delivery, pace="waiting"))
    assert "pace:        waiting its turn" in render_status(waiting)
