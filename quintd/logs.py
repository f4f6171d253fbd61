"""Logging that reads well in journald and launchd logs: one line per event of note.

Text (default): ``LEVEL component: message key=value ...`` (no timestamp: the journal
has one). JSON (``--log-format json``): one object per line with ``ts``, ``level``,
``component``, ``msg`` and the fields. Structured fields travel in ``extra={"fields":
{...}}``. The token is scrubbed from every line, whatever put it there.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
REDACTED = "<redacted>"


def fields(**values: Any) -> dict[str, Any]:
    """``log.info("msg", extra=fields(session_id=...))``."""
    return {"fields": values}


def _component(name: str) -> str:
    return name.removeprefix("quintd.") if name.startswith("quintd.") else name


def _text_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {_component(record.name)}: {record.getMessage()}"
        extra: dict[str, Any] = getattr(record, "fields", {}) or {}
        if extra:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "component": _component(record.name),
            "msg": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", {}) or {}).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class SecretScrubber(logging.Filter):
    """Replace the token wherever it appears, as a last line of defence."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        scrubbed = message
        for secret in self.secrets:
            scrubbed = scrubbed.replace(secret, REDACTED)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        extra = getattr(record, "fields", None)
        if extra:
            record.fields = {k: _scrub(v, self.secrets) for k, v in extra.items()}
        return True


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


_scrubber = SecretScrubber()


def setup_logging(level: str, log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_scrubber)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO; keep the journal to what matters.
    for noisy in ("httpx", "httpcore", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def register_secret(secret: str | None) -> None:
    if secret and secret not in _scrubber.secrets:
        _scrubber.secrets.append(secret)
