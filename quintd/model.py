"""The value types every stage passes on, and the ingest wire format, in one place.

scan -> :class:`AgentProcess`; sources -> :class:`ConversationFacts`; tracker ->
:class:`Session` and :class:`LifecycleEvent`; store and shipper -> the event's wire body.

This module imports nothing of quintd but ``errors``: every other module may import it,
and it never pulls in the state machine, the daemon or the command line.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

State = Literal["active", "idle", "ended"]
STATES: tuple[State, ...] = ("active", "idle", "ended")
# Why an event exists; never sent. The queue's bound policy keeps "start" and "end" always.
Kind = Literal["start", "transition", "update", "end"]
# An agent's own account of what it does, where it records one.
Status = Literal["busy", "idle", "waiting"]

# The cloud contract (docs: ingest-api.md).
INGEST_PATH = "/v1/sessions/ingest"
REQUIRED_FIELDS = ("session_id", "state", "timestamp")
OPTIONAL_FIELDS = ("session_name", "model", "signing_id", "platform", "parent_id")
MAX_TEXT_CHARS = 200  # every free-text string sent or printed is capped at this


class Clock(Protocol):
    def wall(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def wall(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def format_timestamp(moment: datetime) -> str:
    """ISO 8601, UTC, millisecond precision, with a ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- untrusted strings ------------------------------------------------------------------

# Unicode's bidirectional formatting characters: embeddings, overrides, isolates and marks.
# They reorder what a terminal or a dashboard shows ("U+202E" makes "exe.txt" of "txt.exe").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _dropped(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:  # C0, DEL, C1 (NUL, ESC, BEL, CSI ...)
        return not ch.isspace()
    if ch in _BIDI:
        return True
    # Surrogates (undecodable bytes), unassigned and private-use code points, and other
    # invisible format characters (zero-width joiners stay: emoji need them).
    category = unicodedata.category(ch)
    return category in ("Cs", "Co", "Cn") or (category == "Cf" and ch not in "\u200c\u200d")


def clean_text(value: object, limit: int = MAX_TEXT_CHARS) -> str | None:
    """An untrusted string made safe to send, log and print, or None when nothing is left.

    Controls (C0, C1, DEL, NUL), bidi overrides and isolates, surrogates and other
    invisible format characters are removed; every run of whitespace (newlines included)
    becomes one space; the result is capped at ``limit`` characters, never in the middle
    of a character. This is the one place strings from agents' files, process names and
    cwds are cleaned: the wire body, the logs and the command line's tables use it."""
    if not isinstance(value, str):
        return None
    if value.isascii() and value.isprintable():
        text = " ".join(value.split()) if "  " in value or value != value.strip() else value
    else:
        kept = "".join(" " if ch.isspace() else ch for ch in value if not _dropped(ch))
        text = " ".join(kept.split())
    if len(text) > limit:
        text = text[:limit].rstrip()
    return text or None


def process_text(value: str) -> str:
    """A string from the process table (bytes decoded with surrogate escapes) as valid
    UTF-8 text: a directory named b"x\\xff" must not stall the pipeline. Not capped: paths
    stay whole for local use; what is sent or printed goes through :func:`clean_text`."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- what the scan finds ------------------------------------------------------------------


@dataclass(frozen=True)
class AgentProcess:
    platform: str
    pid: int
    ppid: int
    start_time: float  # seconds since the epoch, as the OS reports it
    user: str | None
    exe: str | None
    cwd: str | None
    name: str
    matched_by: str
    signing_id: str | None = None
    parent_pid: int | None = None  # pid of the agent this one runs under, if any
    cpu_time: float = 0.0  # CPU seconds of the agent's process tree, read this pass
    # The file whose identity is the agent's: the executable, or an interpreter's script.
    identity_path: str | None = None
    uid: int | None = None  # the real uid of the process's owner
    # Whether the signing identity is settled: known, or given up on (no file, an error).
    signing_settled: bool = True

    @property
    def start_time_ms(self) -> int:
        return round(self.start_time * 1000)

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start_time_ms)


# -- what the agents' own state says ----------------------------------------------------


@dataclass(frozen=True)
class SubagentFacts:
    """A sub-agent of a conversation, as the agent's own files describe it."""

    agent_id: str
    name: str | None = None
    done: bool = False  # its result is in the parent's transcript
    last_write: float | None = None  # monotonic time its transcript last grew
    status: Status | None = None  # the agent's own record of it, where there is one
    model: str | None = None


@dataclass(frozen=True)
class ConversationFacts:
    """What an agent's own state says about the conversation a process runs now."""

    native_id: str
    status: Status | None = None  # the agent's own busy/idle/waiting, if it records one
    name: str | None = None
    model: str | None = None
    last_write: float | None = None  # monotonic time the transcript last grew
    subagents: tuple[SubagentFacts, ...] = ()
    # The uid of the user who owns the file naming this conversation: a conversation id
    # counts only for that user's processes (another user cannot claim it).
    owner_uid: int | None = None
    # The agent closed it while the process goes on (Cline's /clear marks its row
    # completed; its next conversation is written only at the next prompt): it ends now.
    over: bool = False


# -- sessions and their events ----------------------------------------------------------


@dataclass(frozen=True)
class LifecycleEvent:
    session_id: str
    state: State
    timestamp: datetime
    platform: str | None = None
    session_name: str | None = None
    model: str | None = None
    signing_id: str | None = None
    parent_id: str | None = None
    kind: Kind = field(default="transition", compare=False)

    def wire(self) -> dict[str, object]:
        """Exactly the fields of the ingest contract; optional ones only when known;
        free text cleaned and capped."""
        body: dict[str, object] = {
            "session_id": self.session_id,
            "state": self.state,
            "timestamp": format_timestamp(self.timestamp),
            "parent_id": self.parent_id,
        }
        for key in ("session_name", "model", "signing_id", "platform"):
            value = clean_text(getattr(self, key))
            if value is not None:
                body[key] = value
        return body

    def body(self) -> bytes:
        text = json.dumps(self.wire(), separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "replace")  # never fail on a stray surrogate


def batch_body(bodies: Sequence[bytes]) -> bytes:
    """The ``{"events": [...]}`` body, from stored single-event bodies."""
    return b'{"events":[' + b",".join(bodies) + b"]}"


@dataclass
class Session:
    session_id: str
    platform: str
    pid: int
    start_time_ms: int
    state: State
    started_at: datetime
    last_seen: datetime
    session_name: str | None = None
    model: str | None = None
    signing_id: str | None = None
    parent_id: str | None = None
    native_id: str | None = None  # the agent's own conversation id, if the session is one
    uid: int | None = None  # the owner of the process (and of the conversation's files)
    # In-memory only: activity bookkeeping on the monotonic clock.
    last_write: float | None = field(default=None, compare=False)
    sub_last_write: float | None = field(default=None, compare=False)
    cpu_time: float = field(default=0.0, compare=False)
    observed_at: float = field(default=0.0, compare=False)
    quiet_since: float = field(default=0.0, compare=False)
    state_since: float = field(default=0.0, compare=False)  # monotonic: entered its state

    def event(self, state: State, moment: datetime, kind: Kind = "transition") -> LifecycleEvent:
        return LifecycleEvent(
            session_id=self.session_id,
            state=state,
            timestamp=moment,
            platform=self.platform,
            session_name=self.session_name,
            model=self.model,
            signing_id=self.signing_id,
            parent_id=self.parent_id,
            kind=kind,
        )
