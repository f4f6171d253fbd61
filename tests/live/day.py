"""One live day of one real agent: the CLI in a terminal as the live user, its model API a
loopback stand-in, a real ``quintd run`` (as the test's user: root in CI) delivering to a
loopback ingest server, and the checks a security team would make on what arrives.

Which events are the day's: the daemon logs every event with its session's pid and uid; a
session is the day's when that uid is the live user's (the developer's own agents, and
other tests' fake ones, run as other users). A session the log does not name (yet) is taken
as the day's, so a phantom session can never hide.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest_server import IngestServer, Received
from live_user import LiveUser
from recorder import Recorder, record_dir
from standin import Brain, ModelStandIn
from terminal import Terminal

TOKEN = "qt_deploy_live_token"
# What the day's quintd runs with: the defaults, but a short idle_after (so that "idle
# after the turn" shows within a test) and no start-up jitter (one daemon, not a fleet).
IDLE_AFTER = 2.0


def wait_until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling interval of a deadline wait


class LiveDaemon:
    """``quintd run`` with JSON logs, in a directory of its own."""

    def __init__(self, directory: Path, endpoint: str, extra: str = "") -> None:
        self.directory = directory
        for sub in ("state", "run"):
            (directory / sub).mkdir(mode=0o700, exist_ok=True)
        self.config = directory / "config.toml"
        self.config.write_text(
            "\n".join(
                [
                    "[cloud]",
                    f'endpoint = "{endpoint}"',
                    f'token = "{TOKEN}"',
                    "[sessions]",
                    f"idle_after = {IDLE_AFTER}",
                    "[queue]",
                    "flush_interval = 0.2",
                    "start_jitter = 0.0",
                    "[paths]",
                    f'state_dir = "{directory / "state"}"',
                    f'runtime_dir = "{directory / "run"}"',
                    "[log]",
                    'level = "debug"',
                    'format = "json"',
                    extra,
                ]
            )
        )
        os.chmod(self.config, 0o600)
        self.log_path = directory / "quintd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("QUINTD_") and k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")
        }

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quintd", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env(),
            )
        wait_until(self.status, 30, "quintd to answer status")

    def status(self) -> dict[str, Any] | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"quintd exited with {self.proc.returncode}:\n{self.log()}")
        done = subprocess.run(
            [sys.executable, "-m", "quintd", "status", "--json", "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=30,
        )
        if done.returncode != 0:
            return None
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)


@dataclass
class ExitWatch:
    """When a process ended, from the kernel (a pidfd), on the monotonic clock."""

    pid: int
    exited_at: float | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> ExitWatch:
        fd = os.pidfd_open(self.pid)

        def wait() -> None:
            try:
                select.select([fd], [], [])
                self.exited_at = time.monotonic()
            finally:
                os.close(fd)

        self._thread = threading.Thread(target=wait, daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float) -> float:
        return float(wait_until(lambda: self.exited_at, timeout, f"pid {self.pid} to exit"))


class Day:
    """Everything a live day needs; built by :func:`live_day`."""

    def __init__(
        self, platform: str, user: LiveUser, top: Path, brain: Brain, layout: str = "nvm_prefix"
    ) -> None:
        self.platform = platform
        self.layout = layout
        self.user = user
        self.top = top
        self.home = user.home()
        self.project = self.home / "src" / "shop-api"
        self.model = ModelStandIn(brain)
        self.ingest = IngestServer(token=TOKEN, own_only=False)
        daemon_dir = top / "quintd"
        daemon_dir.mkdir(mode=0o700)
        self.daemon = LiveDaemon(daemon_dir, self.ingest.url)
        os.chmod(top, 0o755)
        sockets = top / "tmux"
        sockets.mkdir()
        self.terminal = Terminal(user, user.own(sockets) / "sock")
        self.agent_pid: int | None = None
        self.command: list[str] | None = None
        self.notes: list[str] = []
        self.story = ""
        out = record_dir()
        # QUINTD_LIVE_RECORD=<dir>: the day is recorded as a replay fixture (recorder.py).
        self.recorder = Recorder(self, layout, out, IDLE_AFTER) if out is not None else None

    # -- recording (off unless QUINTD_LIVE_RECORD is set) -------------------------------

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    def snapshot(self, step: str, what: str) -> None:
        """A named step of the day, recorded when recording (else nothing at all)."""
        if self.recorder is not None:
            self.recorder.snapshot(step, what, self.looked_again)

    def record_layout(self, layout: str, story: str) -> None:
        """Several layouts in one day: what was recorded so far is one layout's fixture,
        and a new recording begins."""
        if self.recorder is None:
            return
        if self.recorder.steps:
            self.recorder.finish(self.command, self.story)
        self.layout, self.story = layout, story
        self.recorder.begin(layout)

    def finish_recording(self) -> None:
        if self.recorder is not None and self.recorder.steps:
            where = self.recorder.finish(self.command, self.story)
            self.notes.append(f"recorded: {where}")

    def scan_passes(self) -> int:
        return int(((self.daemon.status() or {}).get("scan") or {}).get("passes") or 0)

    def looked_again(self) -> None:
        """Until quintd has made two passes over the processes and files since now."""
        passes = self.scan_passes()
        wait_until(lambda: self.scan_passes() >= passes + 2, 30, "quintd to look again")

    # -- set-up ---------------------------------------------------------------------

    def make_project(self) -> Path:
        """A git repository with one commit, as the agents expect to work in."""
        self.project.mkdir(parents=True)
        (self.project / "README.md").write_text("# shop-api\n")
        (self.project / "auth.py").write_text("def check(token):\n    return bool(token)\n")
        env = {
            "HOME": str(self.home),
            "PATH": "/usr/bin:/bin",
            "GIT_AUTHOR_NAME": "dev",
            "GIT_AUTHOR_EMAIL": "dev@example.invalid",
            "GIT_COMMITTER_NAME": "dev",
            "GIT_COMMITTER_EMAIL": "dev@example.invalid",
        }
        for argv in (
            ["git", "init", "-q", "-b", "main"],
            ["git", "add", "."],
            ["git", "commit", "-q", "-m", "init"],
        ):
            subprocess.run(argv, cwd=self.project, env=env, check=True, capture_output=True)
        self.user.own(self.home)
        return self.project

    def write(self, relative: str, text: str) -> Path:
        """A file in the live user's home (an agent's settings), owned by the user."""
        path = self.home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.user.own(self.home)
        return path

    def base_env(self, path: str) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "USER": self.user.name,
            "LOGNAME": self.user.name,
            "SHELL": "/bin/bash",
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "PATH": path,
            "NO_UPDATE_NOTIFIER": "1",
            "DO_NOT_TRACK": "1",
        }

    def start(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
        """The agent, in its terminal: the pid of the command started (the agent process
        quintd should report)."""
        self.command = list(argv)
        self.agent_pid = self.terminal.start(argv, env, cwd or self.project)
        return self.agent_pid

    # -- what arrived ---------------------------------------------------------------

    def _session_owners(self) -> dict[str, int | None]:
        """session id -> the uid of its process, from quintd's log (which names both)."""
        owners: dict[str, int | None] = {}
        for record in self.daemon.log_records():
            sid = record.get("session_id")
            if isinstance(sid, str) and sid not in owners:
                uid = record.get("uid")
                owners[sid] = uid if isinstance(uid, int) else None
        return owners

    def events(self) -> list[Received]:
        """The events of the day's sessions, in the order received: those of the live
        user's processes, and any the log does not name yet (a phantom cannot hide)."""
        owners = self._session_owners()
        with self.ingest._cond:
            received = list(self.ingest.events)
        return [
            r
            for r in received
            if owners.get(r.event["session_id"], self.user.uid) in (self.user.uid, None)
        ]

    def wait(
        self, predicate: Callable[[list[dict[str, Any]]], Any], what: str, timeout: float = 30
    ) -> Any:
        """Waits until ``predicate(events)`` (the day's event bodies) is truthy."""
        return wait_until(lambda: predicate([r.event for r in self.events()]), timeout, what)

    def sessions(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.events():
            out.setdefault(r.event["session_id"], []).append(r.event)
        return out

    def wait_session(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30
    ) -> dict[str, Any]:
        """The newest event of the day that satisfies ``check``."""

        def probe(events: list[dict[str, Any]]) -> dict[str, Any] | None:
            return next((e for e in reversed(events) if check(e)), None)

        found: dict[str, Any] = self.wait(probe, what, timeout)
        return found

    def latest(self, session_id: str) -> dict[str, Any] | None:
        events = self.sessions().get(session_id, [])
        return events[-1] if events else None

    # -- on failure -----------------------------------------------------------------

    def report(self) -> str:
        lines = ["== the agent's screen =="]
        lines.append(self.terminal.screen() if self.terminal.started else self.terminal.last_screen)
        lines.append("== events received (the day's) ==")
        for r in self.events():
            lines.append(f"{r.received_at:.3f} {json.dumps(r.event)}")
        lines.append(f"== model requests: {len(self.model.requests)} ==")
        for req in self.model.requests[-12:]:
            lines.append(
                f"{req.api} tools={sorted(req.tools)[:8]} after_tool={req.after_tool} "
                f"user={req.user_text[-80:]!r}"
            )
        lines.append("== processes of the live user ==")
        lines.append(
            subprocess.run(
                ["ps", "-o", "pid,ppid,etimes,comm,args", "--forest", "-u", str(self.user.uid)],
                capture_output=True,
                text=True,
            ).stdout
        )
        lines.append("== quintd's log (last 150 lines) ==")
        lines.extend(self.daemon.log().splitlines()[-150:])
        lines.extend(self.notes)
        return "\n".join(lines)

    def close(self) -> None:
        self.terminal.close()
        self.user.kill_all()
        self.daemon.stop()


@contextlib.contextmanager
def live_day(
    platform: str, user: LiveUser, brain: Brain, layout: str = "nvm_prefix", story: str = ""
) -> Iterator[Day]:
    """A day: stand-in, ingest server and quintd running; the agent is started by the test.
    On failure, the screen, the events and quintd's log are printed. ``layout`` and
    ``story`` name the day's recording (``QUINTD_LIVE_RECORD``)."""
    top = Path(tempfile.mkdtemp(prefix="qd-day-", dir="/tmp"))
    day = Day(platform, user, top, brain, layout)
    day.story = story
    passed = False
    with day.model, day.ingest:
        try:
            day.daemon.start()
            yield day
            day.finish_recording()
            passed = True
        except BaseException:
            print(day.report())
            raise
        finally:
            day.close()
            if passed or os.environ.get("CI"):
                # An agent's home holds what it unpacked (Codex copies 400 MB into each):
                # kept only where a developer may look at a failure.
                shutil.rmtree(day.home.parent, ignore_errors=True)
                shutil.rmtree(top, ignore_errors=True)
