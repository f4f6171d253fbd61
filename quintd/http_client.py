"""The HTTP client of delivery: POST with keep-alive, from the standard library.

quintd needs one thing of HTTP: POST a small JSON body to one endpoint and read the
status, a few headers and a short reason. The standard library does that in a few lines;
httpx cost the daemon about 15 MiB of memory (it imports click, pygments and more), most
of its memory target. Certificates are verified against the system's store (or
``SSL_CERT_FILE``); a proxy from the environment (``HTTPS_PROXY``, ``NO_PROXY``) is used
for the cloud, never for a loopback endpoint; redirects are not followed.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from quintd.endpoint import is_loopback_host

MAX_REASON_BYTES = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str  # the body (cut short), or the status line's reason
    retry_after: str | None


class TransportError(Exception):
    """No answer: named like the failure (ConnectError, ReadTimeout, ...)."""


class IngestClient:
    """Connections to one endpoint, kept alive and reused; safe for several threads (each
    request takes an idle connection or opens one)."""

    def __init__(self, endpoint: str, headers: dict[str, str]) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._headers = headers
        self._context = ssl.create_default_context() if self._https else None
        self._proxy = None if is_loopback_host(self._host) else _proxy_for(endpoint)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
        conn = self._take(timeout)
        try:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            conn.request("POST", self._base + path, body=body, headers={**self._headers, **headers})
            response = conn.getresponse()
            data = response.read(MAX_REASON_BYTES + 1)
            if len(data) > MAX_REASON_BYTES:
                response.close()
                conn.close()
            else:
                response.read()  # drain: the connection can be reused
            reply = Reply(
                status=response.status,
                reason=data[:MAX_REASON_BYTES].decode("utf-8", "replace").strip()
                or response.reason,
                retry_after=response.getheader("Retry-After"),
            )
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"{_name(exc)}: {exc}") from None
        if response.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self, timeout: float) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        if self._proxy is not None:
            proxy_host, proxy_port = self._proxy
            conn: http.client.HTTPConnection = (
                http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=timeout, context=self._context
                )
                if self._https
                else http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
            )
            conn.set_tunnel(self._host, self._port)
            return conn
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(conn)


def _proxy_for(endpoint: str) -> tuple[str, int] | None:
    """The environment's proxy for the endpoint (``HTTPS_PROXY``, ``NO_PROXY``)."""
    parts = urlsplit(endpoint)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return None
    where = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not where.hostname:
        return None
    return where.hostname, where.port or 8080


def _name(exc: BaseException) -> str:
    """The failure in the words operators know (httpx's): connect, read, TLS, protocol."""
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return "ConnectError"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "ReadTimeout"
    if isinstance(exc, ssl.SSLError):
        return "TLSError"
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
        return "RemoteProtocolError"
    return type(exc).__name__
