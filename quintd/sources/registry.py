"""The readers quintd has: one spec per agent module. Adding an agent's reader is one new
module under ``quintd/sources/`` exporting ``SPEC``, listed here, plus its fixture test."""

from __future__ import annotations

from quintd.sources import (
    claude_code,
    cline,
    codex,
    copilot_cli,
    crush,
    cursor_agent,
    gemini_cli,
    goose,
    kiro,
    opencode,
    qwen_code,
    zed,
)
from quintd.sources.spec import ReaderSpec

READERS: tuple[ReaderSpec, ...] = (
    claude_code.SPEC,
    codex.SPEC,
    gemini_cli.SPEC,
    copilot_cli.SPEC,
    opencode.SPEC,
    qwen_code.SPEC,
    cline.SPEC,
    crush.SPEC,
    goose.SPEC,
    kiro.SPEC,
    cursor_agent.SPEC,
    zed.SPEC,
)


def readers_by_platform(readers: tuple[ReaderSpec, ...] = READERS) -> dict[str, ReaderSpec]:
    return {spec.platform: spec for spec in readers}
