"""Identity on Linux: the package that installed the code, checked against what the machine
recorded of it, from files opened as the untrusted input they are. Real npm (offline, from
tarballs it packs itself), the test environment's own pip-installed console script, dpkg's
real database, and real FIFOs, devices, links and sparse files.

The live tier (tests/live) checks the same for the real agents' npm installs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEBIAN_LIKE, Agents, required_tool, wait_until
from test_security import other_user as other_user_fixture

from quintd.scanner import Scanner, ScannerSettings
from quintd.signing import SigningResolver, Target
from quintd.signing.examine import binary
from quintd.signing.linux import LinuxIdentity

IDENTIFY = LinuxIdentity()
other_user = other_user_fixture  # an unprivileged user (the fixture, from test_security)


def npm(*args: str, cwd: Path, cache: Path) -> None:
    required_tool("npm")
    subprocess.run(
        ["npm", *args, "--cache", str(cache), "--offline", "--no-audit", "--no-fund"],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def npm_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``@acme/agent`` (a node CLI) and its platform package ``@acme/agent-linux-x64`` (its
    native binary), packed by npm and installed by npm into a project, with npm's cache.
    The agent's install script links the platform binary into its own bin/, as Claude
    Code's and OpenCode's do. Shared by the module's tests: none changes it."""
    tmp_path = tmp_path_factory.mktemp("npm")
    src = tmp_path / "src"
    agent, platform = src / "agent", src / "platform"
    (agent / "bin").mkdir(parents=True)
    platform.mkdir(parents=True)
    (platform / "package.json").write_text(
        json.dumps({"name": "@acme/agent-linux-x64", "version": "1.2.3", "os": ["linux"]})
    )
    (platform / "acme").write_bytes(b"\x7fELF native acme agent\n" * 100)
    (platform / "acme").chmod(0o755)
    (agent / "package.json").write_text(
        json.dumps(
            {
                "name": "@acme/agent",
                "version": "1.2.3",
                "bin": {"acme": "bin/acme.js"},
                "optionalDependencies": {"@acme/agent-linux-x64": "1.2.3"},
                "scripts": {"postinstall": "node link.js"},
            }
        )
    )
    (agent / "bin" / "acme.js").write_text("#!/usr/bin/env node\nsetInterval(() => {}, 1e9);\n")
    (agent / "bin" / "acme.exe").write_text("stub: replaced at install\n")
    (agent / "link.js").write_text(
        "const fs = require('fs');\n"
        "fs.rmSync('bin/acme.exe');\n"
        "fs.linkSync('../agent-linux-x64/acme', 'bin/acme.exe');\n"
    )
    cache = tmp_path / "cache"
    for package in (platform, agent):
        npm("pack", "--pack-destination", str(tmp_path), cwd=package, cache=cache)
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text('{"name": "p", "private": true}')
    npm(
        "install",
        str(tmp_path / "acme-agent-linux-x64-1.2.3.tgz"),
        str(tmp_path / "acme-agent-1.2.3.tgz"),
        cwd=project,
        cache=cache,
    )
    return project / "node_modules", cache


def test_a_script_of_an_npm_package_is_that_package_checked_against_its_tarball(
    npm_project: tuple[Path, Path],
) -> None:
    modules, cache = npm_project
    script = modules / "@acme" / "agent" / "bin" / "acme.js"
    info = IDENTIFY(Target(str(script), npm_caches=(str(cache),)))
    assert (info.signing_id, info.source, info.version, info.valid) == (
        "npm:@acme/agent",
        "npm",
        "1.2.3",
        True,
    )


def test_a_platform_packages_binary_is_the_package_the_user_installed(
    npm_project: tuple[Path, Path],
) -> None:
    """Codex's TUI runs @openai/codex-linux-x64's binary; its identity is @openai/codex."""
    modules, cache = npm_project
    native = modules / "@acme" / "agent-linux-x64" / "acme"
    info = IDENTIFY(Target(str(native), npm_caches=(str(cache),)))
    assert (info.signing_id, info.version, info.valid) == ("npm:@acme/agent", "1.2.3", True)
    # The binary the install script linked into the agent's own bin/ (Claude Code's
    # claude.exe): not what the agent's tarball held there, but its platform package's.
    linked = modules / "@acme" / "agent" / "bin" / "acme.exe"
    assert linked.stat().st_ino == native.stat().st_ino
    assert IDENTIFY(Target(str(linked), npm_caches=(str(cache),))).signing_id == ("npm:@acme/agent")


