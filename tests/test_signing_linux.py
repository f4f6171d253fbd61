"""Signing identity on Linux (package owner, else SHA-256) and the resolver's cache and
budget, against real files and real package databases."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import DEBIAN_LIKE, SLEEP, Agents, fake_agent, required_tool, wait_until

from quintd.scanner import Scanner, ScannerSettings
from quintd.signing import SigningInfo, SigningResolver, Target
from quintd.signing.linux import LinuxIdentity
from quintd.signing.system_packages import package_owner, parse_dpkg_search


def linux_info(path: str) -> SigningInfo:
    return LinuxIdentity()(Target(path))


def test_unowned_file_is_identified_by_sha256(tmp_path: Path) -> None:
    exe = tmp_path / "claude"
    exe.write_bytes(b"\x7fELF fake agent" * 1000)
    info = linux_info(str(exe))
    assert info.source == "sha256"
    assert info.signing_id == "sha256:" + hashlib.sha256(exe.read_bytes()).hexdigest()


@pytest.mark.skipif(not DEBIAN_LIKE, reason="not a Debian-like system (README: Set up)")
def test_package_owned_binary_reports_its_package() -> None:
    required_tool("dpkg-query")
    sleep = os.path.realpath(SLEEP)
    info = linux_info(sleep)
    assert info.source == "deb"
    assert info.signing_id == "deb:coreutils"  # and its MD5 is the one dpkg recorded
    assert info.valid is True
    # With merged /usr, both spellings of the path resolve to the package.
    assert package_owner("/usr/bin/sleep") == package_owner("/bin/sleep") == "deb:coreutils"


def test_files_outside_package_trees_are_never_queried(tmp_path: Path) -> None:
    assert package_owner(str(tmp_path / "x")) is None


def test_parse_dpkg_search() -> None:
    assert parse_dpkg_search("coreutils: /bin/sleep\n") == "coreutils"
    assert parse_dpkg_search("libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\n") == "libc6:amd64"
    assert parse_dpkg_search("diversion by x from: /a\nfoo, bar: /a\n") == "foo"


class CountingBackend:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[str] = []
        self.gate = gate

    def __call__(self, target: Target) -> SigningInfo:
        if self.gate is not None:
            self.gate.wait(30)
        self.calls.append(target.path)
        return SigningInfo(signing_id=f"id:{Path(target.path).name}", source="test")


def test_cache_by_file_identity(tmp_path: Path) -> None:
    exe = tmp_path / "agent"
    exe.write_bytes(b"v1")
    link = tmp_path / "link"
    os.link(exe, link)  # same file, other name (a link changes the ctime: made first)
    backend = CountingBackend()
    resolver = SigningResolver(backend)
    assert resolver.resolve(str(exe)) == SigningInfo("id:agent", "test")
    assert resolver.resolve(str(exe)) is not None
    assert resolver.resolve(str(link)) is not None  # still one examination
    assert len(backend.calls) == 1
    exe.write_bytes(b"version two")  # new size and mtime: examined again
    resolver.resolve(str(exe))
    assert len(backend.calls) == 2
    assert resolver.resolve(str(tmp_path / "missing")) is None
    resolver.close()


def test_slow_identity_never_stalls_a_scan_and_arrives_later(agents: Agents) -> None:
    """A backend still busy (a 245 MB hash) past the budget: the scan returns without
    the identity, and a later pass picks it up from the cache."""
    gate = threading.Event()
    resolver = SigningResolver(CountingBackend(gate))
    scanner = Scanner(ScannerSettings(signing_budget=0.05), resolver)
    proc = agents.binary("claude")

    def mine():
        return next((a for a in scanner.scan() if a.pid == proc.pid), None)

    agent = wait_until(mine, what="claude found")
    assert agent.signing_id is None
    assert scanner.stats.last_duration_s < 5.0  # returned although the backend is blocked
    gate.set()
    later = wait_until(lambda: (a := mine()) and a.signing_id and a, what="identity later")
    assert later.signing_id == "id:claude"
    resolver.close()


def test_scan_reports_real_sha256_of_agent_binary(agents: Agents) -> None:
    resolver = SigningResolver()
    scanner = Scanner(ScannerSettings(signing_budget=30), resolver)
    proc = agents.binary("codex")
    # Other agents on the machine may be examined first: wait for this one's identity.
    agent = wait_until(
        lambda: next((a for a in scanner.scan() if a.pid == proc.pid and a.signing_id), None),
        what="codex found, with its identity",
    )
    expected = hashlib.sha256((agents.root / "bin" / "codex").read_bytes()).hexdigest()
    assert agent.signing_id == f"sha256:{expected}"
    assert agent.identity_path == str(agents.root / "bin" / "codex")
    resolver.close()


def test_signature_identifies_an_app_bundle_no_name_rule_knows(agents: Agents) -> None:
    """macOS path of the cascade: an unknown binary inside an .app bundle is examined in
    the background; once its verified identity is known it matches by `signing`. The
    backend stands in for codesign, which this machine does not have."""
    exe = agents.root / "Renamed.app" / "Contents" / "MacOS" / "Renamed"
    exe.parent.mkdir(parents=True)
    fake_agent(exe)

    def codesign_stand_in(target: Target) -> SigningInfo:
        if target.path.endswith("/Renamed"):
            return SigningInfo(
                "com.openai.codex",
                "codesign",
                identifier="com.openai.codex",
                team_id="2DC432GLL2",
                valid=True,
            )
        return SigningInfo(None, "error")

    resolver = SigningResolver(codesign_stand_in)
    scanner = Scanner(resolver=resolver)
    proc = agents.spawn([str(exe), "600"])
    agent = wait_until(
        lambda: next((a for a in scanner.scan() if a.pid == proc.pid), None),
        what="bundle matched by its signature",
    )
    assert (agent.platform, agent.matched_by, agent.signing_id) == (
        "codex",
        "signing",
        "com.openai.codex",
    )
    resolver.close()


def test_same_identifier_from_another_team_does_not_match(agents: Agents) -> None:
    exe = agents.root / "Impostor.app" / "Contents" / "MacOS" / "Impostor"
    exe.parent.mkdir(parents=True)
    fake_agent(exe)
    examined = threading.Event()

    def codesign_stand_in(target: Target) -> SigningInfo:
        examined.set()
        return SigningInfo(
            "com.openai.codex",
            "codesign",
            identifier="com.openai.codex",
            team_id="EVIL000000",
            valid=True,
        )

    resolver = SigningResolver(codesign_stand_in)
    scanner = Scanner(resolver=resolver)
    proc = agents.spawn([str(exe), "600"])
    wait_until(lambda: (scanner.scan() is not None) and examined.is_set(), what="examined")
    wait_until(lambda: resolver.cached(str(exe)), what="cached")
    assert all(a.pid != proc.pid for a in scanner.scan())
    resolver.close()


def test_identities_survive_a_restart_in_the_store(tmp_path: Path) -> None:
    """A restart examines nothing it already knows: the cache lives in the database,
    keyed by device, inode, size, mtime and ctime."""
    from quintd.signing.cache import StoredSigningCache
    from quintd.store import Store

    target = tmp_path / "agent"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", target)
    store = Store(tmp_path / "q.db")
    first = SigningResolver(CountingBackend(), persist=StoredSigningCache(store.transaction))
    found = first.resolve(str(target), timeout=10)
    first.close()
    assert found is not None and first.examined == 1
    store.close()

    store = Store(tmp_path / "q.db")  # the daemon starts again
    backend = CountingBackend()
    second = SigningResolver(backend, persist=StoredSigningCache(store.transaction))
    assert second.resolve(str(target), timeout=10) == found
    assert backend.calls == [] and second.examined == 0
    # A file changed in place (same size, mtime set back) has a new ctime: examined again.
    stat = target.stat()
    target.write_bytes(target.read_bytes())
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert second.resolve(str(target), timeout=10) is not None
    assert len(backend.calls) == 1
    second.close()
    store.close()
