"""The status report in the Prometheus text exposition format (version 0.0.4), for the
collectors fleets already run: node_exporter's textfile collector reads the output of
``quintd status --format prometheus`` (README: Metrics).

Counters are the daemon's own since it started (a restart resets them, as Prometheus
expects of counters); gauges are the state now.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from quintd.protocol import StatusReport

PREFIX = "quintd"


def render_prometheus(s: StatusReport) -> str:
    out = _Writer()
    out.metric("up", "gauge", "1 while the daemon answers.", [({}, 1)])
    out.metric("info", "gauge", "The daemon's version.", [({"version": s.version}, 1)])
    out.metric("uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, s.uptime_s)])
    by_kind = Counter((row.platform, row.state) for row in s.sessions)
    out.metric(
        "sessions",
        "gauge",
        "Live sessions, by platform and state.",
        [({"platform": p, "state": st}, n) for (p, st), n in sorted(by_kind.items())],
    )
    q = s.queue
    out.metric("queue_events", "gauge", "Events waiting for delivery.", [({}, q.depth)])
    out.metric("queue_bytes", "gauge", "Bytes of queued event bodies.", [({}, q.bytes)])
    out.metric(
        "queue_max_bytes", "gauge", "The queue's bound (queue.max_bytes).", [({}, q.max_bytes)]
    )
    out.metric(
        "queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest queued event (0 when the queue is empty).",
        [({}, q.oldest_age_s or 0.0)],
    )
    out.metric(
        "queue_waiting_in_memory_events",
        "gauge",
        "Events not stored yet because the state filesystem is full.",
        [({}, q.waiting_in_memory)],
    )
    out.metric("dead_letters", "gauge", "Events in the dead-letter table.", [({}, q.dead_letters)])
    out.metric(
        "refused_events_total",
        "counter",
        "Transitions never queued (at the queue's bound, or shed while the disk was full), "
        "by state.",
        [({"state": st}, n) for st, n in sorted(q.refused_by_state.items())] or [({}, q.refused)],
    )
    out.metric(
        "coalesced_events_total",
        "counter",
        "Queued intermediate idle/active events dropped at the bound.",
        [({}, q.coalesced)],
    )
    d = s.delivery
    out.metric(
        "delivered_events_total", "counter", "Events the server accepted.", [({}, d.delivered)]
    )
    out.metric(
        "dead_lettered_events_total",
        "counter",
        "Events the server refused for good (moved to the dead-letter table).",
        [({}, d.dead_lettered)],
    )
    out.metric(
        "last_success_timestamp_seconds",
        "gauge",
        "When the server last accepted a request (Unix time; 0: never since start).",
        [({}, _epoch(d.last_success))],
    )
    out.metric(
        "delivery_waiting_for_token",
        "gauge",
        "1 while nothing is sent for want of a token.",
        [({}, int(d.waiting_for_token))],
    )
    out.metric(
        "delivery_paused",
        "gauge",
        "1 while the server refuses the token.",
        [({}, int(bool(d.paused)))],
    )
    out.metric(
        "delivery_pace",
        "gauge",
        "How delivery sends while the organisation's limit is shared: 1 for the mode now.",
        [({"mode": mode}, int(mode == d.pace)) for mode in ("rounds", "paced", "waiting")],
    )
    out.metric(
        "delivery_pace_rate",
        "gauge",
        "Requests per second while paced (0 otherwise).",
        [({}, d.pace_rate)],
    )
    sc = s.scan
    out.metric(
        "scan_duration_seconds",
        "gauge",
        "How long the last pass took.",
        [({}, sc.last_duration_ms / 1000)],
    )
    out.metric("scan_passes_total", "counter", "Passes over the process table.", [({}, sc.passes)])
    out.metric("scan_errors_total", "counter", "Passes that failed.", [({}, sc.errors)])
    a = s.agent_state
    out.metric(
        "reader_errors_total", "counter", "Failures reading agents' state files.", [({}, a.errors)]
    )
    out.metric(
        "reader_garbage_lines_total",
        "counter",
        "Lines or records of agents' files skipped as garbage.",
        [({}, a.garbage_lines)],
    )
    out.metric(
        "reader_files_refused_total",
        "counter",
        "Agents' files refused (a link, another owner, too large).",
        [({}, a.files_refused)],
    )
    out.metric("reloads_total", "counter", "Configuration reloads applied.", [({}, s.reloads)])
    out.metric(
        "last_reload_failed",
        "gauge",
        "1 if the last reload was rejected (the running configuration was kept).",
        [({}, int(s.last_reload_error is not None))],
    )
    return out.text()


def render_down() -> str:
    """What a scrape of a machine whose daemon does not answer says."""
    out = _Writer()
    out.metric("up", "gauge", "1 while the daemon answers.", [({}, 0)])
    return out.text()


class _Writer:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        full = f"{PREFIX}_{name}"
        self._lines.append(f"# HELP {full} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self._lines.append(f"{full}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
