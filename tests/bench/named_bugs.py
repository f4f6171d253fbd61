#!/usr/bin/env python3
"""The bugs issues 15 and 24 named, made again one at a time: does the suite catch each one?

Each bug is a small edit (lint- and type-clean) of one module, applied to a private copy of
the checkout; the tests that should catch it run against that copy. Every row must say
CAUGHT; a MISSED row is a test to write. (The mutation runner, ``mutation.py``, does the
same for every mutation point it can find; these are the bugs a person made on purpose.)

Run: python3 tests/bench/named_bugs.py [WORD...]   (only the bugs whose name has a WORD)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@dataclass(frozen=True)
class Bug:
    name: str
    module: str
    edits: tuple[tuple[str, str], ...]  # (text, replacement), each text found exactly once
    tests: tuple[str, ...]


BUGS = (
    Bug(
        "idle_after not applied on reload",
        "quintd/tracker.py",
        (
            (
                "TrackerSettings) -> None:\n        self.settings = settings\n",
                "TrackerSettings) -> None:\n        pass\n",
            ),
        ),
        ("tests/test_reload.py::test_idle_after_reload_applies_to_live_sessions",),
    ),
    Bug(
        "token not a secret at start",
        "quintd/cli.py",
        (("        register_secret(loaded.token)\n", "        pass\n"),),
        ("tests/test_reload.py::test_the_token_is_a_secret_from_start_and_after_a_reload",),
    ),
    Bug(
        "token not a secret on reload",
        "quintd/daemon.py",
        (("        register_secret(settings.delivery.token)\n", ""),),
        ("tests/test_reload.py::test_the_token_is_a_secret_from_start_and_after_a_reload",),
    ),
    Bug(
        "a failed pass not rolled back",
        "quintd/daemon.py",
        (
            (
                "                return\n            # No room",
                "                pass\n            # No room",
            ),
            (
                "            self._hold_in_memory(changes, exc)\n",
                "            if _disk_full(exc):\n"
                "                self._hold_in_memory(changes, exc)\n",
            ),
        ),
        ("tests/test_error_paths.py::test_a_pass_whose_store_fails_is_found_again_by_the_next",),
    ),
    Bug(
        "a reader error forgets the last facts",
        "quintd/sources/manager.py",
        (("found, young = self._last.get(proc.key), False", "found, young = None, False"),),
        ("tests/test_error_paths.py::test_a_reader_error_keeps_what_was_known",),
    ),
    Bug(
        "Retry-After ignored",
        "quintd/delivery_policy.py",
        (
            (
                "            return Outcome(Action.RETRY_AFTER, reason, status, wait)\n",
                "            pass\n",
            ),
        ),
        ("tests/test_shipper.py", "tests/test_delivery_policy.py"),
    ),
    Bug(
        "the restored-session reset dropped",
        "quintd/tracker.py",
        (
            (
                "        session.cpu_time = proc.cpu_time\n        session.observed_at = mono\n"
                "        session.quiet_since = mono\n        session.state_since = mono\n",
                "",
            ),
        ),
        ("tests/test_sessions.py", "tests/test_crash.py"),
    ),
    # Issue 24: outside the core.
    Bug(
        "OpenCode: an aborted answer stays busy",
        "quintd/sources/opencode.py",
        (
            (
                'unfinished = completed in (None, "null") and error in (None, "null")',
                'unfinished = completed in (None, "null")',
            ),
        ),
        ("tests/test_opencode.py::test_an_aborted_or_failed_answer_is_over",),
    ),
    Bug(
        "waiter: a closed pidfd left in the poll set",
        "quintd/waiter.py",
        (("            self._poll.unregister(fd)\n", "            pass\n"),),
        ("tests/test_waiter.py::test_a_wait_still_blocks_after_an_unwatch_and_after_an_exit",),
    ),
    Bug(
        "scanner: a reused pid keeps the old agent",
        "quintd/scanner.py",
        (
            (
                "            if current.start_ticks != known.start_ticks:  # the pid was reused\n"
                "                self._remove(pid)\n                self._inspect(pid, now)\n"
                "                return\n",
                "",
            ),
        ),
        ("tests/test_scanner.py::test_a_reused_pid_does_not_inherit_the_old_agent",),
    ),
    Bug(
        "clean_text keeps format characters",
        "quintd/model.py",
        (
            (
                ' or (category == "Cf" and ch not in "\\u200c\\u200d")',
                "",
            ),
        ),
        ("tests/test_model.py",),
    ),
    Bug(
        "a group-writable state dir accepted",
        "quintd/private_files.py",
        (("    if mode & 0o022:\n", "    if mode & 0o002:\n"),),
        ("tests/test_private_files.py",),
    ),
    Bug(
        "in_flight not applied on reload",
        "quintd/shipper.py",
        (
            (
                "            old_pool, self._pool = self._pool, self._new_pool(pending)\n",
                "            pass\n",
            ),
        ),
        ("tests/test_shipper.py::test_a_reload_of_in_flight_changes_how_many_requests_go_at_once",),
    ),
    Bug(
        "scan errors counted from the passes",
        "quintd/metrics.py",
        (('"Passes that failed.", [({}, sc.errors)]', '"Passes that failed.", [({}, sc.passes)]'),),
        ("tests/test_metrics.py",),
    ),
    Bug(
        "the owner's uid dropped from a conversation's id",
        "quintd/identity.py",
        (
            (
                '    owner = "" if uid is None else f"{uid}:"\n'
                '    name = f"{machine_id}:{platform}:{owner}{native_id}"\n',
                '    name = f"{machine_id}:{platform}:{native_id}"\n',
            ),
        ),
        ("tests/test_identity.py",),
    ),
    Bug(
        "a migration stamped with the last version",
        "quintd/schema.py",
        (('''+ f"'{version}');\\nCOMMIT;"''', '''+ f"'{SCHEMA_VERSION}');\\nCOMMIT;"'''),),
        ("tests/test_migrations.py",),
    ),
    Bug(
        "shutdown waits for cloud.timeout",
        "quintd/shipper.py",
        (
            (
                "            self.join(drain_timeout + STOP_MARGIN_S)\n",
                "            self.join(drain_timeout + self.settings.timeout + 1.0)\n",
            ),
        ),
        ("tests/test_shipper.py::test_stop_keeps_to_the_drain_with_a_request_unanswered",),
    ),
    Bug(
        "backoff from 2 s",
        "quintd/delivery_policy.py",
        (("base * 2.0 ** min(max(failures - 1, 0), 30)", "base * 2.0 ** min(failures, 30)"),),
        ("tests/test_delivery_policy.py",),
    ),
    Bug(
        "status --watch gives up on a broken config",
        "quintd/cli.py",
        (("    if args.watch:\n\n        def fetch", "    if False:\n\n        def fetch"),),
        (
            "tests/test_newcomer.py::"
            "test_status_watch_redraws_with_a_config_file_that_no_longer_loads",
        ),
    ),
)


def _copy(to: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".coverage*"
    )
    shutil.copytree(ROOT, to, ignore=ignore, symlinks=True)


def check(bug: Bug, scratch: Path) -> tuple[bool, str]:
    work = scratch / "copy"
    shutil.rmtree(work, ignore_errors=True)
    _copy(work)
    module = work / bug.module
    text = module.read_text()
    for old, new in bug.edits:
        if text.count(old) != 1:
            raise SystemExit(f"{bug.name}: the code changed; edit {old!r} found {text.count(old)}x")
        text = text.replace(old, new)
    module.write_text(text)
    env = dict(os.environ, QUINTD_FIXTURES=os.environ.get("QUINTD_FIXTURES", str(FIXTURES)))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *bug.tests],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    lines = run.stdout.strip().splitlines()
    return run.returncode != 0, lines[-1] if lines else run.stderr.strip()[-200:]


def main() -> int:
    only = sys.argv[1:]
    missed = 0
    with tempfile.TemporaryDirectory(prefix="quintd-bugs-") as scratch:
        for bug in BUGS:
            if only and not any(word in bug.name for word in only):
                continue
            caught, summary = check(bug, Path(scratch))
            missed += not caught
            print(f"{bug.name:40}{'CAUGHT' if caught else 'MISSED':>8}  {summary}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
