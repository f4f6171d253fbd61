"""`quintd run` following a fake Claude Code that writes its registry and transcripts as
the real one does (the fixtures, replayed), while a loopback server receives the events:
the exact sequence; and the restart story with SIGKILL between transitions."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from claude_fixture import FIRST, FIXTURES, PROJECT_DIR, SECOND, SUBAGENT
from conftest import TOKEN, Agents, DaemonProcess, fake_agent, wait_until, write_config
from ingest_server import IngestServer, Received

from quintd.identity import machine_id, native_session_id
from quintd.procfs import start_ticks as linux_start_ticks


class FakeClaude:
    """A process named claude, and the files Claude Code would write for it."""

    def __init__(self, agents: Agents, home: Path) -> None:
        self.root = home / ".claude"
        (self.root / "sessions").mkdir(parents=True)
        self.project = self.root / "projects" / PROJECT_DIR
        self.project.mkdir(parents=True)
        workdir = home / "src" / "shop-api"
        workdir.mkdir(parents=True)
        bindir = home / "bin"
        bindir.mkdir()
        fake_agent(bindir / "claude")
        self.proc = agents.spawn(
            [str(bindir / "claude"), "600"],
            cwd=workdir,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )

    def registry(self, snapshot: str) -> None:
        data = json.loads((FIXTURES / "registry-snapshots" / snapshot).read_text())
        data.update(pid=self.proc.pid, procStart=linux_start_ticks(self.proc.pid))
        tmp = self.root / "sessions" / f".{self.proc.pid}.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.root / "sessions" / f"{self.proc.pid}.json")  # as atomic as theirs

    def transcript(
        self, relative: str, kinds: set[str] | None = None, start: int = 0, stop: int | None = None
    ) -> None:
        """Append fixture lines [start:stop] (optionally only records of these types)."""
        source = FIXTURES / "home" / ".claude" / "projects" / PROJECT_DIR / relative
        target = self.project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = source.read_text().splitlines(keepends=True)[start:stop]
        if kinds is not None:
            lines = [line for line in lines if json.loads(line).get("type") in kinds]
        with open(target, "a") as fh:
            fh.writelines(lines)

    def meta(self) -> None:
        relative = f"{FIRST}/subagents/agent-{SUBAGENT}.meta.json"
        target = self.project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "home" / ".claude" / "projects" / PROJECT_DIR / relative, target)


def ours(events: list[Received], state_dir: Path) -> list[Received]:
    """The events of the fake agent's sessions, whose ids we know in advance (other agents
    may run on this machine)."""
    machine = machine_id(state_dir)
    uid = os.getuid()  # the fake agent's owner: conversation ids are bound to it
    ids = {
        native_session_id(machine, "claude-code", FIRST, uid=uid),
        native_session_id(machine, "claude-code", FIRST, SUBAGENT, uid=uid),
        native_session_id(machine, "claude-code", SECOND, uid=uid),
    }
    return [r for r in events if r.event["session_id"] in ids]


def story(events: list[Received]) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """(session, state, name, model, parent) per event, sessions named by first sight."""
    names: dict[str, str] = {}
    out = []
    for r in events:
        e = r.event
        label = names.setdefault(e["session_id"], f"s{len(names) + 1}")
        parent = names.get(e["parent_id"]) if e.get("parent_id") else None
        out.append((label, e["state"], e.get("session_name"), e.get("model"), parent))
    return out


def test_fake_claude_code_story_exact_sequence(short_tmp: Path, agents: Agents, daemons) -> None:
    with IngestServer(token=TOKEN) as server:
        daemon: DaemonProcess = daemons(
            write_config(short_tmp, endpoint=server.url, idle_after=1.0)
        ).start()
        daemon.wait_ready()
        claude = FakeClaude(agents, short_tmp / "home")

        state_dir = short_tmp / "state"

        def upto(n: int, what: str) -> list[Received]:
            return ours(
                server.wait_for(lambda evs: len(ours(evs, state_dir)) >= n, what=what), state_dir
            )

        claude.registry("session-busy.json")
        upto(1, "active")
        claude.transcript(f"{FIRST}.jsonl", {"ai-title", "assistant"}, 0, 8)
        upto(2, "update with title and model")
        claude.registry("session-idle.json")
        upto(3, "idle after idle_after of quiet")
        claude.transcript(f"{FIRST}.jsonl", {"custom-title"})
        claude.registry("session-renamed.json")
        upto(4, "an update with the new name (a rename is no work: still idle)")
        claude.meta()
        claude.transcript(f"{FIRST}/subagents/agent-{SUBAGENT}.jsonl", None, 0, 1)
        upto(5, "the sub-agent")
        claude.transcript(f"{FIRST}/subagents/agent-{SUBAGENT}.jsonl", None, 1)
        upto(6, "the parent active: its sub-agent works")
        tool_result = next(
            i
            for i, line in enumerate(
                (FIXTURES / "home/.claude/projects" / PROJECT_DIR / f"{FIRST}.jsonl").open()
            )
            if "tool_result" in line
        )
        claude.transcript(f"{FIRST}.jsonl", {"user"}, tool_result, tool_result + 1)
        upto(7, "the sub-agent ended by its result")
        claude.registry("session-after-clear.json")  # /clear
        upto(9, "old conversation ended, new one active")
        agents.stop(claude.proc)
        events = upto(10, "ended at exit")
        assert daemon.terminate() == 0

    name, model = "Fix auth middleware token expiry", "claude-opus-4-8"
    got = story(events)
    assert got[:7] == [
        ("s1", "active", "shop-api", None, None),
        ("s1", "active", name, model, None),
        ("s1", "idle", name, model, None),
        ("s1", "idle", "Token expiry fix", model, None),  # a rename is no work
        ("s2", "active", "sub task", model, "s1"),
        ("s1", "active", "Token expiry fix", model, None),  # its sub-agent works
        ("s2", "ended", "sub task", model, "s1"),
    ]
    # /clear: the old conversation ends, the new one starts (order across sessions is free).
    assert sorted(got[7:9]) == sorted(
        [
            ("s1", "ended", "Token expiry fix", model, None),
            ("s3", "active", "Token expiry fix", None, None),  # registry name, not derived
        ]
    )
    assert got[9] == ("s3", "ended", "Token expiry fix", None, None)
    assert len(events) == 10 and server.violations == []
    ids = {r.event["session_id"] for r in events}
    assert len(ids) == 3
    # Every session's first event carries the signing identity (it waited for it).
    firsts = {r.event["session_id"]: r.event for r in reversed(events)}
    assert all(e.get("signing_id", "").startswith("sha256:") for e in firsts.values())


def test_restart_with_sigkill_between_transitions(short_tmp: Path, agents: Agents, daemons) -> None:
    with IngestServer(token=TOKEN) as server:
        config = write_config(short_tmp, endpoint=server.url, idle_after=1.0)
        first = daemons(config).start()
        first.wait_ready()
        claude = FakeClaude(agents, short_tmp / "home")
        claude.registry("session-busy.json")
        state_dir = short_tmp / "state"
        server.wait_for(lambda evs: len(ours(evs, state_dir)) >= 1, what="active")
        first.kill()  # SIGKILL while active (perhaps before the 2xx was recorded)

        claude.registry("session-idle.json")  # the agent goes on while quintd is down
        second = daemons(config).start()
        second.wait_ready()
        server.wait_for(
            lambda evs: any(r.event["state"] == "idle" for r in ours(evs, state_dir)),
            what="idle after the restart",
        )
        second.kill()  # SIGKILL while idle

        third = daemons(config).start()
        third.wait_ready()
        status = wait_until(
            lambda: (
                (s := third.status())
                and any(x["pid"] == claude.proc.pid for x in s["sessions"])
                and s
            ),
            what="session restored",
        )
        mine = [s for s in status["sessions"] if s["pid"] == claude.proc.pid]
        assert [(s["state"], s["pid"]) for s in mine] == [("idle", claude.proc.pid)]
        agents.stop(claude.proc)
        events = ours(
            server.wait_for(
                lambda evs: any(r.event["state"] == "ended" for r in ours(evs, state_dir)),
                what="ended",
            ),
            state_dir,
        )
        assert third.terminate() == 0

    # A SIGKILL between a send and its acknowledgement may repeat an event, always under
    # its own key; nothing is announced twice under different keys.
    first_sight = list({r.idempotency_key: r for r in events}.values())
    assert [(s, state) for s, state, *_ in story(first_sight)] == [
        ("s1", "active"),
        ("s1", "idle"),
        ("s1", "ended"),
    ]
