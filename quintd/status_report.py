"""Pieces of ``quintd status`` that belong to no single part: the session rows (from the
tracker's view of a pass), the settings every part runs with, and dead letters as rows.
Each part reports its own piece (``StoreWriter.report``, ``Shipper.report``,
``SourceManager.report``); :meth:`quintd.daemon.Daemon.status_report` puts them together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from quintd.model import Session, format_timestamp
from quintd.protocol import DeadLetterRow, ScanReport, SessionRow, SettingsReport
from quintd.settings import LoopSettings
from quintd.store import DeadLetter

if TYPE_CHECKING:
    from quintd.event_feed import EventFeed
    from quintd.loop_log import PassErrors
    from quintd.parts import Parts
    from quintd.pass_schedule import PassSchedule


def session_rows(sessions: Iterable[Session], mono_now: float) -> list[SessionRow]:
    return [
        SessionRow(
            session_id=s.session_id,
            platform=s.platform,
            pid=s.pid,
            state=s.state,
            session_name=s.session_name,
            model=s.model,
            parent_id=s.parent_id,
            started_at=format_timestamp(s.started_at),
            in_state_s=round(max(mono_now - s.state_since, 0.0), 3),
            signing_id=s.signing_id,
        )
        for s in sessions
    ]


def scan_report(
    parts: Parts, schedule: PassSchedule, exits_from: str, feed: EventFeed, errors: PassErrors
) -> ScanReport:
    tracker, scanner = parts.tracker, parts.scanner
    stats = scanner.stats
    return ScanReport(
        passes=scanner.stats.passes,
        last_duration_ms=round(scanner.stats.last_duration_s * 1000, 3),
        errors=errors.count,
        last_error=errors.last,
        early_passes=schedule.early_passes,
        exits_from=exits_from,
        identity_refused=dict(parts.resolver.refused),
        deferred_sessions=sum(tracker.deferred.values()),
        waiting_turn=tracker.queued,
        waiting_unremembered=tracker.overflow,
        passes_put_off=schedule.wakeups.refused,
        process_events=feed.method,
        events_read=feed.read,
        events_dropped=feed.dropped,
        listings=stats.listings,
        execs_skipped=stats.execs_skipped,
        looked_at_once=stats.looked_at_once,
        looks_put_off=stats.put_off,
        left_to_listing=stats.left_to_listing,
        lost_events=stats.lost_events,
    )


def settings_report(loop: LoopSettings, parts: Parts, log_format: str) -> SettingsReport:
    """The settings as each part holds them now (delivery's: as its thread applied them)."""
    delivery = parts.shipper.effective_settings
    return SettingsReport(
        scan_interval=loop.scan_interval,
        kernel_exits=loop.kernel_exits,
        process_events=loop.process_events,
        full_listing_interval=loop.full_listing_interval,
        platforms=len(parts.scanner.settings.platforms),
        idle_after=parts.tracker.settings.idle_after,
        new_per_user_per_minute=parts.tracker.settings.new_per_user_per_minute,
        watches_per_user=parts.sources.settings.watches_per_user,
        max_bytes=parts.store.settings.max_bytes,
        min_free_disk=parts.store.settings.min_free_disk,
        endpoint=delivery.endpoint,
        timeout=delivery.timeout,
        batch_size=delivery.batch_size,
        flush_interval=delivery.flush_interval,
        batch_body=delivery.batch_body,
        in_flight=delivery.in_flight,
        drain_timeout=delivery.drain_timeout,
        start_jitter=delivery.start_jitter,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        log_format=log_format,
    )


def dead_letter_row(d: DeadLetter) -> DeadLetterRow:
    return DeadLetterRow(
        seq=d.seq,
        event_id=d.event_id,
        session_id=d.session_id,
        state=d.state,
        failed_at=format_timestamp(datetime.fromtimestamp(d.failed_at, UTC)),
        status=d.status,
        reason=d.reason,
        body=d.body.decode("utf-8", "replace"),
    )
