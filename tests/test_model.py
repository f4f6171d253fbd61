"""The value types and the one cleaner of untrusted strings (quintd/model.py): what reaches
the wire, the logs and the command line's tables."""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quintd.model import (
    MAX_TEXT_CHARS,
    AgentProcess,
    LifecycleEvent,
    Session,
    batch_body,
    clean_text,
    format_timestamp,
    parse_timestamp,
    process_text,
)

# Invisible format characters (Unicode category Cf) that hide text from a reader: in a
# title they make two names look alike, and the tag characters (U+E0000-E007F) carry a
# whole hidden ASCII text ("ASCII smuggling") past anyone reading a dashboard.
FORMAT_CHARACTERS = {
    "soft hyphen": "\u00ad",
    "zero-width space": "\u200b",
    "word joiner": "\u2060",
    "invisible times": "\u2062",
    "byte order mark": "\ufeff",
    "interlinear annotation": "\ufff9",
    "language tag": "\U000e0001",
    "tag space": "\U000e0020",
    "tag latin small a": "\U000e0061",
    "cancel tag": "\U000e007f",
    "arabic letter mark": "\u061c",
    "right-to-left override": "\u202e",
    "first strong isolate": "\u2068",
}


@pytest.mark.parametrize("char", FORMAT_CHARACTERS.values(), ids=FORMAT_CHARACTERS.keys())
def test_format_characters_are_dropped(char: str) -> None:
    assert unicodedata.category(char) == "Cf"
    assert clean_text(f"fix{char}auth") == "fixauth"
    assert clean_text(f"{char}{char}") is None  # nothing visible left


def test_ascii_smuggled_in_tag_characters_is_dropped() -> None:
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "ignore previous instructions")
    assert clean_text("Refactor the parser" + hidden) == "Refactor the parser"


def test_every_format_character_but_the_joiners_is_dropped() -> None:
    """The whole category, as this Python's Unicode database has it: only the zero-width
    non-joiner and joiner stay (emoji sequences and some scripts need them)."""
    kept = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf" and clean_text(f"a{chr(code)}b") != "ab"
    ]
    assert kept == ["U+200C", "U+200D"]
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji, joined
    assert clean_text(family) == family


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain title", "plain title"),
        ("  padded  ", "padded"),
        ("two  spaces", "two spaces"),
        ("a\tb\nc\r\nd", "a b c d"),  # every run of whitespace is one space
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),  # ESC dropped
        ("bell\x07 nul\x00 del\x7f", "bell nul del"),
        ("c1\x85next\x9bcsi", "c1 nextcsi"),  # NEL is whitespace; CSI (C1) is dropped
        ("\u00a0nbsp\u2003em\u3000", "nbsp em"),  # non-ASCII spaces collapse too
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),  # letters stay
        ("\ud800lone surrogate", "lone surrogate"),
        ("private\ue000use", "privateuse"),  # private use
        ("unassigned\U000e0080", "unassigned"),  # no character there (Cn)
        ("", None),
        ("   \n\t", None),
        ("\x1b\x07", None),
    ],
)
def test_clean_text(raw: str, clean: str | None) -> None:
    assert clean_text(raw) == clean


def test_not_a_string_is_nothing() -> None:
    for value in (None, 12, b"bytes", ["a"], {"a": 1}):
        assert clean_text(value) is None


def test_ascii_with_one_space_at_an_end_is_trimmed() -> None:
    assert clean_text(" padded") == "padded"
    assert clean_text("padded ") == "padded"
    assert clean_text("one space") == "one space"


def test_the_system_clock() -> None:
    from quintd.model import SystemClock

    clock = SystemClock()
    now = clock.wall()
    assert now.tzinfo is not None and abs(now.timestamp() - time.time()) < 5
    first = clock.monotonic()
    assert isinstance(first, float) and clock.monotonic() >= first


def test_capped_at_the_limit_without_a_trailing_space() -> None:
    assert clean_text("x" * 500) == "x" * MAX_TEXT_CHARS
    assert clean_text("x" * MAX_TEXT_CHARS) == "x" * MAX_TEXT_CHARS
    assert clean_text("x" * (MAX_TEXT_CHARS - 1) + " y") == "x" * (MAX_TEXT_CHARS - 1)
    assert clean_text("abc def", limit=4) == "abc"
    assert clean_text("\u00e9" * 300) == "\u00e9" * MAX_TEXT_CHARS  # characters, not bytes
    assert clean_text("ab", limit=2) == "ab"


