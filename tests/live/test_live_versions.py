"""The README's readers table says which version of each agent the live tier checked: the
versions pinned in installs.py, kept true here (a drift run, QUINTD_LIVE_LATEST=1, checks
newer ones and says which)."""

from __future__ import annotations

import re
from pathlib import Path

from installs import PINNED

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_names_the_versions_the_live_tier_checks() -> None:
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3].startswith("live tier"):
            rows[cells[0]] = (cells[2], cells[3])
    assert set(rows) == set(PINNED), "one row per agent the live tier runs"
    for platform_id, package in PINNED.items():
        version, how = rows[platform_id]
        assert version == package.version, platform_id
        assert re.search(rf"`{re.escape(package.name)}`", how), platform_id