def test_a_copy_of_the_package_with_one_file_changed_is_never_that_package(
    npm_project: tuple[Path, Path], tmp_path: Path
) -> None:
    modules, cache = npm_project
    copy = tmp_path / "copy" / "node_modules"
    shutil.copytree(modules, copy, symlinks=True)
    script = copy / "@acme" / "agent" / "bin" / "acme.js"
    assert IDENTIFY(Target(str(script), npm_caches=(str(cache),))).signing_id == (
        "npm:@acme/agent"
    )  # an unchanged copy is still what the tarball held
    script.write_text(script.read_text() + "require('child_process').exec('curl evil');\n")
    info = IDENTIFY(Target(str(script), npm_caches=(str(cache),)))
    assert info.signing_id == "invalid:npm:@acme/agent"
    assert info.valid is False
    native = copy / "@acme" / "agent-linux-x64" / "acme"
    native.write_bytes(native.read_bytes() + b"\x90")
    assert IDENTIFY(Target(str(native), npm_caches=(str(cache),))).signing_id == (
        "invalid:npm:@acme/agent"
    )


def test_without_the_tarball_an_npm_package_is_unverified(
    npm_project: tuple[Path, Path], tmp_path: Path
) -> None:
    modules, cache = npm_project
    script = modules / "@acme" / "agent" / "bin" / "acme.js"
    _cache = tmp_path / "cache"
    shutil.copytree(cache, _cache)
    elsewhere = tmp_path / "empty-cache"
    (elsewhere / "_cacache").mkdir(parents=True)
    assert IDENTIFY(Target(str(script), npm_caches=(str(elsewhere),))).signing_id == (
        "unverified:npm:@acme/agent"
    )
    # A tarball in the cache that is not what its integrity says proves nothing either.
    lock = json.loads((modules / ".package-lock.json").read_text())
    integrity = lock["packages"]["node_modules/@acme/agent"]["integrity"]
    from quintd.signing.npm import tarball_path

    found = tarball_path(str(_cache), integrity)
    assert found is not None
    Path(found[0]).write_bytes(Path(found[0]).read_bytes()[:-1] + b"x")
    assert IDENTIFY(Target(str(script), npm_caches=(str(_cache),))).signing_id == (
        "unverified:npm:@acme/agent"
    )


def test_a_pip_installed_console_script_is_its_distribution(tmp_path: Path) -> None:
    """The test environment's own ``pytest`` console script, as pip installed it; and a
    copy of it, changed, with the same RECORD beside it."""
    script = Path(sysconfig.get_path("scripts")) / "pytest"
    info = IDENTIFY(Target(str(script)))
    assert info.signing_id == "pypi:pytest" and info.valid is True
    assert info.version == __import__("pytest").__version__
    # A tampered copy, laid out as pip lays it out.
    site = Path(sysconfig.get_path("purelib"))
    dist = next(site.glob("pytest-*.dist-info"))
    prefix = tmp_path / "venv"
    copy_site = prefix / site.relative_to(Path(sys.prefix))
    shutil.copytree(dist, copy_site / dist.name)
    (prefix / "bin").mkdir()
    copied = prefix / "bin" / "pytest"
    copied.write_bytes(script.read_bytes() + b"# changed\n")
    assert IDENTIFY(Target(str(copied))).signing_id == "invalid:pypi:pytest"


@pytest.mark.skipif(not DEBIAN_LIKE, reason="not a Debian-like system (README: Set up)")
def test_a_dpkg_owned_binary_and_a_tampered_copy_in_a_root_of_its_own(tmp_path: Path) -> None:
    required_tool("dpkg-query")
    real = IDENTIFY(Target(os.path.realpath(shutil.which("sleep") or "/bin/sleep")))
    assert (real.signing_id, real.valid) == ("deb:coreutils", True)
    # A system image: dpkg's records of coreutils, and its sleep changed by one byte.
    root = tmp_path / "root"
    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    for name in ("coreutils.list", "coreutils.md5sums"):
        shutil.copy(Path("/var/lib/dpkg/info") / name, info / name)
    stanzas = Path("/var/lib/dpkg/status").read_text().split("\n\n")
    (root / "var" / "lib" / "dpkg" / "status").write_text(
        next(s for s in stanzas if s.startswith("Package: coreutils\n")) + "\n\n"
    )
    image = LinuxIdentity(root=str(root))
    (root / "usr" / "bin").mkdir(parents=True)
    intact = root / "usr" / "bin" / "sleep"
    shutil.copy("/usr/bin/sleep", intact)
    assert image(Target(str(intact))).signing_id == "deb:coreutils"
    intact.write_bytes(intact.read_bytes() + b"\0")
    tampered = image(Target(str(intact)))
    assert (tampered.signing_id, tampered.valid) == ("invalid:deb:coreutils", False)


# -- files that are refused -------------------------------------------------------------


