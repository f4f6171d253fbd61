"""The ingest endpoint's address: what the configuration accepts, and what counts as
loopback (plain HTTP allowed, no proxy from the environment)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_endpoint(value: str) -> str:
    """Accept an https URL, or plain http only to a loopback host. Returns it without a
    trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as https://api.quintai.dev")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; use cloud.token or cloud.token_file")
    if parts.query or parts.fragment:
        raise ValueError("must be a base URL without query or fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("plain http is only allowed to a loopback address; use https")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"has an invalid port ({exc})") from None
    if not value.isascii() or not value.isprintable():
        raise ValueError("must be printable ASCII (write international domains as xn--...)")
    if any(ch in value for ch in ' "<>\\^`{|}'):
        raise ValueError("is not a usable URL (it holds characters a URL may not)")
    host = parts.hostname
    if not all(label and len(label) < 64 for label in host.strip("[]").split(".")) and not (
        host.startswith("[")
    ):
        raise ValueError(f"is not a usable URL (bad host name {host!r})")
    return value.rstrip("/")
