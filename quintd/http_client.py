"""The HTTP client of delivery, on httpx: POST a JSON body to the ingest endpoint.

One :class:`httpx.Client` per endpoint and token: keep-alive connections, at most as many
as requests may be in flight (``queue.in_flight``); certificates verified against the
system's store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured, as OpenSSL does); no
redirects followed (a 3xx is an answer, not a hop a token may follow); the environment's
proxy (``HTTPS_PROXY``, ``NO_PROXY``) for the cloud, never for a loopback endpoint. The
environment is read here once (``trust_env`` off), so nothing else in it (a ``.netrc``)
changes what is sent.

What delivery sees is the same seam as before: a :class:`Reply` (status, a short reason,
``Retry-After``) or a :class:`TransportError` named like the failure (``ConnectError``,
``ReadTimeout``, ``TLSError``...): ``delivery_policy`` stays pure.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from quintd.endpoint import is_loopback_host

# httpx imports zstandard, where it is installed (quintd's Zed reader needs it), to decode
# zstd answers: 0.5 MiB of RSS in every daemon, for answers quintd never asks for. Hidden
# while httpx is imported (httpx then neither offers nor decodes zstd); the Zed reader
# imports it when it first reads a thread.
_HIDE_ZSTD = "zstandard" not in sys.modules
if _HIDE_ZSTD:
    sys.modules["zstandard"] = None  # type: ignore[assignment]  # import raises ImportError
try:
    import httpx
finally:
    if _HIDE_ZSTD:
        del sys.modules["zstandard"]

MAX_REASON_BYTES = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str  # the body (cut short), or the status line's reason
    retry_after: str | None


class TransportError(Exception):
    """No answer: named like the failure (ConnectError, ReadTimeout, TLSError...)."""


class IngestClient:
    """Connections to one endpoint, kept alive and reused; safe for several threads (at
    most ``connections`` requests at once; more wait for a free connection)."""

    def __init__(self, endpoint: str, headers: dict[str, str], connections: int = 4) -> None:
        parts = urlsplit(endpoint)
        self.proxy = None if is_loopback_host(parts.hostname or "") else proxy_for(endpoint)
        self._base = endpoint.rstrip("/")
        self._client = httpx.Client(
            headers=headers,
            verify=ssl.create_default_context() if parts.scheme == "https" else False,
            proxy=self.proxy,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
        try:
            with self._client.stream(
                "POST",
                self._base + path,
                content=body,
                headers=headers,
                # The pool wait too: a request waiting for a connection is one in flight.
                timeout=httpx.Timeout(timeout),
            ) as response:
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_REASON_BYTES:
                        break  # a huge answer: its start is the reason; the rest is not read
                reason = data[:MAX_REASON_BYTES].decode("utf-8", "replace").strip()
                return Reply(
                    status=response.status_code,
                    reason=reason or response.reason_phrase,
                    retry_after=response.headers.get("Retry-After"),
                )
        except httpx.HTTPError as exc:
            raise TransportError(f"{_name(exc)}: {exc}") from None

    def close(self) -> None:
        self._client.close()


def proxy_for(endpoint: str) -> str | None:
    """The environment's proxy for the endpoint (``HTTPS_PROXY``; ``NO_PROXY`` honoured),
    as a URL."""
    parts = urlsplit(endpoint)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return None
    where = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not where.hostname:
        return None
    return f"{where.scheme}://{where.hostname}:{where.port or 8080}"


def _name(exc: BaseException) -> str:
    """The failure as httpx names it, but a certificate or handshake refused is a
    ``TLSError`` (httpx reports it as a ConnectError)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "TLSError"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__
