"""The signing backend for this OS, chosen in one place."""

from __future__ import annotations

import sys
from collections.abc import Callable

from quintd.signing.info import SigningInfo

Backend = Callable[[str], SigningInfo]


def default_backend() -> Backend:
    if sys.platform == "darwin":
        from quintd.signing.darwin import codesign_info

        return codesign_info
    if sys.platform == "win32":
        from quintd.signing.windows import authenticode_info

        return authenticode_info
    from quintd.signing.linux import linux_info

    return linux_info
