"""Which new programs are worth a look: the cheap first judgement of an exec.

A machine runs thousands of programs a second at times (a build, a test suite, a user's
fork bomb), and almost none is an agent. Looking at one properly (its command line, exe,
cwd, user: a dozen reads of /proc) is kept for the programs the signature table could
match. The judgement reads two things only: the executable's path (one ``readlink``) and
the process's name (``/proc/<pid>/comm``, the basename of the file it exec'd, cut to 15
bytes: a symlink's or a script's name, where the executable is its target or its
interpreter); and a rename (``prctl``) brings its new name with it.

- ``INSPECT``: the name or the executable is an agent's (the table's names, its path
  fragments), or an interpreter that runs scripts (node, bun, deno, python: npm's, npx's
  and pip's agents run as one), looked at at once.
- ``LATER``: a shell (sh, bash, dash, zsh): one runs an agent's script only in the rare
  ``sh path/to/agent-script`` form, and shells are most of what scripts start. Looked at
  in the next pass if it still runs then (a shell that runs an agent lives as long).
- ``SKIP``: anything else. The periodic listing of /proc still looks at what runs; an
  agent seen only there would be one started as ``exec -a <agent name> <other program>``
  (its argv[0] alone names it).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Sequence

from quintd.platforms import SHELLS, Platform, basename, is_interpreter_name

COMM_LENGTH = 15  # TASK_COMM_LEN - 1: the kernel cuts a process name to 15 bytes
_DELETED = " (deleted)"  # readlink's suffix for an executable replaced since it started


class Verdict(enum.Enum):
    SKIP = "skip"
    LATER = "later"
    INSPECT = "inspect"


class ExecFilter:
    """The judgement for one signature table."""

    def __init__(self, platforms: Sequence[Platform]) -> None:
        names = {name for platform in platforms for name in platform.names}
        self._names = frozenset(names)
        # A name as /proc/<pid>/comm shows it: cut to 15 bytes (UTF-8).
        self._comm_names = frozenset(_cut(name) for name in names)
        fragments = sorted({f for p in platforms for f in p.path_fragments if f})
        self._fragments = (
            re.compile("|".join(re.escape(f) for f in fragments)) if fragments else None
        )

    def by_exe(self, exe: str) -> Verdict | None:
        """From the executable's path (a realpath, as the kernel gives it); None when it
        says nothing (the name may)."""
        if exe.endswith(_DELETED):
            exe = exe[: -len(_DELETED)]
        base = basename(exe)
        if base in self._names or (self._fragments is not None and self._fragments.search(exe)):
            return Verdict.INSPECT
        return _interpreter(base)

    def by_name(self, comm: str) -> Verdict:
        """From the process's name (comm)."""
        if comm in self._comm_names:
            return Verdict.INSPECT
        return _interpreter(comm) or Verdict.SKIP

    def examine(self, pid: int) -> Verdict:
        """An exec'd process, from /proc: its executable, then (unless that settles it)
        its name. A process gone already is skipped: there is nothing left to look at."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except FileNotFoundError:
            return Verdict.SKIP  # gone (or a zombie, or a kernel thread)
        except OSError:
            exe = ""  # not ours to read (a per-user daemon): the name decides
        by_exe = self.by_exe(exe) if exe else None
        if by_exe is Verdict.INSPECT:
            return by_exe
        # A shell's script may be named like an agent (`#!/bin/sh` in a file `claude`).
        comm = read_comm(pid)
        by_name = Verdict.SKIP if comm is None else self.by_name(comm)
        if by_name is Verdict.INSPECT or by_exe is None:
            return by_name
        return by_exe


def read_comm(pid: int) -> str | None:
    try:
        fd = os.open(f"/proc/{pid}/comm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    return raw.rstrip(b"\n").decode("utf-8", "replace")


def _cut(name: str) -> str:
    return name.encode()[:COMM_LENGTH].decode("utf-8", "ignore")


def _interpreter(name: str) -> Verdict | None:
    if name in SHELLS:
        return Verdict.LATER
    if is_interpreter_name(name):
        return Verdict.INSPECT
    return None
