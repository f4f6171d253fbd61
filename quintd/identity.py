"""Session identity: UUID v5 ids that stay stable across daemon restarts.

``session_id = uuid5(SESSION_NAMESPACE, name)`` where ``name`` is, for a session
known only by its process, ``<machine-id>:<platform>:pid:<pid>:<start-time-ms>``,
and for a conversation, ``<machine-id>:<platform>:<uid>:<native-id>``: the agent's own
conversation id, bound to the user who owns the files naming it (sub-agents add
``:agent:<agent-id>``; a conversation resumed after its session ended adds
``:resumed:<n>``). A process's first conversation keeps the id its process was announced
under (the tracker records which conversation took it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

SESSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://quintai.dev/ns/session")

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_GENERATED_ID_FILE = "machine-id"


def process_session_id(
    machine_id: str, platform: str, pid: int, start_time_ms: int, resumed: int = 0
) -> str:
    name = f"{machine_id}:{platform}:pid:{pid}:{start_time_ms}"
    if resumed:  # seen again after its session ended (a missed scan): a new session
        name += f":resumed:{resumed}"
    return str(uuid.uuid5(SESSION_NAMESPACE, name))


def native_session_id(
    machine_id: str,
    platform: str,
    native_id: str,
    agent_id: str | None = None,
    resumed: int = 0,
    uid: int | None = None,
) -> str:
    """``resumed``: how many times this conversation came back after its session had
    ended (``claude --resume``, ``/resume``): each return is a new session, because
    nothing may follow an ``ended``. ``uid``: the owner of the conversation's files (two
    users naming the same id are two sessions); None only where the OS has no owners."""
    owner = "" if uid is None else f"{uid}:"
    name = f"{machine_id}:{platform}:{owner}{native_id}"
    if agent_id is not None:
        name += f":agent:{agent_id}"
    if resumed:
        name += f":resumed:{resumed}"
    return str(uuid.uuid5(SESSION_NAMESPACE, name))


def machine_id(state_dir: Path) -> str:
    """The OS's own machine id, else one generated once and kept in the state dir."""
    found = _os_machine_id()
    if found:
        return found
    return _generated_machine_id(state_dir)


def _os_machine_id() -> str | None:
    if sys.platform.startswith("linux"):
        for path in _MACHINE_ID_FILES:
            try:
                value = path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                continue
            if re.fullmatch(r"[0-9a-f]{32}", value):
                return value
        return None
    if sys.platform == "darwin":
        return _darwin_platform_uuid()
    if sys.platform == "win32":
        return _windows_machine_guid()
    return None


def _darwin_platform_uuid() -> str | None:
    try:
        out = subprocess.run(
            ["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{36})"', out)
    return match.group(1).lower() if match else None


def _windows_machine_guid() -> str | None:  # pragma: no cover - Windows only
    try:
        import winreg

        key = winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"SOFTWARE\Microsoft\Cryptography",
        )
        value, _ = winreg.QueryValueEx(key, "MachineGuid")  # type: ignore[attr-defined,unused-ignore]
        return str(value).lower()
    except OSError:
        return None


def _generated_machine_id(state_dir: Path) -> str:
    path = state_dir / _GENERATED_ID_FILE
    try:
        value = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{32}", value):
            return value
    except (OSError, UnicodeDecodeError):
        pass
    value = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return value
