"""The error paths a run of the suite with coverage showed untested: a pass whose store
fails, a reader that fails after it knew a conversation, the free-disk probe failing,
a batch split at the byte cap, the inotify watch limit, a delivery worker's exception.

Each drives the real part (a real SQLite file, real processes, a real reader's directory)
into the failure; what cannot be made to fail on demand here (SQLite busy for exactly one
call, a full inotify table) is a real object with one method that fails once."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, Agents, wait_until, write_config
from ingest_server import IngestServer
from test_shipper import event

from quintd.config import load_config
from quintd.daemon import Daemon
from quintd.model import AgentProcess, ConversationFacts
from quintd.shipper import MAX_BATCH_BYTES, DeliverySettings, Shipper
from quintd.sources.files import ReadStats
from quintd.sources.manager import SourceManager
from quintd.sources.spec import ReaderContext, ReaderSpec
from quintd.store import Store, StoreSettings


class FailingOnce(Store):
    """A real store whose next ``apply`` fails as a busy database does."""

    fail = False

    def apply(self, *args: Any, **kwargs: Any) -> int:
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database is locked")
        return super().apply(*args, **kwargs)


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[Daemon]:
    """A daemon built in this process (not run): each pass is called by the test."""
    loaded = load_config(str(write_config(short_tmp, endpoint="http://127.0.0.1:9")))
    built = Daemon(loaded)
    parts = built.build_parts(built.settings)
    store = FailingOnce(built.settings.paths.database_path, built.settings.store)
    parts.store.close()
    parts.store = parts.writer.store = store
    try:
        yield built
    finally:
        parts.sources.close()
        parts.resolver.close()
        store.close()


def queued_states(store: Store) -> list[str]:
    return [e.state for e in store.peek(100)]


def test_a_pass_whose_store_fails_is_found_again_by_the_next(
    daemon: Daemon, agents: Agents
) -> None:
    """Nothing of a failed pass is committed, in the store or in the tracker: the next
    pass finds the same transition and stores it (else the session would never start)."""
    assert daemon.parts is not None
    store = daemon.parts.store
    assert isinstance(store, FailingOnce)
    daemon.tick()  # the machine as it was
    before = queued_states(store)
    amp = agents.binary("amp")
    wait_until(lambda: any(p.pid == amp.pid for p in _agents(daemon)), what="amp seen")
    store.fail = True
    daemon.tick()
    assert queued_states(store) == before
    errors = daemon.pass_errors
    assert errors.count == 1 and "database is locked" in (errors.last or "")
    daemon.tick()
    assert queued_states(store) == [*before, "active"]
    assert [s.pid for s in daemon.session_view if s.pid == amp.pid] == [amp.pid]


def _agents(daemon: Daemon) -> list[AgentProcess]:
    assert daemon.parts is not None
    return daemon.parts.scanner.scan()


# -- a reader that fails -----------------------------------------------------------------


class Flaky:
    """An agent state directory whose reading fails when told to."""

    def __init__(self, root: Path, _context: ReaderContext) -> None:
        self.root = root
        self.stats = ReadStats()
        self.broken = False

    def watch_dirs(self) -> list[Path]:
        return []

    def changed(self, path: Path) -> None:
        pass

    def prepare(self, processes: list[AgentProcess]) -> None:
        pass

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        if self.broken:
            raise ValueError("a file the reader chokes on")
        return ConversationFacts(native_id="conv-1", status="busy", name="known")

    def has_registry_dir(self) -> bool:
        return True

    def poll(self) -> None:
        pass


def test_a_reader_error_keeps_what_was_known(tmp_path: Path, agents: Agents) -> None:
    """A reader failing on a garbage file is not the end of the conversation: the facts
    last read stand (and the error is counted)."""
    states: list[Flaky] = []

    def factory(root: Path, context: ReaderContext) -> Flaky:
        states.append(Flaky(root, context))
        return states[-1]

    spec = ReaderSpec(platform="amp", env_dir=None, home_dir=".amp", factory=factory)
    manager = SourceManager(readers=(spec,))
    amp = agents.binary("amp")
    proc = wait_until(lambda: next((a for a in _scan() if a.pid == amp.pid), None), what="amp seen")
    try:
        facts, _ = manager.observe([proc])
        assert facts[proc.pid] == ConversationFacts(native_id="conv-1", status="busy", name="known")
        [state] = states
        state.broken = True
        again, pending = manager.observe([proc])
        assert again[proc.pid] == facts[proc.pid] and pending == set()
        assert manager.errors == 1
    finally:
        manager.close()


def _scan() -> list[AgentProcess]:
    from quintd.scanner import Scanner

    return Scanner().scan()


# -- the free-disk probe -----------------------------------------------------------------


def test_a_failing_free_disk_probe_does_not_stop_the_queue(tmp_path: Path) -> None:
    """The free-space probe failing (a filesystem gone away, a kernel quirk) must not
    refuse events: the bound by bytes still holds, and nothing is lost."""

    def broken(_path: Path) -> int:
        raise OSError(5, "Input/output error")

    # 1 TiB free asked for: with a working probe, every transition would be refused.
    store = Store(tmp_path / "q.db", StoreSettings(min_free_disk=1 << 40), free_disk=broken)
    try:
        assert store.apply([event(1), event(2)]) == 2
        assert queued_states(store) == ["active", "active"]
        assert store.stats().refused == 0
    finally:
        store.close()


# -- a batch at the byte cap -------------------------------------------------------------


def test_a_batch_is_cut_at_the_byte_cap(tmp_path: Path) -> None:
    """Events whose bodies together pass MAX_BATCH_BYTES go in several requests, each
    under the cap, none lost or repeated."""
    store = Store(tmp_path / "q.db")
    big = "x" * 200
    count = MAX_BATCH_BYTES // 300 + 50  # more than one request's worth of bytes
    store.apply([event(n, name=big) for n in range(count)])
    with IngestServer(token=TOKEN, batch=True) as server:
        settings = DeliverySettings(
            endpoint=server.url,
            token=TOKEN,
            batch_size=500,
            batch_body=True,
            start_jitter=0.0,
        )
        shipper = Shipper(store, settings, rand=lambda: 0.5)
        shipper.start()
        try:
            wait_until(lambda: store.stats().depth == 0, what="drained", timeout=60)
        finally:
            shipper.stop(1.0)
        assert len(server.events) == count
        assert len({r.event["session_id"] for r in server.events}) == count
        assert server.requests >= 2
        assert max(server.request_sizes) <= MAX_BATCH_BYTES
    store.close()


# -- the inotify limit -------------------------------------------------------------------


def test_a_directory_that_cannot_be_watched_is_polled(
    tmp_path: Path, agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inotify watch limit reached: the directory is polled each pass instead, status
    counts it, and a conversation written there is still found."""
    from quintd.sources import claude_code

    home = agents.home
    sessions = home / ".claude" / "sessions"
    sessions.mkdir(parents=True)
    manager = SourceManager(readers=(claude_code.SPEC,))

    def full(_directory: Path, _recursive: bool) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(manager, "_schedule", full)
    claude = agents.binary("claude")
    proc = wait_until(
        lambda: next((a for a in _scan() if a.pid == claude.pid), None), what="claude seen"
    )
    try:
        from quintd.procfs import start_ticks

        manager.observe([proc])
        assert manager.stats()["unwatchable_dirs"] >= 1
        record = {
            "pid": claude.pid,
            "sessionId": "0b7c5a4e-0000-4000-8000-000000000001",
            "cwd": str(home),
            "procStart": start_ticks(claude.pid),
            "status": "busy",
            "name": "polled",
        }
        (sessions / f"{claude.pid}.json").write_text(json.dumps(record))
        facts = wait_until(lambda: manager.observe([proc])[0], what="facts by polling")
        found = facts[proc.pid]
        assert isinstance(found, ConversationFacts) and found.name == "polled"
    finally:
        manager.close()


