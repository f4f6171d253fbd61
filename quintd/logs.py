"""Logging that reads well in journald and launchd logs: one line per event of note.

Text (default): ``LEVEL component: message key=value ...`` (no timestamp: the journal
has one). JSON (``--log-format json``): one object per line with ``ts``, ``level``,
``component``, ``msg`` and the fields. Structured fields travel in ``extra={"fields":
{...}}``. The token is scrubbed from every line, whatever put it there.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from quintd.part_settings import PartSettings, setting

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
REDACTED = "<redacted>"


class LogSettings(PartSettings):
    level: LogLevel = setting(
        "info",
        file="log.level",
        env="QUINTD_LOG_LEVEL",
        doc="`debug`, `info`, `warning` or `error`.",
    )
    format: LogFormat = setting(
        "text",
        file="log.format",
        doc="`text`: `LEVEL component: message key=value ...`, one line per event of note "
        "(journald and launchd add the time). `json`: one object per line with `ts`, "
        "`level`, `component`, `msg` and the fields, for collectors. `quintd run "
        "--log-format` overrides it.",
    )


def fields(**values: Any) -> dict[str, Any]:
    """``log.info("msg", extra=fields(session_id=...))``."""
    return {"fields": values}


def _component(name: str) -> str:
    return name.removeprefix("quintd.") if name.startswith("quintd.") else name


_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def log_safe(text: str) -> str:
    """Control characters (ESC, BEL, NUL ...), bidi overrides and stray surrogates shown as
    escapes: a file name or title from an agent cannot clear a terminal, forge a log line or
    reorder what an operator reads. Newlines inside a message are escaped too."""
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _text_value(value: Any) -> str:
    text = log_safe(str(value))
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {_component(record.name)}: {log_safe(record.getMessage())}"
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
            "msg": log_safe(record.getMessage()),
        }
        for key, value in (getattr(record, "fields", {}) or {}).items():
            data.setdefault(key, log_safe(value) if isinstance(value, str) else value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


_secrets: list[str] = []


def scrub(line: str) -> str:
    """Replace every registered secret, also in its JSON-escaped spelling."""
    for secret in _secrets:
        line = redact(line, secret)
    return line


def redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret``, also in its JSON-escaped spelling."""
    if not secret:
        return text
    text = text.replace(secret, REDACTED)
    escaped = json.dumps(secret)[1:-1]
    return text.replace(escaped, REDACTED) if escaped != secret else text


class ScrubbingText(TextFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class ScrubbingJson(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup_logging(level: str, log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    apply_log_settings(level, log_format)
    # watchdog logs every event at debug; keep the journal to what matters.
    for noisy in ("watchdog",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def apply_log_settings(level: str, log_format: LogFormat = "text") -> None:
    """Level and format of the running logger (at start, and on reload)."""
    root = logging.getLogger()
    for handler in root.handlers:
        # The token is scrubbed from the finished line: message, fields and tracebacks.
        handler.setFormatter(ScrubbingJson() if log_format == "json" else ScrubbingText())
    root.setLevel(level.upper())


def register_secret(secret: str | None) -> None:
    if secret and secret not in _secrets:
        _secrets.append(secret)
