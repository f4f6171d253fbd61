"""`quintd status --format prometheus` (quintd/metrics.py): every family's every sample,
read back by prometheus_client's own parser, carries the value of the status field it
names. Each field of the report below has a value no other has, so that a family fed
from the wrong field (scan errors from the pass counter) cannot pass."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from quintd.metrics import render_down, render_prometheus
from quintd.protocol import (
    AgentStateReport,
    DeliveryReport,
    QueueReport,
    ScanReport,
    SessionRow,
    SettingsReport,
    StatusReport,
)

LAST_SUCCESS = "2026-11-29T10:11:12.500Z"


def _row(n: int, platform: str, state: str) -> SessionRow:
    return SessionRow(
        session_id=f"00000000-0000-5000-8000-{n:012d}",
        platform=platform,
        pid=100 + n,
        state=state,
        session_name=None,
        model=None,
        parent_id=None,
        started_at="2026-11-29T00:00:00.000Z",
        in_state_s=1.0,
    )


def report(
    *,
    refused_by_state: dict[str, int] | None = None,
    pace: str = "paced",
    last_success: str | None = LAST_SUCCESS,
    last_reload_error: str | None = "scan.interval: must be > 0",
    waiting_for_token: bool = False,
    paused: str | None = "HTTP 401",
    version: str = "0.9.1",
    platform: str = "codex",
) -> StatusReport:
    return StatusReport(
        version=version,
        pid=4242,
        started_at="2026-11-29T00:00:00.000Z",
        uptime_s=3601.25,
        config_file=None,
        reloads=7,
        last_reload_error=last_reload_error,
        state_dir="/var/lib/quintd",
        endpoint="https://api.quintai.dev",
        token_set=True,
        sessions=[
            _row(1, platform, "active"),
            _row(2, platform, "active"),
            _row(3, platform, "idle"),
            _row(4, "claude-code", "active"),
        ],
        queue=QueueReport(
            depth=11,
            bytes=1300,
            max_bytes=1 << 28,
            oldest_age_s=17.5,
            dead_letters=19,
            produced=23,
            coalesced=29,
            refused=31,
            lost_databases=37,
            last_loss=None,
            refused_by_state=refused_by_state if refused_by_state is not None else {},
            waiting_in_memory=41,
        ),
        delivery=DeliveryReport(
            waiting_for_token=waiting_for_token,
            delivered=43,
            dead_lettered=47,
            last_success=last_success,
            last_error="x",
            paused=paused,
            next_attempt_at=None,
            alive=True,
            pace=pace,
            pace_rate=2.75,
        ),
        agent_state=AgentStateReport(
            state_dirs=53,
            watched_dirs=59,
            unwatchable_dirs=61,
            lines_read=67,
            garbage_lines=71,
            files_refused=73,
            errors=79,
        ),
        scan=ScanReport(passes=83, last_duration_ms=8.5, errors=89, last_error="boom"),
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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family -> type, (sample name, labels) -> value), by prometheus_client's parser."""
    families = list(text_string_to_metric_families(text))
    kinds = {f.name: f.type for f in families}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return kinds, samples


