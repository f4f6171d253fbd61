"""Delivery's HTTP client against real servers on 127.0.0.1: TLS verified against the
trusted store (a certificate nobody vouches for is refused), keep-alive, failures named."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from quintd.http_client import IngestClient, TransportError


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, from the machine)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[int]] = set()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        _Handler.connections.add(id(self.connection))
        status = 429 if self.path.endswith("/limited") else 200
        body = b'{"ok":true}' if status == 200 else b'{"error":"slow down"}'
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def https_server(certificate: tuple[Path, Path]) -> Iterator[str]:
    cert, key = certificate
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.connections.clear()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_tls_is_verified_against_the_trusted_store(
    https_server: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    untrusted = IngestClient(https_server, {})
    with pytest.raises(TransportError, match="TLSError"):
        untrusted.post("/v1/sessions/ingest", b"{}", {}, timeout=5)
    untrusted.close()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # now the server is vouched for
    trusted = IngestClient(https_server, {"Authorization": "Bearer x"})
    replies = [trusted.post("/v1/sessions/ingest", b"{}", {}, timeout=5) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert len(_Handler.connections) == 1  # one connection, kept alive
    limited = trusted.post("/v1/sessions/limited", b"{}", {}, timeout=5)
    assert (limited.status, limited.retry_after, limited.reason) == (
        429, "7", '{"error":"slow down"}'
    )  # fmt: skip
    trusted.close()


def test_failures_are_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = IngestClient(f"http://127.0.0.1:{port}", {})
    with pytest.raises(TransportError, match=r"^ConnectError"):
        client.post("/x", b"", {}, timeout=2)
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        slow = IngestClient(f"http://127.0.0.1:{silent.getsockname()[1]}", {})
        with pytest.raises(TransportError, match=r"^ReadTimeout"):
            slow.post("/x", b"", {}, timeout=0.3)


def test_a_proxy_from_the_environment_is_never_used_for_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert IngestClient("https://127.0.0.1:1", {}).proxy is None
    assert IngestClient("https://api.quintai.dev", {}).proxy == "http://proxy.invalid:3128"
    monkeypatch.setenv("NO_PROXY", "quintai.dev")
    assert IngestClient("https://api.quintai.dev", {}).proxy is None
    assert os.environ["HTTPS_PROXY"]


class _Redirecting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    followed: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/moved":
            _Redirecting.followed.append(self.path)
        self.send_response(307 if self.path == "/moved" else 200)
        self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_is_an_answer_never_followed_with_the_token() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = IngestClient(
            f"http://127.0.0.1:{server.server_address[1]}", {"Authorization": "Bearer x"}
        )
        reply = client.post("/moved", b"{}", {}, timeout=5)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert reply.status == 307
    assert _Redirecting.followed == []
