"""The signing backend for this OS, chosen in one place."""

from __future__ import annotations

import sys
from collections.abc import Callable

from quintd.signing.examine import Target
from quintd.signing.info import SigningInfo

Backend = Callable[[Target], SigningInfo]


def default_backend() -> Backend:
    if sys.platform == "darwin":
        from quintd.signing.darwin import codesign_info

        return lambda target: codesign_info(target.path)
    if sys.platform == "win32":
        from quintd.signing.windows import authenticode_info

        return lambda target: authenticode_info(target.path)
    from quintd.signing.linux import LinuxIdentity

    return LinuxIdentity()