# -- a delivery worker's exception ------------------------------------------------------


class ExplodingOnce(Store):
    """A real store whose next ``peek`` raises an unexpected error (a bug's stand-in)."""

    armed = True
    lock = threading.Lock()

    def peek(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            if self.armed:
                self.armed = False
                raise RuntimeError("unexpected")
        return super().peek(*args, **kwargs)


def test_an_unexpected_error_in_delivery_backs_off_and_delivers(tmp_path: Path) -> None:
    store = ExplodingOnce(tmp_path / "q.db")
    store.apply([event(1)])
    with IngestServer(token=TOKEN) as server:
        settings = DeliverySettings(endpoint=server.url, token=TOKEN, start_jitter=0.0)
        shipper = Shipper(store, settings, rand=lambda: 0.5)
        shipper.start()
        try:
            server.wait_for(lambda evs: len(evs) == 1, what="delivered after the error")
            status = shipper.report()
            assert status.alive and "RuntimeError: unexpected" in (status.last_error or "")
        finally:
            shipper.stop(1.0)
    store.close()


def test_a_pass_in_which_nothing_changed_writes_nothing(daemon: Daemon, agents: Agents) -> None:
    """The steady state costs no disk: a pass that finds nothing new commits nothing
    (SQLite's own count of changed rows stays where it was)."""
    assert daemon.parts is not None
    store = daemon.parts.store
    agents.binary("amp")
    wait_until(lambda: daemon.tick() is None and daemon.session_view, what="a session")
    daemon.tick()  # anything left to settle (an identity found in the background)
    before = store._conn.total_changes
    for _ in range(5):
        daemon.tick()
    assert store._conn.total_changes == before
