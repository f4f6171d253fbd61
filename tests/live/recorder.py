"""Recording a live day as a replay fixture (off unless ``QUINTD_LIVE_RECORD=<dir>``).

At the day's named steps (``day.snapshot("02-busy", "what happened")``) the recorder
saves, under ``<dir>/<platform>/<layout>/``:

- ``snapshots/<step>/processes.json``: every process of the live user, in the form
  ``tests/replay.py``'s ``load_processes`` reads (pid, ppid, comm, exe, argv, cwd, start
  time and ticks, the environment variables quintd's readers look at, open files, TCP
  sockets);
- ``snapshots/<step>/home/...``: the agent's own state files (``~/.qwen``, ``~/.claude`` and
  ``~/.claude.json`` ...), without caches, logs (Codex's log database), binaries, bundled
  skills, certificates, full-text indexes, OpenCode's git snapshots of the project and
  files over 1 MB; SQLite databases as SQL text (``<name>.sql``, from a consistent copy:
  ``tests/layouts.py`` builds the database from it); ``snapshots/<step>/files.json``
  the files' modification times (git keeps none; a database's is its ``-wal``'s when
  later);
- ``day.json``: the agent, its version, the layout, the command, the steps (when each
  snapshot was taken, and when its events were read: two of quintd's passes later) and
  every event quintd delivered, with the step it arrived by (the live test asserted them:
  the expected truth of the replay, ``tests/test_layouts.py``).

Nothing machine-specific is kept: the day's home becomes ``/home/dev`` (in file contents,
file names, the slug and hash forms agents make of a path, SQLite text columns), the
installs neutral paths (``/home/dev/.npm-global`` ...), the boot id and secrets fixed
fakes, session ids labels (``s1``, ``s2`` ... in the order they arrived). A recording is
moved into place only when its day passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from installs import PINNED
from live_user import ROOT

from quintd.procfs import start_ticks
from quintd.sources.processes import LiveProcesses

RECORD_ENV = "QUINTD_LIVE_RECORD"
HOME = "/home/dev"
PROJECT = f"{HOME}/src/shop-api"
FAKE_BOOT_ID = "00000000-0000-4000-8000-000000000000"
FAKE_SECRET = "fake-secret-for-replay"
MAX_FILE = 1 << 20  # a file over 1 MB is left out (logs, caches)

# The agent's own state, relative to its home (what quintd's readers read, and the
# settings the day wrote).
STATE: dict[str, tuple[str, ...]] = {
    "claude-code": (".claude", ".claude.json"),
    "codex": (".codex",),
    "gemini-cli": (".gemini",),
    "qwen-code": (".qwen",),
    "opencode": (".local/share/opencode", ".local/state/opencode", ".config/opencode"),
    "copilot-cli": (".copilot",),
    "cline": (".cline",),
}
# Never copied: unpacked packages, binaries, caches, logs.
SKIP_DIRS = {
    "node_modules",
    "packages",
    "bin",
    "cache",
    "log",
    "logs",
    ".tmp",
    "pkg",
    "snapshot",
    "skills",  # Codex's bundled skills (``skills/.system``), unpacked from its binary
}
# Files of the agent's that quintd does not read and that are large (Copilot's and Cline's
# full-text indexes of their sessions, Codex's log database: its tracing, 500 KB a step).
# A recorded `.gitignore` (OpenCode writes one in ~/.config/opencode, naming itself and
# its package.json) would hide the fixture's own files from git: left out.
SKIP_FILES = {"session-store.db", "session-search.db", ".gitignore"}
SKIP_NAMES = re.compile(r"^logs_[0-9]+\.sqlite$")
# Lock files are kept: Codex's ``thread-writer-locks/<thread>.lock`` and Copilot's
# ``inuse.<pid>.lock`` are read by quintd. Certificates (Cline copies the system's CA
# bundle, 650 KB, into its home) are not state.
SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".sock", ".pem")

# Environment variables quintd's readers and matcher look at (never a key or a token).
ENV_KEYS = {"HOME", "USER", "PATH", "PWD", "TMPDIR", "OPENCODE_DB", "GOOSE_PATH_ROOT"}
ENV_PREFIXES = ("XDG_", "CODEX_", "CLAUDE_", "CLINE_", "COPILOT_", "CRUSH_", "KIRO_", "npm_")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH")
SECRET_FIELD = re.compile(r"(token|secret|api_?key|apikey|password|credential)s?$", re.I)


def record_dir() -> Path | None:
    value = os.environ.get(RECORD_ENV)
    return Path(value).resolve() if value else None


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", path)


class Rewriter:
    """Machine-specific strings -> neutral ones, longest first."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        seen: dict[str, str] = {}
        for old, new in pairs:
            if old and old != new and old not in seen:
                seen[old] = new
        self.pairs = sorted(seen.items(), key=lambda p: -len(p[0]))
        self.forbidden = [p for p in seen if p.startswith("/")]
        self._bytes = [(o.encode(), n.encode()) for o, n in self.pairs]

    def text(self, value: str) -> str:
        for old, new in self.pairs:
            value = value.replace(old, new)
        return value

    def data(self, value: bytes) -> bytes:
        for old, new in self._bytes:
            value = value.replace(old, new)
        return value

    def leftovers(self, value: str) -> list[str]:
        return [p for p in self.forbidden if p in value]


