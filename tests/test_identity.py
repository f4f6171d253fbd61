"""Session-id derivation: deterministic UUID v5, distinct per pid, start time and machine."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import types
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


README = Path(__file__).resolve().parents[1] / "README.md"
_PROCESS = re.compile(r"(?P<m>[0-9a-f]{32}):(?P<platform>[a-z-]+):pid:(?P<pid>\d+):(?P<ms>\d+)")
_CONVERSATION = re.compile(
    r"(?P<m>[0-9a-f]{32}):(?P<platform>[a-z-]+):(?P<uid>\d+):(?P<native>[^:]+)"
    r"(?::agent:(?P<agent>[^:]+))?"
)
_RESUMED = re.compile(r"(?P<rest>.*?)(?::resumed:(?P<n>\d+))?")


def readme_vectors() -> list[tuple[str, str]]:
    """The known answers of the README's id rule: (name, session_id)."""
    text = README.read_text()
    table = text.split("<!-- session id vectors -->\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([0-9a-f-]{36})` \|$", table, re.MULTILINE)
    assert len(rows) == len(table.splitlines()) - 2 >= 8, table
    return rows


def id_from_the_code(name: str) -> str:
    """The id quintd's own functions give for the inputs the name spells out."""
    resumed = _RESUMED.fullmatch(name)
    assert resumed is not None
    rest, n = resumed["rest"], int(resumed["n"] or 0)
    if process := _PROCESS.fullmatch(rest):
        pid, ms = int(process["pid"]), int(process["ms"])
        return process_session_id(process["m"], process["platform"], pid, ms, resumed=n)
    conversation = _CONVERSATION.fullmatch(rest)
    assert conversation is not None, name
    return native_session_id(
        conversation["m"],
        conversation["platform"],
        conversation["native"],
        agent_id=conversation["agent"],
        resumed=n,
        uid=int(conversation["uid"]),
    )


@pytest.mark.parametrize(("name", "session_id"), readme_vectors())
def test_the_readmes_known_answers(name: str, session_id: str) -> None:
    """Machine id, platform, uid, native id (or pid and start) -> the UUID, as the README
    writes it: the formula gives it from the name, and the code from the inputs."""
    assert str(uuid.uuid5(SESSION_NAMESPACE, name)) == session_id
    assert id_from_the_code(name) == session_id


def test_the_known_answers_cover_every_part_of_the_name() -> None:
    names = [name for name, _ in readme_vectors()]
    assert any(":pid:" in n and ":resumed:" in n for n in names)
    assert any(":pid:" not in n and ":resumed:" in n for n in names)
    assert any(":agent:" in n for n in names)
    # One conversation named by two owners' files: two sessions.
    owners: dict[tuple[str, str], set[str]] = {}
    for name in names:
        if (m := _CONVERSATION.fullmatch(name)) is not None:
            owners.setdefault((m["platform"], m["native"]), set()).add(m["uid"])
    assert any(len(uids) >= 2 for uids in owners.values())
    ids = [sid for _, sid in readme_vectors()]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(sid).version == 5 for sid in ids)


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


# -- the machine id on each OS (written for the survivors of the mutation run) ---------------
# macOS's ioreg and Windows' registry are not on this machine: their answers are stood in
# for (the parsing and the choice of source are what is tested).

IOREG = (
    "+-o Root  <class IORegistryEntry, id 0x100000100>\n"
    '    "IOPlatformSerialNumber" = "C02XXXXXXX"\n'
    '    "IOPlatformUUID" = "564D8F2A-1B3C-4D5E-8F90-A1B2C3D4E5F6"\n'
)


def test_the_macos_platform_uuid_from_ioreg(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, object]]] = []

    def ioreg(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, stdout=IOREG, stderr="")

    monkeypatch.setattr(identity.subprocess, "run", ioreg)
    assert identity._darwin_platform_uuid() == "564d8f2a-1b3c-4d5e-8f90-a1b2c3d4e5f6"
    [(argv, kwargs)] = calls
    assert argv == ["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]
    assert kwargs == {"capture_output": True, "text": True, "timeout": 5, "check": False}


def test_no_uuid_from_ioreg_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def silent(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, stdout="", stderr="")

    monkeypatch.setattr(identity.subprocess, "run", silent)
    assert identity._darwin_platform_uuid() is None

    def missing(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file", argv[0])

    monkeypatch.setattr(identity.subprocess, "run", missing)
    assert identity._darwin_platform_uuid() is None


def test_the_windows_machine_guid_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[object, str]] = []

    class Registry(types.ModuleType):
        HKEY_LOCAL_MACHINE = object()

        def OpenKey(self, root: object, path: str) -> str:
            opened.append((root, path))
            return "key"

        def QueryValueEx(self, key: str, name: str) -> tuple[str, int]:
            assert (key, name) == ("key", "MachineGuid")
            return "9F2C6A5E-0B1D-4C3E-8A7F-112233445566", 1

    registry = Registry("winreg")
    monkeypatch.setitem(sys.modules, "winreg", registry)
    assert identity._windows_machine_guid() == "9f2c6a5e-0b1d-4c3e-8a7f-112233445566"
    assert opened == [(Registry.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography")]


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_each_os_asks_its_own_source(monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    monkeypatch.setattr(identity, "_darwin_platform_uuid", lambda: "mac-uuid")
    monkeypatch.setattr(identity, "_windows_machine_guid", lambda: "windows-guid")
    monkeypatch.setattr(sys, "platform", platform)
    expected = {"darwin": "mac-uuid", "win32": "windows-guid"}.get(platform)
    assert identity._os_machine_id() == expected


def test_linux_takes_the_first_valid_machine_id_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "etc-machine-id", tmp_path / "dbus-machine-id"
    monkeypatch.setattr(identity, "_MACHINE_ID_FILES", (first, second))
    monkeypatch.setattr(sys, "platform", "linux")
    assert identity._os_machine_id() is None  # neither exists
    first.write_text("uninitialized\n")  # systemd's first-boot placeholder
    second.write_text("0123456789abcdef0123456789abcdef\n")
    assert identity._os_machine_id() == "0123456789abcdef0123456789abcdef"
    first.write_bytes(b"\xff\xfe")
    assert identity._os_machine_id() == "0123456789abcdef0123456789abcdef"
    first.write_text("fedcba9876543210fedcba9876543210\n")
    assert identity._os_machine_id() == "fedcba9876543210fedcba9876543210"


def test_a_damaged_generated_id_is_made_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(identity, "_os_machine_id", lambda: None)
    (tmp_path / "machine-id").write_text("not an id\n")
    made = machine_id(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert (tmp_path / "machine-id").read_text() == made + "\n"
    assert not (tmp_path / "machine-id.tmp").exists()
