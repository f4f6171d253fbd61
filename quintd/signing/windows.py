"""Windows: the Authenticode signature as ``Get-AuthenticodeSignature`` reports it."""

from __future__ import annotations

import os
import re
import subprocess

from quintd.signing.digest import sha256_file
from quintd.signing.info import SigningInfo

# The path travels in the environment, never inside the command text: no quoting bugs.
_SCRIPT = "Get-AuthenticodeSignature -LiteralPath $env:QUINTD_SIGNING_PATH | Format-List *"


def authenticode_info(path: str) -> SigningInfo:  # pragma: no cover - runs on Windows only
    try:
        result = subprocess.run(
            ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", _SCRIPT],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(os.environ, QUINTD_SIGNING_PATH=path),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return SigningInfo(signing_id=None, source="error", detail=str(exc))
    info = parse_authenticode(result.stdout)
    if info.source == "unsigned":
        return SigningInfo(signing_id=f"sha256:{sha256_file(path)}", source="sha256")
    return info


def parse_format_list(text: str) -> dict[str, str]:
    """``Name : value`` records of ``Format-List``; indented lines continue a value."""
    fields: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        match = re.match(r"^(\w+)\s*:\s?(.*)$", line)
        if match and not line.startswith(" "):
            current = match.group(1)
            fields[current] = match.group(2).rstrip()
        elif current is not None:
            fields[current] += "\n" + line.rstrip()
    return fields


def _section(block: str, name: str) -> str | None:
    """The text under ``[name]`` in a certificate block, continuation lines joined."""
    match = re.search(rf"\[{re.escape(name)}\]\s*\n(.*?)(?:\n\s*\n|\Z)", block, re.S)
    if not match:
        return None
    return " ".join(part.strip() for part in match.group(1).splitlines() if part.strip())


def _rdn(subject: str, key: str) -> str | None:
    match = re.search(rf"(?:^|,\s*){key}=((?:\"[^\"]*\")|[^,]*)", subject)
    return match.group(1).strip().strip('"') if match else None


def parse_authenticode(text: str) -> SigningInfo:
    """signing_id: the signer's CN when the status is Valid; ``<status>:<CN>`` otherwise;
    an unsigned file gets source "unsigned" (the caller hashes it)."""
    fields = parse_format_list(text)
    status = fields.get("Status", "").strip()
    if not status:
        return SigningInfo(signing_id=None, source="error", detail="no Status in output")
    if status == "NotSigned":
        return SigningInfo(signing_id=None, source="unsigned", valid=False)
    subject = _section(fields.get("SignerCertificate", ""), "Subject") or ""
    thumbprint = _section(fields.get("SignerCertificate", ""), "Thumbprint")
    common_name = _rdn(subject, "CN") or subject or "unknown signer"
    valid = status == "Valid"
    signing_id = common_name if valid else f"{status.lower()}:{common_name}"
    return SigningInfo(
        signing_id=signing_id,
        source="authenticode",
        identifier=common_name,
        team_id=thumbprint,
        authorities=(subject,) if subject else (),
        valid=valid,
        detail=" ".join(fields.get("StatusMessage", "").split()) or None,
    )