def _hashes(real: str, neutral: str) -> list[tuple[str, str]]:
    out = []
    for fn in (hashlib.sha256, hashlib.md5, hashlib.sha1):
        out.append((fn(real.encode()).hexdigest(), fn(neutral.encode()).hexdigest()))
    return out


def rewriter_for(home: Path, top: Path, account_home: Path, user: str) -> Rewriter:
    real_home = str(home)
    pairs: list[tuple[str, str]] = []
    for real, neutral in ((real_home, HOME), (f"{real_home}/src/shop-api", PROJECT)):
        pairs.append((real, neutral))
        pairs.append((_slug(real), _slug(neutral)))
        pairs.extend(_hashes(real, neutral))
    pairs.append((str(home.parent), "/home"))  # the temporary directory above the home
    pairs.append((str(top), "/run/live"))  # the day's quintd, tmux socket
    for tree in sorted(ROOT.glob("prefix-*")):
        pairs.append((str(tree), f"{HOME}/.npm-global"))
    for tree in sorted(ROOT.glob("project-*")):
        pairs.append((str(tree), f"{HOME}/tools"))
    pairs.append((str(account_home), HOME))  # npm's cache, ~/.npm
    pairs.append((str(ROOT), "/opt/live"))
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pairs.append((boot, FAKE_BOOT_ID))
    with contextlib.suppress(OSError):
        machine = Path("/etc/machine-id").read_text().strip()
        if machine:
            pairs.append((machine, "0" * len(machine)))
    # The test's own directory (the tmux server's cwd): the checkout, wherever it is.
    pairs.append((str(Path.cwd()), "/srv/tests"))
    pairs.append((str(Path(__file__).resolve().parents[2]), "/srv/tests"))
    pairs.append((f"/home/{user}", HOME))
    pairs.append((user, "dev"))
    return Rewriter(pairs)


