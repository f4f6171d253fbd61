"""`quintd reload`: the unit's ExecReload (no /bin/kill needed). It signals only the
daemon the control socket names (and with --pid, only that process), and returns once
the daemon has said how the reload went."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import DaemonProcess, write_config


def _start(short_tmp: Path, daemons) -> tuple[DaemonProcess, dict]:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    daemon: DaemonProcess = daemons(config).start()
    return daemon, daemon.wait_ready()


def test_reload_returns_once_the_daemon_has_applied_the_new_setting(
    short_tmp: Path, daemons
) -> None:
    daemon, first = _start(short_tmp, daemons)
    write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None, idle_after=1234.0)
    result = daemon.cli("reload", "--pid", str(first["pid"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pid {first['pid']} reloaded" in result.stdout
    # No waiting here: the command itself waited for the daemon.
    status = daemon.status()
    assert status is not None
    assert status["reloads"] == 1 and status["settings"]["idle_after"] == 1234.0
    assert status["pid"] == first["pid"]


def test_reload_with_another_pid_signals_nothing(short_tmp: Path, daemons) -> None:
    daemon, first = _start(short_tmp, daemons)
    result = daemon.cli("reload", "--pid", str(os.getpid()))
    assert result.returncode == 1
    assert f"is pid {first['pid']}, not {os.getpid()}; nothing was signalled" in result.stderr
    status = daemon.status()
    assert status is not None and status["reloads"] == 0 and status["last_reload_error"] is None


def test_a_rejected_configuration_exits_78_and_the_daemon_runs_on(short_tmp: Path, daemons) -> None:
    daemon, first = _start(short_tmp, daemons)
    config = daemon.config
    config.write_text(config.read_text().replace("interval = 0.2", 'interval = "fast"'))
    result = daemon.cli("reload")
    assert result.returncode == 78, result.stdout + result.stderr
    # The command's own reading of the file, then the daemon's verdict on it.
    assert "scan.interval" in result.stderr
    assert f"pid {first['pid']} rejected the configuration" in result.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None
    # status itself refuses the broken file: ask with the running one's twin.
    good = short_tmp / "good.toml"
    good.write_text(config.read_text().replace('interval = "fast"', "interval = 0.2"))
    daemon.config = good
    status = daemon.status()
    assert status is not None and status["pid"] == first["pid"]
    assert status["reloads"] == 0 and "scan.interval" in status["last_reload_error"]


def test_reload_without_a_daemon_exits_3(short_tmp: Path) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    daemon = DaemonProcess(config)  # never started
    result = daemon.cli("reload")
    assert result.returncode == 3
    assert "not running" in result.stderr
    # A broken file, and nobody to judge it: both are said.
    config.write_text(config.read_text().replace("interval = 0.2", 'interval = "fast"'))
    result = daemon.cli("reload")
    assert result.returncode == 3
    assert "scan.interval" in result.stderr and "not running" in result.stderr
