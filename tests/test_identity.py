"""Session-id derivation: deterministic UUID v5, distinct per pid, start time and machine."""

from __future__ import annotations

import stat
import sys
import uuid
from pathlib import Path

import pytest

from quintd import identity
from quintd.identity import (
    SESSION_NAMESPACE,
    machine_id,
    native_session_id,
    process_session_id,
)


def test_namespace_is_the_documented_one() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://quintai.dev/ns/session") == SESSION_NAMESPACE


def test_process_id_matches_documented_formula() -> None:
    expected = uuid.uuid5(SESSION_NAMESPACE, "m1:claude-code:pid:42:1700000000123")
    assert process_session_id("m1", "claude-code", 42, 1700000000123) == str(expected)


def test_deterministic_and_version_5() -> None:
    a = process_session_id("m1", "codex", 100, 1000)
    assert a == process_session_id("m1", "codex", 100, 1000)
    assert uuid.UUID(a).version == 5


def test_differs_by_pid_start_time_machine_and_platform() -> None:
    base = process_session_id("m1", "codex", 100, 1000)
    variants = {
        process_session_id("m1", "codex", 101, 1000),
        process_session_id("m1", "codex", 100, 1001),
        process_session_id("m2", "codex", 100, 1000),
        process_session_id("m1", "gemini-cli", 100, 1000),
    }
    assert base not in variants and len(variants) == 4


def test_native_ids() -> None:
    conv = native_session_id("m1", "claude-code", "fbd39e94")
    sub = native_session_id("m1", "claude-code", "fbd39e94", agent_id="a50")
    assert conv == str(uuid.uuid5(SESSION_NAMESPACE, "m1:claude-code:fbd39e94"))
    assert sub == str(uuid.uuid5(SESSION_NAMESPACE, "m1:claude-code:fbd39e94:agent:a50"))
    assert conv != sub


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's /etc/machine-id")
def test_machine_id_from_os_on_linux(tmp_path: Path) -> None:
    # Every systemd Linux has one (systemd-machine-id-setup writes it at first boot).
    assert Path("/etc/machine-id").is_file(), "no /etc/machine-id on this Linux box"
    assert machine_id(tmp_path) == Path("/etc/machine-id").read_text().strip()
    assert not (tmp_path / "machine-id").exists()


def test_generated_machine_id_is_kept(tmp_path: Path, monkeypatch) -> None:
    # This machine has an OS id; exercise the fallback path that machines without one take.
    monkeypatch.setattr(identity, "_os_machine_id", lambda: None)
    first = machine_id(tmp_path)
    assert len(first) == 32 and int(first, 16) >= 0
    assert machine_id(tmp_path) == first
    kept = tmp_path / "machine-id"
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