def _scrub_json(value: Any, rw: Rewriter) -> Any:
    """Rewritten strings; string values of secret-named fields replaced."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = rw.text(k) if isinstance(k, str) else k
            if isinstance(v, str) and isinstance(k, str) and SECRET_FIELD.search(k) and v:
                out[key] = FAKE_SECRET
            else:
                out[key] = _scrub_json(v, rw)
        return out
    if isinstance(value, list):
        return [_scrub_json(v, rw) for v in value]
    if isinstance(value, str):
        return rw.text(value)
    return value


def _scrub_text(raw: bytes, rw: Rewriter) -> bytes:
    """A text file rewritten; JSON (and JSON lines) with their secret fields replaced."""
    text = raw.decode("utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        lines = text.split("\n")
        out = []
        for line in lines:
            try:
                parsed = json.loads(line) if line.strip() else None
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                scrubbed = _scrub_json(parsed, rw)
                out.append(line if scrubbed == parsed else _dump_like(line, scrubbed))
            else:
                out.append(rw.text(line))
        return rw.data("\n".join(out).encode())
    scrubbed = _scrub_json(data, rw)
    if scrubbed == data:
        return rw.data(raw)
    return rw.data(_dump_like(text, scrubbed).encode())


def _dump_like(original: str, data: Any) -> str:
    """JSON written back in the shape it had: indented or compact."""
    if "\n" in original.strip():
        indent = len(original.split("\n")[1]) - len(original.split("\n")[1].lstrip())
        return json.dumps(data, indent=indent or 2, ensure_ascii=False) + (
            "\n" if original.endswith("\n") else ""
        )
    compact = ", " not in original and ": " not in original
    seps = (",", ":") if compact else (", ", ": ")
    return json.dumps(data, separators=seps, ensure_ascii=False)


def copy_database(source: Path, target: Path, rw: Rewriter) -> None:
    """A consistent copy of a live SQLite database, its text rewritten, compacted."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    conn = sqlite3.connect(target)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            rows = conn.execute(f'SELECT rowid, * FROM "{table}"').fetchall()
            for row in rows:
                changed = {}
                for name, value in zip(columns, row[1:], strict=True):
                    if isinstance(value, str):
                        new: Any = _scrub_text(value.encode(), rw).decode()
                    elif isinstance(value, bytes):
                        try:
                            new = _scrub_text(value, rw)
                        except UnicodeDecodeError:
                            new = rw.data(value)
                    else:
                        continue
                    if new != value:
                        changed[name] = new
                if changed:
                    sets = ", ".join(f'"{c}" = ?' for c in changed)
                    conn.execute(
                        f'UPDATE "{table}" SET {sets} WHERE rowid = ?', [*changed.values(), row[0]]
                    )
        conn.commit()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    # Kept as SQL text (a few KB where the file is hundreds: tests/layouts.py builds it).
    Path(str(target) + ".sql").write_text(f"PRAGMA user_version={version};\n{dump}\n")
    target.unlink()


