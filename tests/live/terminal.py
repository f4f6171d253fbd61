"""A real terminal for a real CLI: tmux, on a socket of the test's own, as the live user.

The agents are full-screen TUIs: they need a pseudo-terminal, they draw, and they are
driven by keystrokes. tmux gives all three and lets the test read the screen.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from live_user import LiveUser

TMUX = shutil.which("tmux") or "tmux"


class Terminal:
    def __init__(self, user: LiveUser, socket: Path, width: int = 160, height: int = 48) -> None:
        self.user = user
        self.socket = socket
        self.width, self.height = width, height
        self.started = False
        self.last_screen = ""

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.user.as_user(), TMUX, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def start(self, argv: Sequence[str], env: dict[str, str], cwd: Path) -> int:
        """Starts ``argv`` in a new window, in ``cwd`` with exactly ``env``; the pid of the
        command (the pane's process: argv runs as it, through ``exec``)."""
        assignments = [f"{k}={v}" for k, v in sorted(env.items())]
        command = " ".join(_quote(a) for a in ["exec", "env", "-i", *assignments, *argv])
        self._tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            "-c",
            str(cwd),
            command,
        )
        self.started = True
        self._tmux("set-option", "-g", "remain-on-exit", "on", check=False)
        return self.pane_pid()

    def pane_pid(self) -> int:
        out = self._tmux("display-message", "-p", "#{pane_pid}").stdout.strip()
        return int(out)

    def dead(self) -> bool:
        out = self._tmux("display-message", "-p", "#{pane_dead}", check=False).stdout.strip()
        return out == "1" or not self.started

    def type(self, text: str, enter: bool = True) -> None:
        """Types ``text`` literally, then Enter once the screen shows what was typed (sent
        with the text, a TUI that reads a paste as one chunk takes the newline as part of
        the text)."""
        if text:
            shown = re.escape(text[-16:])
            for attempt in range(3):
                self._tmux("send-keys", "-l", "--", text)
                try:
                    self.wait_for(shown, timeout=8)
                    break
                except AssertionError:
                    # A TUI that draws its prompt before it reads the keyboard drops the
                    # keys typed in between: the input is still empty, type it again.
                    if attempt == 2 or re.search(re.escape(text[:8]), self.last_screen):
                        raise
        if enter:
            self._tmux("send-keys", "Enter")

    def submit(self, text: str, taken: Callable[[], bool], timeout: float = 60.0) -> None:
        """Types ``text`` and Enter, and waits until ``taken()`` (the model was asked). A
        TUI re-drawing its prompt (just after /new) can drop the Enter and leave the text
        in its input: while the screen still shows it there, Enter is pressed again."""
        self.type(text)
        deadline = time.monotonic() + timeout
        retry_at = time.monotonic() + 5.0
        while not taken():
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(
                    f"{text!r} was never taken in {timeout:.0f} s; the screen shows:\n"
                    + self.screen()
                )
            if now > retry_at:
                retry_at = now + 5.0
                lines = [line for line in self.screen().splitlines() if line.strip()]
                if any(
                    text[-16:] in line and not line.lstrip().startswith("●") for line in lines[-6:]
                ):
                    self._tmux("send-keys", "Enter")
            time.sleep(0.1)  # polling interval of a deadline wait

    def keys(self, *keys: str) -> None:
        """tmux key names: ``C-c``, ``Escape``, ``Enter``, ``Down`` ..."""
        self._tmux("send-keys", *keys)

    def screen(self) -> str:
        out = self._tmux("capture-pane", "-p", "-J", check=False).stdout
        if out:
            self.last_screen = out
        return self.last_screen

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Waits until the screen shows ``pattern`` (a regular expression)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.screen())
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the screen never showed {pattern!r} in {timeout:.0f} s; it shows:\n"
                    + self.last_screen
                )
            time.sleep(0.1)  # polling interval of a deadline wait

    def close(self) -> None:
        if self.started:
            self._tmux("kill-server", check=False)
            self.started = False
        with contextlib.suppress(OSError):
            os.unlink(self.socket)


def _quote(arg: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:=@%+,-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
