"""What is known about one file's origin: the value every signing backend returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SigningInfo:
    """What is known about one file's origin. ``signing_id`` is what gets reported."""

    signing_id: str | None
    # "codesign", "authenticode", "deb", "rpm", "npm", "pypi", "brew", "snap",
    # "claude-code-installer", "sha256", "refused" (detail: why) or "error"
    source: str
    identifier: str | None = None
    team_id: str | None = None
    authorities: tuple[str, ...] = ()
    valid: bool | None = None
    detail: str | None = None
    version: str | None = None  # the package's version: shown locally, never sent

    @property
    def verified_identity(self) -> tuple[str, str] | None:
        """(identifier, team id) when a valid signature vouches for both."""
        if self.valid and self.identifier and self.team_id:
            return (self.identifier, self.team_id)
        return None
