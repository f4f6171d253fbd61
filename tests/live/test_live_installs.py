"""Installing, updating and removing the agents, and asking them their version, while
quintd runs: none of it is an agent session.

npm sets its process title (one NUL-padded cmdline, ``npm install opencode-ai
@github/copilot``, whose last word is an agent's name), runs the packages' install scripts
with their cwd inside the package (``node ./postinstall.mjs`` in
``node_modules/opencode-ai``), and ``npx`` runs ``npm exec`` before the agent; each was once
reported as a session.
"""

from __future__ import annotations

import time

import pytest
from day import Day, live_day
from installs import NODE, SYSTEM_PATH, npm_env, specs
from live_user import LiveUser
from scenes import installed
from scenes import live_user_fixture as live_user_fixture  # the fixture
from standin import Brain

# How long after the last command a phantom session would have shown: quintd announces a
# new agent within a scan interval (1 s) plus the 2 s it may hold it for its identity.
SETTLE_S = 4.0


def run(day: Day, argv: list[str], path: str = SYSTEM_PATH) -> None:
    done = day.user.run(argv, npm_env(day.user, path), cwd=day.project, timeout=900)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.returncode}\n{done.stderr[-3000:]}"


@pytest.mark.timeout(900)
def test_npm_install_update_uninstall_npx_and_version_queries_are_no_sessions(
    live_user: LiveUser,
) -> None:
    install = installed("prefix")
    packages = dict(install.packages)
    with live_day("none", live_user, Brain()) as day:
        day.make_project()
        (day.project / "package.json").write_text('{"name": "p", "private": true}\n')
        day.user.own(day.project)
        started = time.monotonic()
        everything = specs(packages)
        # What a developer does: install the agents (from npm's cache: offline-first),
        # update them, ask each its version, run one through npx, remove them all.
        run(day, ["npm", "install", "--prefer-offline", *everything])
        run(day, ["npm", "update", "--prefer-offline"])
        for platform_id, package in packages.items():
            run(day, [str(install.bin_dir / package.bin), "--version"], install.path())
            day.notes.append(f"{platform_id} --version done at {time.monotonic() - started:.1f} s")
        qwen = packages["qwen-code"]
        run(
            day,
            ["npx", "-y", "--prefer-offline", f"{qwen.name}@{qwen.version}", "--version"],
            f"{install.bin_dir}:{SYSTEM_PATH}",  # Node 22, as Qwen Code needs
        )
        run(day, ["npm", "uninstall", *(p.name for p in packages.values()), NODE.name])
        settled = time.monotonic() + SETTLE_S
        while time.monotonic() < settled:
            day.daemon.status()  # a pass or two go by (the wait itself is the check)
        day.notes.append(f"all commands: {time.monotonic() - started:.1f} s")
        assert day.sessions() == {}, "installing or asking is no agent session"