def test_every_sample_has_the_value_of_its_field() -> None:
    kinds, samples = parse(render_prometheus(report(refused_by_state={"idle": 3, "active": 5})))
    success = datetime.fromisoformat(LAST_SUCCESS.replace("Z", "+00:00")).timestamp()
    assert samples == {
        ("quintd_up", ()): 1,
        ("quintd_info", (("version", "0.9.1"),)): 1,
        ("quintd_uptime_seconds", ()): 3601.25,
        ("quintd_sessions", (("platform", "claude-code"), ("state", "active"))): 1,
        ("quintd_sessions", (("platform", "codex"), ("state", "active"))): 2,
        ("quintd_sessions", (("platform", "codex"), ("state", "idle"))): 1,
        ("quintd_queue_events", ()): 11,
        ("quintd_queue_bytes", ()): 1300,
        ("quintd_queue_max_bytes", ()): 1 << 28,
        ("quintd_queue_oldest_age_seconds", ()): 17.5,
        ("quintd_queue_waiting_in_memory_events", ()): 41,
        ("quintd_dead_letters", ()): 19,
        ("quintd_refused_events_total", (("state", "active"),)): 5,
        ("quintd_refused_events_total", (("state", "idle"),)): 3,
        ("quintd_coalesced_events_total", ()): 29,
        ("quintd_delivered_events_total", ()): 43,
        ("quintd_dead_lettered_events_total", ()): 47,
        ("quintd_last_success_timestamp_seconds", ()): success,
        ("quintd_delivery_waiting_for_token", ()): 0,
        ("quintd_delivery_paused", ()): 1,
        ("quintd_delivery_pace", (("mode", "rounds"),)): 0,
        ("quintd_delivery_pace", (("mode", "paced"),)): 1,
        ("quintd_delivery_pace", (("mode", "waiting"),)): 0,
        ("quintd_delivery_pace_rate", ()): 2.75,
        ("quintd_scan_duration_seconds", ()): 0.0085,
        ("quintd_scan_passes_total", ()): 83,
        ("quintd_scan_errors_total", ()): 89,
        ("quintd_reader_errors_total", ()): 79,
        ("quintd_reader_garbage_lines_total", ()): 71,
        ("quintd_reader_files_refused_total", ()): 73,
        ("quintd_reloads_total", ()): 7,
        ("quintd_last_reload_failed", ()): 1,
    }
    counters = {name for name, kind in kinds.items() if kind == "counter"}
    assert counters == {
        "quintd_refused_events",
        "quintd_coalesced_events",
        "quintd_delivered_events",
        "quintd_dead_lettered_events",
        "quintd_scan_passes",
        "quintd_scan_errors",
        "quintd_reader_errors",
        "quintd_reader_garbage_lines",
        "quintd_reader_files_refused",
        "quintd_reloads",
    }
    assert set(kinds.values()) == {"counter", "gauge"}


def test_the_other_side_of_each_flag_and_the_fallbacks() -> None:
    """No refusals by state: the plain count; never a success: 0; nothing empty or
    rejected; the token missing; waiting its turn."""
    _, samples = parse(
        render_prometheus(
            report(
                last_success=None,
                last_reload_error=None,
                waiting_for_token=True,
                paused=None,
                pace="waiting",
            )
        )
    )
    assert samples[("quintd_refused_events_total", ())] == 31
    assert not any(k[0] == "quintd_refused_events_total" and k[1] for k in samples)
    assert samples[("quintd_last_success_timestamp_seconds", ())] == 0
    assert samples[("quintd_last_reload_failed", ())] == 0
    assert samples[("quintd_delivery_waiting_for_token", ())] == 1
    assert samples[("quintd_delivery_paused", ())] == 0
    assert samples[("quintd_delivery_pace", (("mode", "waiting"),))] == 1
    assert samples[("quintd_delivery_pace", (("mode", "paced"),))] == 0
    _, broken = parse(render_prometheus(report(last_success="not a time")))
    assert broken[("quintd_last_success_timestamp_seconds", ())] == 0


def test_numbers_and_labels_are_written_as_the_format_says() -> None:
    hostile = 'co"de\\x\nnew'
    text = render_prometheus(report(version=hostile, platform=hostile))
    assert 'quintd_info{version="co\\"de\\\\x\\nnew"} 1\n' in text
    assert "quintd_queue_events 11\n" in text  # integers without a decimal point
    assert "quintd_uptime_seconds 3601.25\n" in text
    assert "quintd_delivery_paused 1\n" in text  # a flag as 0/1
    _, samples = parse(text)
    assert samples[("quintd_info", (("version", hostile),))] == 1
    assert samples[("quintd_sessions", (("platform", hostile), ("state", "active")))] == 2
    lines = text.splitlines()
    assert lines[0] == "# HELP quintd_up 1 while the daemon answers."
    assert lines[1] == "# TYPE quintd_up gauge"
    assert text.endswith("\n") and not text.endswith("\n\n")
    for line in lines:
        if line.startswith("# HELP "):
            assert "\n" not in line


def test_a_daemon_that_does_not_answer_is_down() -> None:
    assert render_down() == (
        "# HELP quintd_up 1 while the daemon answers.\n# TYPE quintd_up gauge\nquintd_up 0\n"
    )


def test_an_empty_queue_is_no_age_and_a_flag_is_a_number() -> None:
    from dataclasses import replace

    from quintd.metrics import _number

    base = report()
    empty = replace(base, queue=replace(base.queue, oldest_age_s=None))
    _, samples = parse(render_prometheus(empty))
    assert samples[("quintd_queue_oldest_age_seconds", ())] == 0
    assert (_number(True), _number(False), _number(3.0), _number(0.25)) == ("1", "0", "3", "0.25")
