"""macOS: the signature as ``codesign`` reports it.

``codesign -dv --verbose=4 PATH`` prints (to stderr) ``Identifier=``, ``TeamIdentifier=``
(``not set`` when ad-hoc), ``Authority=`` lines (leaf first), ``Signature=adhoc`` and more;
``codesign --verify --strict PATH`` exits 0 when the signature is intact.
"""

from __future__ import annotations

import subprocess

from quintd.signing.digest import sha256_file
from quintd.signing.info import SigningInfo

CODESIGN = "/usr/bin/codesign"


def codesign_info(path: str) -> SigningInfo:
    display = _run([CODESIGN, "-dv", "--verbose=4", path])
    if display is None:
        return SigningInfo(signing_id=None, source="error", detail="codesign did not run")
    verify = _run([CODESIGN, "--verify", "--strict", path])
    verify_rc = verify[0] if verify is not None else None
    info = parse_codesign(display[1], verify_rc, verify[1] if verify else "")
    if info.source == "unsigned":
        return SigningInfo(
            signing_id=f"sha256:{sha256_file(path)}", source="sha256", detail=info.detail
        )
    return info


def _run(argv: list[str]) -> tuple[int, str] | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.returncode, result.stderr + result.stdout


def parse_codesign_display(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of ``codesign -dv`` output; repeated keys keep every value."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key[0].isspace():
            fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def parse_codesign(display: str, verify_rc: int | None, verify_text: str = "") -> SigningInfo:
    """Turn recorded ``codesign -dv --verbose=4`` output (and the exit status of
    ``codesign --verify --strict``) into a SigningInfo.

    signing_id: the identifier when a valid signature carries a team id;
    ``adhoc:<identifier>`` for an ad-hoc signature; ``invalid:<identifier>`` when
    verification fails. An unsigned file gets source "unsigned" (the caller hashes it)."""
    if "code object is not signed at all" in display:
        return SigningInfo(
            signing_id=None,
            source="unsigned",
            valid=False,
            detail="code object is not signed at all",
        )
    if "No such file or directory" in display:
        return SigningInfo(signing_id=None, source="error", detail="no such file")
    fields = parse_codesign_display(display)
    identifier = _first(fields, "Identifier")
    team = _first(fields, "TeamIdentifier")
    if team == "not set":
        team = None
    authorities = tuple(fields.get("Authority", ()))
    adhoc = "adhoc" in (_first(fields, "Signature") or "") or "(adhoc" in display
    valid = verify_rc == 0 if verify_rc is not None else None
    if identifier is None:
        return SigningInfo(signing_id=None, source="error", detail=display.strip()[:200])
    if valid is False:
        signing_id = f"invalid:{identifier}"
    elif adhoc or (team is None and not authorities):
        signing_id = f"adhoc:{identifier}"
    else:
        # A team id, or (Apple's own platform binaries) an Apple authority chain with
        # "TeamIdentifier=not set".
        signing_id = identifier
    detail = verify_text.strip()[:200] if valid is False else None
    return SigningInfo(
        signing_id=signing_id,
        source="codesign",
        identifier=identifier,
        team_id=team,
        authorities=authorities,
        valid=valid,
        detail=detail,
    )


def _first(fields: dict[str, list[str]], key: str) -> str | None:
    values = fields.get(key)
    return values[0] if values else None
