"""The user the live agents run as.

quintd runs as root and reports every user's agents; a developer runs their agents as
themselves. The live tier does the same: the daemon as the test's user (root in CI), the
agents as an unprivileged user of their own, in a home of their own, so that what the
daemon reads is another user's files, as on a real machine (and the developer's own
agents, or another test's, never mix with the day's)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# One user per run of the tier (another name for a second run beside it on one machine).
NAME = os.environ.get("QUINTD_LIVE_USER") or "quintd-live"
# Where the live user installs the agents and keeps npm's cache (its passwd home), kept
# across runs: later runs install nothing.
ROOT = Path(os.environ.get("QUINTD_LIVE_DIR") or "/var/tmp/quintd-live")


@dataclass(frozen=True)
class LiveUser:
    name: str
    uid: int
    gid: int
    shell: str = "/bin/bash"

    @classmethod
    def get(cls) -> LiveUser:
        """The unprivileged live user (created when the tests run as root), else the
        test's own user."""
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)
        home = ROOT / "home" / NAME
        try:
            entry = pwd.getpwnam(NAME)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/bin/bash",
                    "--home-dir",
                    str(home),
                    NAME,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(NAME)
        if entry.pw_dir != str(home):
            subprocess.run(["usermod", "--home", str(home), NAME], check=True, capture_output=True)
        user = cls(entry.pw_name, entry.pw_uid, entry.pw_gid)
        if not home.is_dir():
            ROOT.mkdir(parents=True, exist_ok=True)
            os.chmod(ROOT, 0o755)
            home.mkdir(parents=True, mode=0o755)
            user.own(home)
        return user

    @property
    def account_home(self) -> Path:
        """The user's home in the password database: npm's cache (~/.npm) is there."""
        return Path(pwd.getpwnam(self.name).pw_dir)

    def as_user(self) -> list[str]:
        """The prefix that runs a command as this user."""
        if self.uid == os.geteuid():
            return []
        return ["runuser", "-u", self.name, "--"]

    def own(self, path: Path) -> Path:
        """Hands ``path`` (and what is under it) to this user."""
        if self.uid != os.geteuid():
            for root, dirs, files in os.walk(path):
                for name in [*dirs, *files]:
                    os.lchown(os.path.join(root, name), self.uid, self.gid)
            os.lchown(path, self.uid, self.gid)
        return path

    def home(self) -> Path:
        """A fresh home directory of this user's, in a directory it can reach."""
        top = Path(tempfile.mkdtemp(prefix="qd-live-", dir="/tmp"))
        os.chmod(top, 0o755)
        home = top / "home"
        home.mkdir()
        return self.own(home)

    def run(
        self, argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """A command as this user, with exactly ``env``."""
        return subprocess.run(
            [*self.as_user(), "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kill_all(self) -> None:
        """Every process of this user ends (the agents' daemons and helpers that outlive
        them): only for the dedicated live user, never the test's own."""
        if self.uid == os.geteuid() or self.name != NAME:
            return
        pkill = shutil.which("pkill") or "pkill"
        subprocess.run([pkill, "-KILL", "-u", self.name], capture_output=True)
