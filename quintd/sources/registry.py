"""The readers quintd has: one spec per agent module. Adding an agent's reader is one new
module under ``quintd/sources/`` exporting ``SPEC``, listed here, plus its fixture test."""

from __future__ import annotations

from quintd.sources import claude_code, codex, gemini_cli
from quintd.sources.spec import ReaderSpec

READERS: tuple[ReaderSpec, ...] = (
    claude_code.SPEC,
    codex.SPEC,
    gemini_cli.SPEC,
)


def readers_by_platform(readers: tuple[ReaderSpec, ...] = READERS) -> dict[str, ReaderSpec]:
    return {spec.platform: spec for spec in readers}