class Recorder:
    """One day's recording; see the module's docstring."""

    def __init__(self, day: Any, layout: str, out: Path, idle_after: float) -> None:
        self.day = day
        self.idle_after = idle_after
        self.layout = layout
        self.out = out
        self.staging = Path(tempfile.mkdtemp(prefix="qd-record-", dir=str(day.top)))
        self.steps: list[dict[str, Any]] = []
        self.seen_events = 0
        self.began_events = 0
        self.events: list[dict[str, Any]] = []
        self.labels: dict[str, str] = {}
        self.rw = rewriter_for(day.home, day.top, day.user.account_home, day.user.name)
        self.leftovers: set[str] = set()

    def begin(self, layout: str) -> None:
        """A new recording within the same day (several layouts in one home): the events
        before it are not its own."""
        self.layout = layout
        self.steps = []
        self.events = []
        self.labels = {}
        self.began_events = self.seen_events = len(self.day.events())
        self.staging = Path(tempfile.mkdtemp(prefix="qd-record-", dir=str(self.day.top)))

    # -- a step -------------------------------------------------------------------------

    def snapshot(self, step: str, what: str, passes: Callable[[], None]) -> None:
        if any(s["step"] == step for s in self.steps):
            raise AssertionError(f"step {step} recorded twice")
        self.settle()
        folder = self.staging / "snapshots" / step
        folder.mkdir(parents=True)
        taken = time.time()
        processes = self.processes()
        (folder / "processes.json").write_text(json.dumps(processes, indent=1) + "\n")
        self.copy_state(folder)
        passes()  # quintd has seen what the snapshot holds
        read = time.time()
        self.take_events(step)
        self.steps.append({"step": step, "what": what, "t": taken, "t_events": read})

    def settle(self, limit: float = 30.0) -> None:
        """Until quintd has sent nothing for longer than ``idle_after``: a step is
        recorded where the day stands still (what a rename or a write just set off has
        played out), so that what quintd reports then holds for as long as the step."""
        quiet = self.idle_after + 1.0
        deadline = time.monotonic() + limit
        count, since = len(self.day.events()), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise AssertionError(f"quintd never went quiet for {quiet:.1f} s")
            now = len(self.day.events())
            if now != count:
                count, since = now, time.monotonic()
            time.sleep(0.1)  # polling interval of a deadline wait

    def take_events(self, step: str) -> None:
        received = self.day.events()
        for r in received[self.seen_events :]:
            event = dict(r.event)
            self.events.append(self._event(event, step, r.received_at))
        self.seen_events = len(received)

    def _label(self, sid: str | None) -> str | None:
        if sid is None:
            return None
        return self.labels.setdefault(sid, f"s{len(self.labels) + 1}")

    def _event(self, event: dict[str, Any], step: str, received: float) -> dict[str, Any]:
        return {
            "step": step,
            "session": self._label(event["session_id"]),
            "parent": self._label(event.get("parent_id")),
            "platform": event.get("platform"),
            "state": event["state"],
            "session_name": event.get("session_name"),
            "model": event.get("model"),
            "signed": bool(event.get("signing_id")),
            "timestamp": event.get("timestamp"),
        }

    # -- the processes -------------------------------------------------------------------

    def processes(self) -> list[dict[str, Any]]:
        live = LiveProcesses()
        rows = []
        for proc in psutil.process_iter():
            try:
                if proc.uids().real != self.day.user.uid:
                    continue
                pid = proc.pid
                comm = Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    exe = ""
                try:
                    cwd: str | None = os.readlink(f"/proc/{pid}/cwd")
                except OSError:
                    cwd = None
                started = datetime.fromtimestamp(proc.create_time(), UTC).isoformat()
                row: dict[str, Any] = {
                    "pid": pid,
                    "ppid": proc.ppid(),
                    "comm": comm,
                    "exe": exe,
                    "argv": proc.cmdline(),
                    "cwd": cwd,
                    "started": started,
                    "start_ticks": start_ticks(pid),
                    "env": self._env(live.environ(pid) or {}),
                    "open_files": sorted(
                        f for f in live.open_files(pid) if f.startswith(str(self.day.home))
                    ),
                    "fds": [{"tcp": f"{s.state} {s.local} -> {s.remote}"} for s in live.tcp(pid)],
                }
            except (psutil.Error, OSError):
                continue  # it exited meanwhile
            rows.append(self._scrub_row(row))
        rows.sort(key=lambda r: r["pid"])
        return rows

    @staticmethod
    def _env(env: dict[str, str]) -> dict[str, str]:
        kept = {}
        for key, value in env.items():
            if any(word in key.upper() for word in SECRET_WORDS):
                continue
            if key in ENV_KEYS or key.startswith(ENV_PREFIXES):
                kept[key] = value
        return dict(sorted(kept.items()))

    def _scrub_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = _scrub_json(row, self.rw)
        # An argument that carries a key (``FOO_API_KEY=...`` in tmux's command line).
        out["argv"] = [_scrub_assignment(a) for a in out["argv"]]
        if "PATH" in out["env"]:
            out["env"]["PATH"] = neutral_path(out["env"]["PATH"], os.environ.get("PATH", ""))
        return out

    # -- the files ----------------------------------------------------------------------

    def copy_state(self, folder: Path) -> None:
        home = self.day.home
        manifest: dict[str, float] = {}
        for relative in STATE[self.day.platform]:
            source = home / relative
            if source.is_file():
                self._copy_file(source, folder, manifest)
            elif source.is_dir():
                for root, dirs, files in os.walk(source):
                    dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                    for name in sorted(files):
                        self._copy_file(Path(root) / name, folder, manifest)
        (folder / "files.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def _copy_file(self, source: Path, folder: Path, manifest: dict[str, float]) -> None:
        name = source.name
        if name.endswith(SKIP_SUFFIXES) or name in SKIP_FILES or SKIP_NAMES.match(name):
            return
        if source.is_symlink():
            return
        target: Path | None = None
        try:
            info = source.stat()
            if info.st_size > MAX_FILE:
                return
            mtime = info.st_mtime
            relative = self.rw.text(str(source.relative_to(self.day.home)))
            target = folder / "home" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as fh:
                head = fh.read(16)
            if head == b"SQLite format 3\x00":
                copy_database(source, target, self.rw)
                # Its writes go to its -wal first: the database changed when either did.
                with contextlib.suppress(OSError):
                    mtime = max(mtime, Path(str(source) + "-wal").stat().st_mtime)
            else:
                raw = source.read_bytes()
                try:
                    data = _scrub_text(raw, self.rw)
                except UnicodeDecodeError:
                    data = self.rw.data(raw)
                    if any(p.encode() in data for p in self.rw.forbidden):
                        return  # a binary that names this machine's paths: left out
                target.write_bytes(data)
        except (OSError, sqlite3.Error, UnicodeDecodeError):
            # Gone meanwhile, or being rewritten (the next step has it), or a database the
            # dump cannot rewrite: nothing of it is kept.
            if target is not None:
                for leftover in (target, Path(f"{target}.sql")):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
            return
        manifest[relative] = mtime

    # -- the end --------------------------------------------------------------------------

    def finish(self, command: list[str] | None, story: str) -> Path:
        """The recording, checked for leftovers of this machine and moved into place."""
        package = PINNED.get(self.day.platform)
        day = {
            "platform": self.day.platform,
            "layout": self.layout,
            "package": package.name if package else None,
            "version": package.version if package else None,
            "command": [_scrub_assignment(self.rw.text(a)) for a in command or []],
            "recorded": datetime.now(UTC).strftime("%Y-%m-%d"),
            "idle_after": self.idle_after,
            "story": " ".join(story.split()),
            "steps": self.steps,
            "events": self.events,
        }
        (self.staging / "day.json").write_text(json.dumps(day, indent=1) + "\n")
        (self.staging / "README.md").write_text(readme(day, self.staging))
        problems = self.check()
        if problems:
            raise AssertionError("the recording names this machine:\n" + "\n".join(problems))
        target = self.out / self.day.platform / self.layout
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.staging), target)
        return target

    def check(self) -> list[str]:
        problems = []
        needles = [*self.rw.forbidden, "/tmp/qd-", "/var/tmp/quintd-live", "/work/"]
        for path in self.staging.rglob("*"):
            if not path.is_file():
                continue
            if any(n in str(path.relative_to(self.staging)) for n in needles):
                problems.append(f"file name: {path}")
            data = path.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    problems.append(f"{path.relative_to(self.staging)}: {needle}")
        return problems