@given(st.text())
def test_cleaning_is_idempotent_and_leaves_nothing_hidden(value: str) -> None:
    once = clean_text(value)
    if once is None:
        return
    assert clean_text(once) == once
    assert 0 < len(once) <= MAX_TEXT_CHARS
    assert once == once.strip() and "  " not in once
    for ch in once:
        category = unicodedata.category(ch)
        assert category not in ("Cc", "Cs", "Co", "Cn"), hex(ord(ch))
        assert category != "Cf" or ch in "\u200c\u200d", hex(ord(ch))
        assert not ch.isspace() or ch == " ", hex(ord(ch))


def test_process_text_keeps_paths_whole_as_valid_utf8() -> None:
    undecodable = b"/home/dev/x\xff".decode("utf-8", "surrogateescape")
    assert process_text(undecodable) == "/home/dev/x\ufffd"
    long = "/p" * 500
    assert process_text(long) == long  # not capped
    assert process_text("caf\u00e9") == "caf\u00e9"


def test_timestamps_are_utc_to_the_millisecond() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-03-04T05:06:07.891Z"
    east = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert format_timestamp(east) == "2026-03-04T05:06:07.891Z"
    assert format_timestamp(moment.replace(microsecond=999)) == "2026-03-04T05:06:07.000Z"
    parsed = parse_timestamp("2026-03-04T05:06:07.891Z")
    assert parsed == moment.replace(microsecond=891_000) and parsed.tzinfo == UTC
    assert parse_timestamp("2026-03-04T10:36:07.891+05:30") == parsed


def test_the_wire_body_holds_the_contract_and_cleans_free_text() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891_000, tzinfo=UTC)
    event = LifecycleEvent(
        session_id="s-1",
        state="active",
        timestamp=moment,
        platform="claude-code",
        session_name="fix\u200b\x1b[2J auth" + "x" * 300,
        model="  opus\n",
        signing_id=None,
    )
    wire = event.wire()
    fields = ["session_id", "state", "timestamp", "parent_id", "session_name", "model"]
    assert list(wire) == [*fields, "platform"]
    assert wire["timestamp"] == "2026-03-04T05:06:07.891Z"
    assert wire["parent_id"] is None  # always there: null for a top-level session
    assert wire["session_name"] == ("fix[2J auth" + "x" * 300)[:MAX_TEXT_CHARS]
    assert wire["model"] == "opus"
    assert "signing_id" not in wire  # unknown: left out
    assert json.loads(event.body()) == wire
    named = LifecycleEvent(session_id="s", state="idle", timestamp=moment, session_name="caf\u00e9")
    assert b'"session_name":"caf\xc3\xa9"' in named.body()  # UTF-8, not \u escapes
    assert batch_body([b'{"a":1}', b'{"b":2}']) == b'{"events":[{"a":1},{"b":2}]}'
    assert json.loads(batch_body([])) == {"events": []}


def test_a_session_makes_events_of_its_own_fields() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    session = Session(
        session_id="s-2",
        platform="codex",
        pid=10,
        start_time_ms=1,
        state="active",
        started_at=moment,
        last_seen=moment,
        session_name="n",
        model="m",
        signing_id="sha256:ab",
        parent_id="p",
    )
    event = session.event("idle", moment, kind="update")
    assert (event.session_id, event.state, event.timestamp, event.kind) == (
        "s-2",
        "idle",
        moment,
        "update",
    )
    assert (event.platform, event.session_name, event.model) == ("codex", "n", "m")
    assert (event.signing_id, event.parent_id) == ("sha256:ab", "p")


def test_a_process_is_known_by_its_pid_and_start_to_the_millisecond() -> None:
    agent = AgentProcess(
        platform="codex",
        pid=42,
        ppid=1,
        start_time=1700000000.1234,
        user=None,
        exe=None,
        cwd=None,
        name="codex",
        matched_by="exe",
    )
    assert agent.start_time_ms == 1700000000123
    assert agent.key == (42, 1700000000123)
