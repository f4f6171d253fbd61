"""The human-readable views of the command line: the status report, dead letters and the
scan table. Every string that came from an agent or the process table is cleaned here
before it reaches the terminal: nothing is printed raw."""

from __future__ import annotations

from collections.abc import Sequence

from quintd.model import clean_text
from quintd.protocol import DeadLetterRow, StatusReport


def cell(value: object, limit: int = 200) -> str:
    """A table cell: cleaned (no controls, no bidi overrides, one line), capped, or "-"."""
    if value is None:
        return "-"
    return clean_text(str(value), limit) or "-"


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def render_status(s: StatusReport) -> str:
    queue = s.queue
    delivery = s.delivery
    lines = []
    if not s.token_set or delivery.waiting_for_token:
        lines.append(
            "NOT SENDING: no token; set cloud.token_file (or cloud.token, or QUINTD_TOKEN "
            "in the service's environment), then reload; events wait in the queue"
        )
    lines += [
        f"quintd {cell(s.version)} running: pid {s.pid}, up {duration(s.uptime_s)}",
        f"config:      {cell(s.config_file or 'built-in defaults', 4096)}",
        f"endpoint:    {cell(s.endpoint, 4096)}",
        "token:       " + ("set" if s.token_set else "not set: delivery waits for a token"),
        f"queue:       {queue.depth} event(s), {queue.bytes} bytes"
        + (f", oldest {duration(queue.oldest_age_s)}" if queue.oldest_age_s else "")
        + f"; dead letters: {queue.dead_letters}",
        f"delivered:   {delivery.delivered}; last success: {cell(delivery.last_success)}",
        f"last error:  {cell(delivery.last_error, 500)}",
    ]
    if queue.disk_full:
        lines.append(
            "disk full:   the state filesystem is full; transitions wait in memory and are "
            "stored when there is room"
        )
    if queue.coalesced or queue.refused:
        by_state = ", ".join(f"{n} {state}" for state, n in sorted(queue.refused_by_state.items()))
        lines.append(
            f"at bound:    {queue.coalesced} coalesced, {queue.refused} refused"
            + (f" ({by_state})" if by_state else "")
            + f" (max_bytes {queue.max_bytes})"
        )
    if queue.lost_databases:
        lines.append(
            f"lost:        {queue.lost_databases} database(s): {cell(queue.last_loss, 500)}"
        )
    if not delivery.alive:
        lines.append("delivery:    the delivery thread has stopped; restart quintd")
    if delivery.paused:
        lines.append(f"paused:      {cell(delivery.paused, 500)}")
    if delivery.next_attempt_at:
        lines.append(f"next try:    {cell(delivery.next_attempt_at)}")
    if delivery.pace == "paced":
        lines.append(
            f"pace:        {delivery.pace_rate:g} request(s)/s, one at a time "
            "(the organisation's limit refused some: it is shared)"
        )
    elif delivery.pace == "waiting":
        lines.append("pace:        waiting its turn (the organisation's limit refused it)")
    scan = s.scan
    lines.append(
        f"scan:        {scan.passes} pass(es), {scan.early_passes} early; last "
        f"{scan.last_duration_ms:.1f} ms; exits from {cell(scan.exits_from)}"
        + (f"; {scan.errors} failed, last: {cell(scan.last_error, 500)}" if scan.errors else "")
    )
    if scan.identity_refused:
        refused = ", ".join(f"{n} {cell(r)}" for r, n in sorted(scan.identity_refused.items()))
        lines.append(f"identities:  files refused: {refused}")
    if s.last_reload_error:
        lines.append(f"reload:      rejected: {cell(s.last_reload_error, 1000)}")
    sessions = s.sessions
    lines.append(f"sessions:    {len(sessions)}")
    if sessions:
        rows = [["SESSION", "PLATFORM", "PID", "STATE", "IN STATE", "NAME", "PARENT"]]
        # Working first, then waiting; the oldest first within each.
        order = {"active": 0, "idle": 1}
        for sess in sorted(sessions, key=lambda x: (order.get(x.state, 2), x.started_at)):
            rows.append(
                [
                    cell(sess.session_id),
                    cell(sess.platform),
                    str(sess.pid),
                    cell(sess.state),
                    duration(sess.in_state_s),
                    cell(sess.session_name, 60),
                    cell(sess.parent_id),
                ]
            )
        lines.extend("  " + line for line in table(rows))
    return "\n".join(lines)


def render_dead_letters(letters: Sequence[DeadLetterRow]) -> str:
    if not letters:
        return "no dead letters"
    rows = [["SEQ", "FAILED", "STATUS", "STATE", "SESSION", "REASON"]]
    for d in letters:
        rows.append(
            [
                str(d.seq),
                cell(d.failed_at),
                str(d.status or "-"),
                cell(d.state),
                cell(d.session_id),
                cell(d.reason, 80),
            ]
        )
    return "\n".join(table(rows))