def test_a_fifo_a_device_a_link_and_a_sparse_file_are_refused_never_read(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "cli.js"
    os.mkfifo(fifo)
    link = tmp_path / "link.js"
    link.symlink_to("/etc/hostname")
    sparse = tmp_path / "sparse.js"
    with open(sparse, "wb") as fh:
        fh.truncate(4 * 1024**3)  # 4 GiB of holes
    started = time.monotonic()
    reasons = {
        name: IDENTIFY(Target(str(path))).detail
        for name, path in [
            ("fifo", fifo),
            ("device", Path("/dev/zero")),
            ("link", link),
            ("sparse", sparse),
        ]
    }
    assert time.monotonic() - started < 5  # nothing blocked, nothing hashed 4 GiB
    assert reasons == {
        "fifo": "not a regular file",
        "device": "not a regular file",
        "link": "a link",
        "sparse": "mostly holes (sparse)",
    }
    for path in (fifo, Path("/dev/zero"), link, sparse):
        assert IDENTIFY(Target(str(path))).signing_id is None


def test_a_file_the_processs_user_cannot_read_is_refused(
    tmp_path: Path, other_user: tuple[int, int]
) -> None:
    secret = tmp_path / "secret.js"
    secret.write_text("root's own\n")
    secret.chmod(0o600)  # root's
    uid, gid = other_user
    refused = IDENTIFY(Target(str(secret), uid=uid, gids=frozenset({gid})))
    assert (refused.signing_id, refused.detail) == (None, "not readable by its user")
    assert IDENTIFY(Target(str(secret), uid=0)).signing_id is not None  # root may
    # And the cache never hands one user's identity of a file to another.
    resolver = SigningResolver(LinuxIdentity())
    assert resolver.resolve(Target(str(secret), uid=0), timeout=10) is not None
    assert resolver.resolve(Target(str(secret), uid=uid), timeout=10).signing_id is None
    resolver.close()


def test_a_binary_is_examined_through_proc_exe_not_its_path(agents: Agents) -> None:
    """The file the kernel ran, even after its path was replaced."""
    proc = agents.binary("claude")
    exe = agents.root / "bin" / "claude"
    ran = hashlib.sha256(exe.read_bytes()).hexdigest()
    wait_until(lambda: os.path.realpath(f"/proc/{proc.pid}/exe") == str(exe), what="exec")
    exe.unlink()
    exe.write_bytes(b"something else now")
    info = IDENTIFY(binary(proc.pid, str(exe)))
    assert info.signing_id == f"sha256:{ran}"


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory another user can reach (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="qd-id-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_stuck_file_delays_no_other_agents_identity(
    agents: Agents, open_tmp: Path, other_user: tuple[int, int]
) -> None:
    """A user runs "claude" on a FIFO, a link to a root-only file, a device and a 4 GiB
    sparse file; another user's agent started at the same time still gets its identity
    within 2 s, and the refusals are counted by reason."""
    tmp_path = open_tmp
    tail = shutil.which("tail") or "/usr/bin/tail"
    node = tmp_path / "bin" / "node"  # a copy of tail named node, where the user can run it
    node.parent.mkdir()
    shutil.copy(tail, node)
    os.chmod(node.parent, 0o755)
    package = tmp_path / "evil" / "node_modules" / "@anthropic-ai" / "claude-code"
    package.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    for path in (tmp_path / "evil", package.parent.parent, package.parent, package):
        os.chmod(path, 0o755)
    scripts = {
        "fifo": package / "cli.js",
        "link": package / "cli-wrapper.cjs",
        "sparse": package / "bin" / "claude.js",
    }
    os.mkfifo(scripts["fifo"])
    os.chmod(scripts["fifo"], 0o666)
    secret = tmp_path / "root-only"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    scripts["link"].symlink_to(secret)
    scripts["sparse"].parent.mkdir()
    with open(scripts["sparse"], "wb") as fh:
        fh.truncate(4 * 1024**3)
    uid, gid = other_user
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    hostile = [
        subprocess.Popen(
            [str(node), "-F", str(script)],  # tail --follow=name --retry: it stays
            user=uid,
            group=gid,
            extra_groups=[],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for script in scripts.values()
    ]
    agents.procs.extend(hostile)
    resolver = SigningResolver()
    scanner = Scanner(ScannerSettings(signing_budget=0.05), resolver)
    scanner.scan()  # the daemon is running already: its first pass is behind it
    started = time.monotonic()
    honest = agents.binary("codex")
    found = wait_until(
        lambda: next((a for a in scanner.scan() if a.pid == honest.pid and a.signing_id), None),
        timeout=10,
        what="the honest agent's identity",
    )
    assert time.monotonic() - started < 2.0
    assert found.signing_id.startswith("sha256:")
    wait_until(lambda: sum(resolver.refused.values()) >= 2, what="the refusals counted")
    assert set(resolver.refused) <= {
        "not a regular file",
        "not readable by its user",
        "a link",
        "mostly holes (sparse)",
    }
    resolver.close()
