"""A Debian 12 container booted by systemd-nspawn, for tests/test_systemd_container.py.

The root tree is made once by debootstrap (minbase, with systemd, dbus and python3) and
kept under the checkout's build directory (``build/systemd-container/``, git-ignored), so
that later runs in the same checkout skip debootstrap. Every boot runs on a copy-on-write
overlay of it in memory (``--volatile=overlay``): the cached tree is never changed.

The container has no network but its own loopback (``--private-network``). It is not
registered with machined (the host may have none), so commands run in it through
``nsenter`` into its PID 1's namespaces, and files are reached from the host through
``/proc/<its PID 1>/root``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SUITE = "bookworm"
SUITE_PYTHON = "3.11"  # bookworm's python3: the only wheels the package needs to carry
VARIANT = "minbase"
INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
MIRROR = os.environ.get("QUINTD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP_TIMEOUT_S = 900.0

# The environment of every command run in the container: none of the host's.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class BootFailed(Exception):
    """The container did not boot: the machine cannot run it (not the project's fault)."""


def recipe_key() -> str:
    text = repr((SUITE, VARIANT, INCLUDE, MIRROR))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_rootfs(build: Path) -> tuple[Path, bool]:
    """The root tree, made by debootstrap unless this checkout has it already (a lock
    keeps two test runs from making it at once; a half-made one is never used).
    Returns (the tree, whether it was made now)."""
    base = build / "systemd-container"
    base.mkdir(parents=True, exist_ok=True)
    key = recipe_key()
    done = base / f"{SUITE}-{key}"
    with _locked(base / ".lock"):
        if (done / "complete").is_file():
            return done / "rootfs", False
        partial = base / f".partial-{key}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        log = partial / "debootstrap.log"
        with open(log, "wb") as out:
            result = subprocess.run(
                [
                    "debootstrap",
                    f"--variant={VARIANT}",
                    f"--include={','.join(INCLUDE)}",
                    SUITE,
                    str(partial / "rootfs"),
                    MIRROR,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEBOOTSTRAP_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"debootstrap failed ({result.returncode}):\n{tail}")
        (partial / "complete").write_text(f"{SUITE} {VARIANT} {' '.join(INCLUDE)} {MIRROR}\n")
        shutil.rmtree(done, ignore_errors=True)
        partial.rename(done)
        # Trees of an older recipe are of no use any more.
        for other in base.iterdir():
            if other.is_dir() and other != done and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)
    return done / "rootfs", True


def poll_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline wait, not synchronisation


class Container:
    """One boot of the cached tree. ``run`` runs a command in it, ``path`` names one of
    its files from the host."""

    def __init__(self, rootfs: Path, workdir: Path) -> None:
        self.rootfs = rootfs
        self.workdir = workdir
        self.name = f"quintd-test-{secrets.token_hex(4)}"
        self.log_path = workdir / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    # -- life --------------------------------------------------------------------------

    def boot(self, timeout: float = 90.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--volatile=overlay",
                    "--private-network",
                    f"--machine={self.name}",
                    "--console=read-only",
                    "-D",
                    str(self.rootfs),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.leader = poll_until(self._find_leader, timeout, "the container's PID 1")
            poll_until(self._booted, timeout, "the container to finish booting")
        except (AssertionError, BootFailed) as exc:
            self.poweroff()
            raise BootFailed(f"{exc}; systemd-nspawn said:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _find_leader(self) -> int | None:
        """nspawn's child whose pid in its own namespace is 1, once it runs systemd."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BootFailed(f"systemd-nspawn exited with {self.proc.returncode}")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
                exe = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            nspid = fields.get("NSpid", "").split()
            if (
                fields.get("PPid", "").strip() == str(self.proc.pid)
                and len(nspid) >= 2
                and nspid[-1] == "1"
                and exe.endswith("/systemd")
            ):
                return int(entry)
        return None

    def _booted(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BootFailed(f"systemd-nspawn exited with {self.proc.returncode}")
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    def poweroff(self, timeout: float = 60.0) -> None:
        """As a machine is shut down: nspawn asks PID 1 to power off; only a container
        that does not is killed (its PID 1 first: the whole namespace goes with it)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if self.leader:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(30)

    # -- inside ------------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command in the container's namespaces (mount, UTS, IPC, PID, network), as its
        root, with an environment of its own."""
        assert self.leader
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-p", "-n", "--", *argv],
            capture_output=True,
            text=True,
            env=CONTAINER_ENV,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def path(self, inside: str) -> Path:
        """A path in the container, as the host reaches it."""
        assert self.leader and inside.startswith("/")
        return Path(f"/proc/{self.leader}/root{inside}")

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", *args).stdout
