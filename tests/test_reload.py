"""SIGHUP reload: every reloadable key takes effect in the running daemon, as each
component reports it; restart-only keys wait for a restart and say so."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, Agents, DaemonProcess, wait_until
from ingest_server import IngestServer

BASE: dict[str, dict[str, str]] = {
    "cloud": {"token": f'"{TOKEN}"', "timeout": "5.0", "endpoint": '"http://127.0.0.1:9"'},
    "scan": {"interval": "0.2"},
    "sessions": {"idle_after": "3600.0"},
    "queue": {"flush_interval": "0.2", "drain_timeout": "3.0", "start_jitter": "0.0"},
    "log": {"level": '"debug"'},
}


def write(
    directory: Path, changes: dict[str, dict[str, str]] | None = None, extra: str = ""
) -> Path:
    sections = {name: dict(values) for name, values in BASE.items()}
    for name, values in (changes or {}).items():
        sections.setdefault(name, {}).update(values)
    sections["paths"] = {
        "state_dir": f'"{directory / "state"}"',
        "runtime_dir": f'"{directory / "run"}"',
        **sections.get("paths", {}),
    }
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + extra)
    return path


class Running:
    def __init__(self, daemon: DaemonProcess, directory: Path) -> None:
        self.daemon = daemon
        self.dir = directory
        self.base = daemon.wait_ready()["settings"]

    def reload(
        self, changes: dict[str, dict[str, str]] | None = None, extra: str = ""
    ) -> dict[str, Any]:
        before = self.status()["reloads"]
        write(self.dir, changes, extra)
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGHUP)
        return wait_until(
            lambda: (s := self.status()) and s["reloads"] == before + 1 and s,
            what="the reload to be applied",
        )

    def status(self) -> dict[str, Any]:
        status = self.daemon.status()
        assert status is not None, self.daemon.log
        return status


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    directory = Path(tempfile.mkdtemp(prefix="qd-", dir="/tmp"))
    daemon = DaemonProcess(write(directory)).start()
    try:
        yield Running(daemon, directory)
    finally:
        daemon.kill()
        shutil.rmtree(directory, ignore_errors=True)


# (changed key, TOML change, status settings field, value it must then have)
RELOADABLE = [
    ("scan.interval", {"scan": {"interval": "0.7"}}, "scan_interval", 0.7),
    ("scan.kernel_exits", {"scan": {"kernel_exits": "false"}}, "kernel_exits", False),
    ("scan.process_events", {"scan": {"process_events": "false"}}, "process_events", False),
    (
        "scan.full_listing_interval",
        {"scan": {"full_listing_interval": "45.0"}},
        "full_listing_interval",
        45.0,
    ),
    ("sessions.idle_after", {"sessions": {"idle_after": "42.5"}}, "idle_after", 42.5),
    (
        "sessions.new_per_user_per_minute",
        {"sessions": {"new_per_user_per_minute": "7"}},
        "new_per_user_per_minute",
        7,
    ),
    ("scan.watches_per_user", {"scan": {"watches_per_user": "50"}}, "watches_per_user", 50),
    ("queue.max_bytes", {"queue": {"max_bytes": "2097152"}}, "max_bytes", 2097152),
    ("queue.min_free_disk", {"queue": {"min_free_disk": "12345"}}, "min_free_disk", 12345),
    ("queue.batch_size", {"queue": {"batch_size": "33"}}, "batch_size", 33),
    ("queue.flush_interval", {"queue": {"flush_interval": "0.9"}}, "flush_interval", 0.9),
    ("queue.in_flight", {"queue": {"in_flight": "2"}}, "in_flight", 2),
    ("queue.drain_timeout", {"queue": {"drain_timeout": "1.5"}}, "drain_timeout", 1.5),
    ("queue.start_jitter", {"queue": {"start_jitter": "4.0"}}, "start_jitter", 4.0),
    (
        "cloud.endpoint",
        {"cloud": {"endpoint": '"http://127.0.0.1:7"'}},
        "endpoint",
        "http://127.0.0.1:7",
    ),
    ("cloud.timeout", {"cloud": {"timeout": "7.5"}}, "timeout", 7.5),
    ("cloud.batch_body", {"cloud": {"batch_body": "true"}}, "batch_body", True),
    ("log.level", {"log": {"level": '"warning"'}}, "log_level", "warning"),
    ("log.format", {"log": {"format": '"json"'}}, "log_format", "json"),
]


@pytest.mark.parametrize(
    ("key", "change", "field", "value"), RELOADABLE, ids=[r[0] for r in RELOADABLE]
)
def test_a_reloadable_key_takes_effect(
    running: Running, key: str, change: dict[str, dict[str, str]], field: str, value: object
) -> None:
    status = running.reload(change)
    settings = status["settings"]
    assert settings[field] == value, f"{key} did not take effect"
    assert settings[field] != running.base[field]  # the test changes something
    # Nothing else moved: every other setting is back at (or still at) the base.
    assert {k: v for k, v in settings.items() if k != field} == {
        k: v for k, v in running.base.items() if k != field
    }
    assert status["last_reload_error"] is None


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux 5.3+")
@pytest.mark.skipif(os.geteuid() != 0, reason="process events need root")
def test_process_events_can_be_turned_off_and_on_again(running: Running) -> None:
    assert running.status()["scan"]["process_events"] == "connector"
    off = running.reload({"scan": {"process_events": "false"}})["scan"]
    assert off["process_events"] == "scan"
    on = running.reload({})["scan"]
    assert on["process_events"] == "connector"
    assert on["events_read"] >= off["events_read"]


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux 5.3+")
def test_kernel_exits_can_be_turned_off_and_on_again(running: Running) -> None:
    assert running.status()["scan"]["exits_from"] == "pidfd"
    assert running.reload({"scan": {"kernel_exits": "false"}})["scan"]["exits_from"] == "scan"
    assert running.reload()["scan"]["exits_from"] == "pidfd"


def test_platforms_reload_takes_effect(running: Running) -> None:
    extra = '\n[[platforms]]\nid = "acme-agent"\nnames = ["acme-agent"]\n'
    status = running.reload(extra=extra)
    assert status["settings"]["platforms"] == running.base["platforms"] + 1


def test_every_config_key_is_reloadable_or_restart_only() -> None:
    """A new key must be added to the reload test above, or to the restart-only list."""
    from quintd.config import config_keys
    from quintd.config.schema import all_file_keys

    keys = {f"{section}.{name}" for section, names in config_keys().items() for name in names}
    restart_only = {key.path for key in all_file_keys() if not key.reload}
    assert restart_only == {"paths.state_dir", "paths.runtime_dir"}
    covered = (
        {r[0] for r in RELOADABLE}
        | restart_only
        | {
            "cloud.token",  # test_a_new_token_is_used_at_once
            "cloud.token_file",  # the same path as the token
        }
    )
    assert keys - covered == set()


def test_restart_only_keys_wait_and_say_so(running: Running) -> None:
    moved = running.dir / "elsewhere"
    status = running.reload({"paths": {"state_dir": f'"{moved}"'}})
    assert status["state_dir"] == str(running.dir / "state")
    wait_until(
        lambda: "paths.state_dir changed: it waits for a restart" in running.daemon.log,
        what="the restart notice",
    )
    assert not moved.exists()


def test_idle_after_reload_applies_to_live_sessions(short_tmp: Path, agents: Agents) -> None:
    daemon = DaemonProcess(write(short_tmp)).start()
    try:
        daemon.wait_ready()
        agent = agents.binary("amp")
        wait_until(
            lambda: any(s["pid"] == agent.pid for s in (daemon.status() or {}).get("sessions", [])),
            what="the agent's session",
        )
        write(short_tmp, {"sessions": {"idle_after": "0.5"}})
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any(
                s["pid"] == agent.pid and s["state"] == "idle"
                for s in (daemon.status() or {}).get("sessions", [])
            ),
            what="the session to go idle under the new idle_after",
        )
    finally:
        daemon.kill()


def test_a_new_token_is_used_at_once_and_never_logged(short_tmp: Path, agents: Agents) -> None:
    new_token = "qt_deploy_rotated_" + os.urandom(6).hex()
    with IngestServer(token=new_token) as server:
        config = write(short_tmp, {"cloud": {"endpoint": f'"{server.url}"'}})
        daemon = DaemonProcess(config).start()
        try:
            daemon.wait_ready()
            agent = agents.binary("amp")
            wait_until(
                lambda: (s := daemon.status()) and s["delivery"]["paused"],
                what="401 on the old token",
            )
            write(
                short_tmp,
                {"cloud": {"endpoint": f'"{server.url}"', "token": f'"{new_token}"'}},
            )
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            server.wait_for(
                lambda evs: any(r.event["platform"] == "amp" for r in evs),
                what="delivery with the new token",
            )
            assert agent.poll() is None
        finally:
            daemon.terminate()
        assert new_token not in daemon.log
        assert TOKEN not in daemon.log


def test_the_token_is_a_secret_from_start_and_after_a_reload(
    short_tmp: Path, agents: Agents
) -> None:
    """The server echoes the request, Authorization header included, in its error bodies,
    and the daemon logs error bodies: only the redaction keeps the token out of the log,
    the one it started with and the one a reload brought."""
    rotated = "qt_deploy_rotated_" + os.urandom(6).hex()
    with IngestServer(token=TOKEN) as server:
        config = write(short_tmp, {"cloud": {"endpoint": f'"{server.url}"'}})
        daemon = DaemonProcess(config).start()
        try:
            daemon.wait_ready()
            server.fail_next(500)
            agents.binary("amp")
            server.wait_for(lambda evs: len(evs) == 1, what="the first session, after a 500")
            assert f"Bearer {TOKEN}" not in daemon.log
            assert "Bearer <redacted>" in daemon.log  # the echo was logged, redacted
            server.token = rotated
            write(short_tmp, {"cloud": {"endpoint": f'"{server.url}"', "token": f'"{rotated}"'}})
            before = daemon.log.count("Bearer <redacted>")
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: (s := daemon.status()) and s["reloads"] == 1, what="the reload")
            server.fail_next(500)
            agents.binary("amp", "601")
            server.wait_for(lambda evs: len(evs) == 2, what="the second session, after a 500")
            assert daemon.log.count("Bearer <redacted>") > before
        finally:
            daemon.terminate()
        assert rotated not in daemon.log and TOKEN not in daemon.log
