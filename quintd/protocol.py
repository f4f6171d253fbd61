"""The control protocol, defined once: request names and the shapes of what the daemon
answers. The daemon builds these values and sends them as JSON; the command line decodes
the JSON back into them (checking every field) and renders from the typed value.

Wire format: one JSON object per connection, ``{"command": "status", ...}``; one JSON line
back, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar


class Command(StrEnum):
    STATUS = "status"
    DEAD_LETTERS = "dead_letters"
    REQUEUE = "requeue"


class ProtocolError(ValueError):
    """A message that does not have the shape the protocol defines."""


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    platform: str
    pid: int
    state: str
    session_name: str | None
    model: str | None
    parent_id: str | None
    started_at: str
    in_state_s: float  # how long it has been in its state
    signing_id: str | None = None


@dataclass(frozen=True)
class QueueReport:
    depth: int
    bytes: int
    max_bytes: int
    oldest_age_s: float | None
    dead_letters: int
    produced: int
    coalesced: int
    refused: int
    lost_databases: int
    last_loss: str | None
    # Transitions never queued (at the bound, or shed from memory while the disk was full),
    # by the state they carried.
    refused_by_state: dict[str, int] = dataclasses.field(default_factory=dict)
    disk_full: bool = False  # the state filesystem is full: events wait in memory
    waiting_in_memory: int = 0  # events not stored yet (a full disk)
    waiting_by_state: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryReport:
    waiting_for_token: bool
    delivered: int
    dead_lettered: int
    last_success: str | None
    last_error: str | None
    paused: str | None
    next_attempt_at: str | None
    alive: bool
    # How it sends while the organisation's limit is shared (delivery_policy.Pace): "rounds",
    # "paced" (at pace_rate requests/s) or "waiting" (its turn, after a 429).
    pace: str = "rounds"
    pace_rate: float = 0.0


@dataclass(frozen=True)
class AgentStateReport:
    state_dirs: int
    watched_dirs: int
    unwatchable_dirs: int
    lines_read: int
    garbage_lines: int
    files_refused: int
    errors: int
    # Conversations a process named that belong to another user's files, or that another
    # process runs already: ignored.
    refused_claims: int = 0
    # What users' files may cost the daemon (README: Threat model, budgets):
    watches: int = 0  # inotify watches held for agents' directories
    watches_refused: int = 0  # directories polled instead: their user's budget was spent
    watches_noisy: int = 0  # directories polled for a minute: their events came too fast
    databases_set_aside: dict[str, int] = dataclasses.field(default_factory=dict)  # by why
    copied_bytes: int = 0  # agents' databases copied (nobody had them open)
    copies_refused: dict[str, int] = dataclasses.field(default_factory=dict)  # by why
    passes_over_read_budget: int = 0  # passes whose reads were cut at the pass's budget


@dataclass(frozen=True)
class ScanReport:
    passes: int
    last_duration_ms: float
    errors: int
    last_error: str | None
    early_passes: int = 0  # brought forward by an exit or a new file
    exits_from: str = "scan"  # "pidfd" (Linux), "kqueue" (macOS) or "scan"
    # Files an identity was not taken from, by reason ("not a regular file", "a link"...).
    identity_refused: dict[str, int] = dataclasses.field(default_factory=dict)
    # New sessions held back now: their user announced its budget's worth this minute.
    deferred_sessions: int = 0
    # Agents waiting their turn, running or ended before it (announced when it comes), and
    # those the full queue could not remember (if they end first, nothing tells of them).
    waiting_turn: int = 0
    waiting_unremembered: int = 0
    # Passes that file events would have brought forward, put off (one user's churn).
    passes_put_off: int = 0
    # Where new processes are learnt of: "connector" (the kernel's process events) or
    # "scan" (a listing of /proc each pass); with events, /proc is listed `listings` times.
    process_events: str = "scan"
    events_read: int = 0  # from the kernel: forks, execs, exits, renames
    events_dropped: int = 0  # by the kernel (its socket full): a listing makes up for them
    listings: int = 0
    execs_skipped: int = 0  # execs not worth a look (neither name nor file of an agent)
    looked_at_once: int = 0  # execs looked at as they came
    looks_put_off: int = 0  # execs past the looks' rate, left to the next pass
    left_to_listing: int = 0  # processes the next pass had no room for: a listing finds them
    lost_events: int = 0  # reads that found the kernel had dropped events


@dataclass(frozen=True)
class SettingsReport:
    """The settings each component runs with now, as that component reports them."""

    scan_interval: float
    platforms: int
    idle_after: float
    max_bytes: int
    min_free_disk: int
    endpoint: str
    timeout: float
    batch_size: int
    flush_interval: float
    batch_body: bool
    in_flight: int
    drain_timeout: float
    start_jitter: float
    log_level: str
    log_format: str
    kernel_exits: bool = True
    process_events: bool = True
    full_listing_interval: float = 30.0
    watches_per_user: int = 1000
    new_per_user_per_minute: int = 60


@dataclass(frozen=True)
class StatusReport:
    version: str
    pid: int
    started_at: str
    uptime_s: float
    config_file: str | None
    reloads: int
    last_reload_error: str | None
    state_dir: str
    endpoint: str
    token_set: bool
    sessions: list[SessionRow]
    queue: QueueReport
    delivery: DeliveryReport
    agent_state: AgentStateReport
    scan: ScanReport
    settings: SettingsReport


@dataclass(frozen=True)
class DeadLetterRow:
    seq: int
    event_id: str
    session_id: str
    state: str
    failed_at: str
    status: int | None
    reason: str
    body: str


@dataclass(frozen=True)
class RequeueRequest:
    seqs: list[int] | None  # None: every dead letter
    force: bool = False


@dataclass(frozen=True)
class RequeueRefusal:
    seq: int
    reason: str


@dataclass(frozen=True)
class RequeueReply:
    requeued: int
    refused: list[RequeueRefusal] = dataclasses.field(default_factory=list)


def to_json(value: Any) -> Any:
    """A protocol value as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


T = TypeVar("T")


def from_json(cls: type[T], data: Any, where: str = "reply") -> T:
    """Decode JSON data into a protocol dataclass, checking every field's type."""
    return typing.cast(T, _decode(cls, data, where))


def _decode(kind: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(kind):
            try:
                return _decode(option, data, where)
            except ProtocolError as exc:
                errors.append(str(exc))
        raise ProtocolError(errors[-1] if errors else f"{where}: no type matches")
    if kind is type(None):
        if data is not None:
            raise ProtocolError(f"{where}: expected null, got {type(data).__name__}")
        return None
    if origin is list:
        if not isinstance(data, list):
            raise ProtocolError(f"{where}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(kind)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(data).__name__}")
        _, item = typing.get_args(kind)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in data.items()}
    if dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise ProtocolError(f"{where}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(kind)
        values = {}
        for f in dataclasses.fields(kind):
            if f.name not in data:
                has_default = (
                    f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING
                )
                if has_default:
                    continue
                raise ProtocolError(f"{where}.{f.name}: missing")
            values[f.name] = _decode(hints[f.name], data[f.name], f"{where}.{f.name}")
        constructor: Any = kind
        return constructor(**values)
    if kind is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
        raise ProtocolError(f"{where}: expected a number, got {type(data).__name__}")
    if kind is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise ProtocolError(f"{where}: expected an integer, got {type(data).__name__}")
    if kind in (str, bool):
        if type(data) is kind:
            return data
        raise ProtocolError(f"{where}: expected {kind.__name__}, got {type(data).__name__}")
    raise ProtocolError(f"{where}: unsupported type {kind!r}")
