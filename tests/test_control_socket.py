"""The control socket's path, watched each pass: replaced by a dead socket, by another
process's live one, or by a file that is not a socket (real Unix sockets, in process).
The deleted socket is tested end to end in test_security.py."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from quintd.control import ControlServer, ControlSettings, request


@pytest.fixture
def server(short_tmp: Path) -> Iterator[ControlServer]:
    settings = ControlSettings(socket_path=short_tmp / "quintd.sock", state_dir=short_tmp)
    control = ControlServer(settings, {"status": lambda _args: {"who": "this daemon"}})
    control.start()
    try:
        yield control
    finally:
        control.stop()


def _replace_with_socket(path: Path, *, listening: bool) -> socket.socket:
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    if listening:
        other.listen(8)
    return other


def test_a_socket_replaced_by_a_dead_one_is_bound_again(server: ControlServer) -> None:
    dead = _replace_with_socket(server.path, listening=False)
    try:
        server.check()
        assert server.rebinds == 1
        assert request(server.path, "status") == {"who": "this daemon"}
        server.check()
        assert server.rebinds == 1  # ours again: nothing more to do
    finally:
        dead.close()


def test_a_socket_another_process_answers_on_is_left_to_it_and_said_once(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="quintd.control")
    logging.getLogger("quintd.control").addHandler(caplog.handler)
    other = _replace_with_socket(server.path, listening=True)
    try:
        server.check()
        server.check()
        assert server.rebinds == 0
        said = {id(r) for r in caplog.records if "replaced by another process" in r.message}
        assert len(said) == 1  # (a record seen by two handlers is still one)
        # The other process's socket is still the one at the path.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(server.path))
        accepted, _ = other.accept()
        accepted.close()
        probe.close()
    finally:
        logging.getLogger("quintd.control").removeHandler(caplog.handler)
        other.close()


def test_a_file_put_in_its_place_is_not_deleted(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a socket is removed to bind again; anything else stays, and the failure to
    bind is said (the daemon goes on)."""
    caplog.set_level(logging.ERROR, logger="quintd.control")
    logging.getLogger("quintd.control").addHandler(caplog.handler)
    try:
        os.unlink(server.path)
        server.path.write_text("someone's file\n")
        server.check()
        assert server.path.read_text() == "someone's file\n"
        assert server.rebinds == 0
        assert any("cannot bind the control socket" in r.message for r in caplog.records)
    finally:
        logging.getLogger("quintd.control").removeHandler(caplog.handler)


def test_a_busy_socket_of_another_process_is_not_taken_over(server: ControlServer) -> None:
    """Its queue full, a connect waits and times out: that is a live socket, not a dead
    one, and deleting it would cut its owner off."""
    other = _replace_with_socket(server.path, listening=True)
    other.listen(0)
    waiting = []
    try:
        while True:  # fill its queue
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                client.connect(str(server.path))
            except BlockingIOError:
                client.close()
                break
            waiting.append(client)
        server.check()
        assert server.rebinds == 0
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        with pytest.raises(BlockingIOError):  # still the other's (full) socket
            probe.connect(str(server.path))
        probe.close()
    finally:
        for client in waiting:
            client.close()
        other.close()
