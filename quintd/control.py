"""The control socket: a Unix stream socket, owner-only, answering one JSON request
per connection with one JSON line.

Request: ``{"command": "status"}``. Response: ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import socketserver
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quintd.errors import AlreadyRunningError, NotRunningError, QuintdError
from quintd.part_settings import PartSettings, setting

log = logging.getLogger("quintd.control")

MAX_REQUEST_BYTES = 64 * 1024

Handler = Callable[[Mapping[str, Any]], Any]


class ControlSettings(PartSettings):
    socket_path: Path = setting(..., doc="The control socket (in the runtime directory).")
    state_dir: Path = setting(
        ..., doc="The daemon answering on the socket must be this state directory's."
    )


class ControlServer:
    """The daemon's end of the socket. The path is watched (:meth:`check`, each pass): a
    socket deleted (``rm``) or replaced by a dead one is bound again, so ``status`` keeps
    finding the daemon and no second daemon can take the path over unnoticed."""

    def __init__(self, settings: ControlSettings, handlers: Mapping[str, Handler]) -> None:
        self.settings = settings
        self.path = settings.socket_path
        self._handlers = {str(name): handler for name, handler in handlers.items()}
        self._server: _Serving | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of our socket
        self._foreign_logged = False
        self._foreign: tuple[int, int] | None = None  # another process's live socket
        self.rebinds = 0

    def start(self) -> None:
        _remove_stale_socket(self.path)
        self._bind()

    def _bind(self) -> None:
        handlers = self._handlers

        class _RequestHandler(socketserver.StreamRequestHandler):
            timeout = 5.0

            def handle(self) -> None:
                reply = _dispatch(handlers, self.rfile.readline(MAX_REQUEST_BYTES))
                with contextlib.suppress(OSError):
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        # Owner-only from the moment it exists: no window with a wider mode.
        old_umask = os.umask(0o177)
        try:
            server = socketserver.ThreadingUnixStreamServer(str(self.path), _RequestHandler)
        finally:
            os.umask(old_umask)
        info = os.lstat(self.path)
        self._identity = (info.st_dev, info.st_ino)
        server.daemon_threads = True
        old, self._server = self._server, _Serving(server)
        if old is not None:  # a socket deleted under us: stop serving the orphaned one
            old.close()

    def check(self) -> None:
        """Is our socket still at its path? Bind it again if it was deleted, or replaced
        by a socket nobody answers on; say so once if another process answers there."""
        if self._server is None:
            return
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            log.warning("control socket %s was deleted: binding it again", self.path)
            self._rebind()
            return
        except OSError:
            return
        found = (info.st_dev, info.st_ino)
        if found in (self._identity, self._foreign):
            return  # ours; or another process's live socket, said already
        if stat.S_ISSOCK(info.st_mode) and _answers(self.path):
            # Remembered by identity: no probe each pass (a busy one could stall the loop).
            self._foreign = found
            if not self._foreign_logged:
                self._foreign_logged = True
                log.error(
                    "control socket %s was replaced by another process that answers on it; "
                    "`quintd status` will not reach this daemon",
                    self.path,
                )
            return
        log.warning("control socket %s was replaced: binding it again", self.path)
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(info.st_mode):
                self.path.unlink()
        self._rebind()

    def _rebind(self) -> None:
        try:
            self._bind()
        except OSError as exc:
            log.error("cannot bind the control socket %s again: %s", self.path, exc)
            return
        self.rebinds += 1
        self._foreign_logged = False
        self._foreign = None

    def reconfigure(self, settings: ControlSettings) -> None:
        """The socket's path needs a restart (``paths.runtime_dir``): it stays."""
        self.settings = settings.model_copy(update={"socket_path": self.path})

    def stop(self) -> None:
        if self._server is None:
            return  # never bound: the socket there (if any) is someone else's
        self._server.close()
        self._server = None
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:  # only our own socket
                os.unlink(self.path)


class _Serving:
    """A socket server on its own thread that sleeps until a client connects: no polling
    timer (socketserver's ``serve_forever`` wakes every poll interval to look for a
    shutdown request); a pipe ends the wait instead."""

    def __init__(self, server: socketserver.ThreadingUnixStreamServer) -> None:
        self.server = server
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=self._serve, name="quintd-control", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        server = self.server
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj == self._stop_r for key, _ in ready):
                    return
                try:
                    request, address = server.get_request()
                except OSError:
                    continue  # the client went away before we accepted
                try:
                    server.process_request(request, address)  # a thread per connection
                except Exception:
                    server.handle_error(request, address)
                    server.shutdown_request(request)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"\0")
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        self.server.server_close()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except ConnectionRefusedError:
        return False  # nobody listens: a dead socket
    except OSError:
        # Busy (its queue full: a timeout, EAGAIN) or gone meanwhile: someone's live socket
        # is not ours to take over (a deleted path is seen and bound again next check).
        return True
    finally:
        probe.close()


def _dispatch(handlers: Mapping[str, Handler], line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("request is not a JSON object")
        command = request.get("command")
        handler = handlers.get(str(command))
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}"}
        return {"ok": True, "result": handler(request)}
    except ValueError as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    except Exception as exc:  # a failing handler must not take the daemon down
        log.exception("control command failed")
        return {"ok": False, "error": f"internal error: {exc}"}


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse if a live one still answers there
    (another daemon with its own state dir but this runtime dir)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise QuintdError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: stale
        return
    finally:
        probe.close()
    raise AlreadyRunningError(
        f"another quintd answers on {path}; stop it first or use a different paths.runtime_dir"
    )


def request(path: Path, command: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one command to a running daemon; raises NotRunningError if none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunningError(
                f"not running (no daemon answers on {path}: {exc.strerror})"
            ) from None
        except PermissionError:
            raise QuintdError(
                f"permission denied on {path}: run as the daemon's user (or root)"
            ) from None
        payload = dict(args, command=command)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    except TimeoutError:
        raise QuintdError(f"quintd did not answer on {path} within {timeout:.0f}s") from None
    finally:
        sock.close()
    reply = json.loads(b"".join(chunks) or b"null")
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else "empty reply"
        raise QuintdError(f"quintd answered with an error: {error}")
    return reply["result"]