LAYOUTS = {
    "nvm_prefix": "npm's global prefix, nvm-style (`npm install -g --prefix`): `bin/<cli>` "
    "-> `../lib/node_modules/<package>/...`, Node 22 from npm beside it",
    "project": "npm's project install (`npm install <package>`), run as "
    "`node_modules/.bin/<cli>` (npm's shim)",
    "npx": "`npx -y <package>@<version>`: npm's exec cache (`~/.npm/_npx/<hash>`), under "
    "`npm exec`",
    "native": "the package's own native binary, run directly",
    "node20": "npm's global prefix as in nvm_prefix, its `bin/<cli>` run by the machine's own "
    "Node 20 (first on `PATH`)",
}
NAMES = {
    "claude-code": "Claude Code",
    "codex": "Codex",
    "gemini-cli": "Gemini CLI",
    "qwen-code": "Qwen Code",
    "opencode": "OpenCode",
    "copilot-cli": "Copilot CLI",
    "cline": "Cline",
}


def readme(day: dict[str, Any], folder: Path) -> str:
    """The fixture's README: what was run, the story, the steps and what quintd reported."""
    name = NAMES.get(day["platform"], day["platform"])
    first = json.loads(
        (folder / "snapshots" / day["steps"][0]["step"] / "processes.json").read_text()
    )
    tree = "\n".join(
        f"    {r['pid']:>7} {r['ppid']:>7}  {' '.join(r['argv'])[:110]}".rstrip() for r in first
    )
    lines = [
        f"# {name} {day['version']}, {day['layout']} layout: a live day, recorded",
        "",
        f"Recorded on {day['recorded']} by the live tier (`tests/live/`, "
        f"`QUINTD_LIVE_RECORD=<dir>`): the real `{day['package']}@{day['version']}` from npm, "
        f"installed as {LAYOUTS.get(day['layout'], day['layout'])}; run in tmux as an "
        "unprivileged user (home rewritten to `/home/dev`, project `/home/dev/src/shop-api`, a "
        "git repository) against a loopback stand-in for its model API, while a real "
        f"`quintd run` (`idle_after = {day['idle_after']}`) delivered to a loopback ingest "
        "server. Command:",
        "",
        f"    {' '.join(day['command'])}",
        "",
        f"The story: {day['story']}",
        "",
        f"The live user's processes at the first step (pid, ppid, argv):\n\n{tree}",
        "",
        "## Steps",
        "",
        "Each step was taken where the day stood still (quintd had sent nothing for longer "
        "than `idle_after`); its events were read two of quintd's passes later.",
        "",
    ]
    for step in day["steps"]:
        lines.append(f"- `{step['step']}`: {step['what']}.")
        for e in day["events"]:
            if e["step"] == step["step"]:
                extra = ", ".join(
                    f"{k} {e[k]!r}" for k in ("session_name", "model", "parent") if e.get(k)
                )
                lines.append(f"  - {e['session']} {e['state']}" + (f" ({extra})" if extra else ""))
    lines += [
        "",
        "## Files",
        "",
        "- `day.json`: the agent, version, layout, command, the steps (`t`: the snapshot's "
        "time, `t_events`: when its events were read; epoch seconds) and every event quintd "
        "delivered (sessions labelled in the order they arrived), with the step it came by.",
        "- `snapshots/<step>/processes.json`: the live user's processes (as "
        "`tests/replay.py`'s `load_processes` reads them).",
        "- `snapshots/<step>/home/`: the agent's own state files then (caches, binaries and "
        "files over 1 MB left out; a SQLite database as its SQL text, `<name>.sql`, which the "
        "replay builds); `files.json` their modification times.",
        "",
        "Paths of this machine were rewritten (the day's home to `/home/dev`, in contents, "
        "names and the agents' slug and hash forms; the installs to `/home/dev/.npm-global`, "
        "`/home/dev/tools`, npm's cache to `/home/dev/.npm`), the boot id and secrets to fixed "
        "fakes. Replayed by `tests/test_layouts.py`; re-recorded, not edited (README: Tests).",
        "",
    ]
    return "\n".join(lines)


_ASSIGNMENT = re.compile(r"(?<![^\s'\"])([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def _scrub_assignment(arg: str) -> str:
    """``NAME=value`` with a secret-looking name, alone or within a command line (tmux's
    ``exec env -i ANTHROPIC_API_KEY=... claude``): the value faked."""

    def fake(match: re.Match[str]) -> str:
        name = match.group(1)
        if any(word in name.upper() for word in SECRET_WORDS):
            return f"{name}={FAKE_SECRET}"
        return match.group(0)

    return _ASSIGNMENT.sub(fake, arg)


# The runner's own PATH (the tmux server is started with root's environment): its
# entries, but for the system's standard ones, name this machine (its toolchains, the
# checkout's virtualenv).
STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def neutral_path(value: str, runner_path: str) -> str:
    """A process's PATH (rewritten already) without the runner's own entries."""
    runner = {p for p in runner_path.split(os.pathsep) if p and p not in STANDARD_PATH}
    kept = [
        p
        for p in value.split(os.pathsep)
        if p not in runner and not p.startswith(("/root/", "/srv/tests/"))
    ]
    return os.pathsep.join(kept)
