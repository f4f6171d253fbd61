"""The daemon's own directories and files (quintd/private_files.py): created owner-only,
never through a link, never someone else's, never writable by anyone else; and never
changed (a chmod of an existing directory could open or close someone else's)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from quintd.errors import ConfigError
from quintd.private_files import ensure_private_dir, open_private_file


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_directory_is_made_owner_only_with_its_parents(
    tmp_path: Path, umask_022: None
) -> None:
    state = tmp_path / "a" / "b" / "state"
    ensure_private_dir(state, "state_dir")
    assert state.is_dir() and _mode(state) == 0o700
    assert os.lstat(state).st_uid == os.geteuid()
    ensure_private_dir(state, "state_dir")  # again: there already, fine
    assert _mode(state) == 0o700


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755, 0o705, 0o711, 0o1700, 0o2750, 0o500])
def test_a_directory_only_its_owner_can_write_is_accepted_as_it_is(
    tmp_path: Path, mode: int
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)
    ensure_private_dir(state, "state_dir")
    assert _mode(state) == mode  # never changed


@pytest.mark.parametrize(
    "mode",
    [0o720, 0o770, 0o775, 0o2770, 0o702, 0o707, 0o777, 0o1777, 0o722, 0o1770],
    ids=lambda m: f"{m:04o}",
)
def test_a_directory_group_or_others_can_write_is_refused_and_never_chmodded(
    tmp_path: Path, mode: int
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)
    with pytest.raises(ConfigError) as caught:
        ensure_private_dir(state, "runtime_dir")
    assert str(caught.value) == (
        f"paths.runtime_dir: {state} is writable by group or others (mode {mode:04o}); "
        "use a directory only this user can write (quintd does not change it)"
    )
    assert _mode(state) == mode


def test_a_link_or_a_file_is_no_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match=r"paths.state_dir: .*link is a symbolic link"):
        ensure_private_dir(link, "state_dir")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(ConfigError, match=r"paths.state_dir: .*plain is not a directory"):
        ensure_private_dir(plain, "state_dir")


def test_a_directory_that_cannot_be_made_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"paths.state_dir: cannot create .*Not a directory"):
        ensure_private_dir(tmp_path / "file" / "state", "state_dir")


def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give a directory to another user")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    with pytest.raises(ConfigError) as caught:
        ensure_private_dir(state, "state_dir")
    assert f"{state} belongs to uid 65534, not to this daemon's user (uid 0)" in str(caught.value)


# -- files ---------------------------------------------------------------------------------


def test_a_file_is_created_owner_only_and_opened_again(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "quintd.lock"
    fd = open_private_file(path)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)
    assert _mode(path) == 0o600
    fd = open_private_file(path)  # there already: opened, not replaced
    try:
        assert os.read(fd, 10) == b"1"
    finally:
        os.close(fd)


def test_a_link_is_never_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep")
    path = tmp_path / "quintd.lock"
    path.symlink_to(precious)
    with pytest.raises(ConfigError, match="is a symbolic link; refusing to open it"):
        open_private_file(path)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        open_private_file(dangling)
    assert not (tmp_path / "nowhere").exists() and precious.read_text() == "keep"


def test_a_file_with_a_second_name_or_not_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "quintd.db"
    path.write_text("")
    os.link(path, tmp_path / "planted")
    with pytest.raises(ConfigError, match="not a regular file of this user with a single name"):
        open_private_file(path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        open_private_file(fifo)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(ConfigError):
            open_private_file(path)
    assert len(os.listdir("/proc/self/fd")) == before  # each refusal closed its descriptor


def test_another_users_file_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give a file to another user")
    path = tmp_path / "quintd.db"
    path.write_text("")
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="not a regular file of this user"):
        open_private_file(path)
