"""What the Claude Code fixtures (../shared/fixtures/claude-code, see its README) hold: one
process (pid 8262) in /home/dev/src/shop-api whose first conversation delegated to one
sub-agent before `/clear` started the second."""

from __future__ import annotations

from conftest import needs_fixtures

FIXTURES = needs_fixtures("claude-code")
HOME = FIXTURES / "home" / ".claude"
PROJECT_DIR = "-home-dev-src-shop-api"  # /home/dev/src/shop-api, as Claude Code names it
FIRST = "fbd39e94-a1f4-4528-beaf-dcbfef32fa93"
SECOND = "93a185d2-dd76-41cd-bbc8-a0259026051b"
SUBAGENT = "a5070984e10585e1d"
