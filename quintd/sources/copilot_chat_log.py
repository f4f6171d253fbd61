"""One VS Code chat session as its file tells it (see ``copilot_chat.py`` for where the
files are, and the VS Code sources this follows): the session log's mutations replayed
(``objectMutationLog.ts``), keeping only the request fields the reader needs, never the
prompts or answers.

- the log: ``{"kind": 0, "v": <the whole session>}`` first (again when it is compacted:
  the file is rewritten), then ``{"kind": 1, "k": [path], "v": value}`` (set),
  ``{"kind": 2, "k": [path], "v": [items], "i": index}`` (push, cutting the array at
  ``i`` first) and ``{"kind": 3, "k": [path]}`` (delete). A pre-1.109 flat file is the
  whole session.
- the session: ``sessionId``, ``creationDate`` (ms), ``customTitle``, ``requests``: per
  request ``requestId``, ``timestamp`` (ms), ``modelId``, ``modelState`` ``{"value": n}``
  with ``ResponseModelState`` Pending 0, Complete 1, Cancelled 2, Failed 3, NeedsInput 4;
  ``pendingRequests`` (queued).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quintd.model import Status
from quintd.sources.files import identifier, text
from quintd.sources.times import parse_time

MAX_REQUESTS = 10_000
PENDING, NEEDS_INPUT = 0, 4  # ResponseModelState


@dataclass
class _Request:
    request_id: str | None = None
    timestamp: float | None = None  # epoch seconds
    model: str | None = None
    state: int | None = None  # ResponseModelState


@dataclass
class ChatSession:
    """The fields of one chat session that matter here, kept as its log mutates them."""

    session_id: str | None = None
    created: float | None = None
    requests: dict[int, _Request] = field(default_factory=dict)  # by index
    queued: int = 0  # pendingRequests

    def load(self, value: Any) -> None:
        """A whole session (a log's initial entry, or a flat file)."""
        if not isinstance(value, dict):
            raise ValueError("a session is an object")
        self.session_id = identifier(value.get("sessionId"))
        self.created = parse_time(value.get("creationDate"))
        self.requests = _requests(value.get("requests"), 0)
        queued = value.get("pendingRequests")
        self.queued = len(queued) if isinstance(queued, list) else 0

    def apply(self, entry: dict[str, Any]) -> None:
        """One mutation of the log (``objectMutationLog.ts``: ``EntryKind``)."""
        kind, path = entry.get("kind"), entry.get("k")
        if kind == 0:
            self.load(entry.get("v"))
            return
        if not isinstance(path, list) or not path or kind not in (1, 2, 3):
            raise ValueError("not a mutation")
        value = entry.get("v") if kind != 3 else None
        top = path[0]
        if top == "requests":
            self._requests(kind, path[1:], value, entry.get("i"))
        elif top == "pendingRequests" and len(path) == 1:
            if kind == 2:
                cut = entry.get("i")
                base = (
                    min(cut, self.queued) if isinstance(cut, int) and _index(cut) else self.queued
                )
                self.queued = base + (len(value) if isinstance(value, list) else 0)
            else:
                self.queued = len(value) if isinstance(value, list) else 0
        elif path == ["creationDate"] and kind == 1:
            self.created = parse_time(value)

    def _requests(self, kind: int, rest: list[Any], value: Any, cut: Any) -> None:
        if not rest:  # the whole array: set (replaced) or push (appended, cut first)
            if kind == 2:
                if _index(cut):
                    self.requests = {i: r for i, r in self.requests.items() if i < cut}
                start = max(self.requests, default=-1) + 1
                self.requests.update(_requests(value, start))
            else:
                self.requests = _requests(value, 0)
            return
        index = rest[0]
        if not _index(index) or index >= MAX_REQUESTS:
            raise ValueError("not a request's index")
        if len(rest) == 1:  # one request replaced
            if kind == 3 or value is None:
                self.requests.pop(index, None)
            else:
                self.requests[index] = _request(value)
            return
        request = self.requests.setdefault(index, _Request())
        if len(rest) == 2 and rest[1] in ("requestId", "timestamp", "modelId", "modelState"):
            _set(request, rest[1], value)

    @property
    def last(self) -> _Request | None:
        return self.requests[max(self.requests)] if self.requests else None

    @property
    def status(self) -> Status:
        last = self.last
        if self.queued or (last is not None and last.state == PENDING):
            return "busy"
        if last is not None and last.state == NEEDS_INPUT:
            return "waiting"
        return "idle"

    def signature(self) -> tuple[object, ...]:
        last = self.last
        return (len(self.requests), self.queued, last and (last.request_id, last.state))


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _requests(value: Any, start: int) -> dict[int, _Request]:
    if not isinstance(value, list):
        return {}
    return {start + i: _request(item) for i, item in enumerate(value[:MAX_REQUESTS])}


def _request(value: Any) -> _Request:
    request = _Request()
    if isinstance(value, dict):
        for key in ("requestId", "timestamp", "modelId", "modelState"):
            _set(request, key, value.get(key))
    return request


def _set(request: _Request, key: str, value: Any) -> None:
    if key == "requestId":
        request.request_id = identifier(value)
    elif key == "timestamp":
        request.timestamp = parse_time(value)
    elif key == "modelId":
        request.model = text(value, 100)
    else:  # modelState: {"value": n, "completedAt"?: ms}
        state = value.get("value") if isinstance(value, dict) else None
        request.state = state if _index(state) else None
