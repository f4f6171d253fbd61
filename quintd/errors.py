"""Every exception quintd raises on purpose, and the exit codes they map to.

Exit codes (also in README.md): 0 ok, 1 failure, 2 usage, 3 daemon not running,
78 configuration error (EX_CONFIG from sysexits.h, which systemd's
RestartPreventExitStatus can name).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_CONFIG = 78


class QuintdError(Exception):
    """Base of all deliberate quintd errors; carries the process exit code."""

    exit_code = EXIT_FAILURE


class ConfigError(QuintdError):
    """The configuration file or environment is unusable."""

    exit_code = EXIT_CONFIG


class AlreadyRunningError(QuintdError):
    """Another `quintd run` holds the lock on the same state directory."""


class NotRunningError(QuintdError):
    """No daemon answers on the control socket."""

    exit_code = EXIT_NOT_RUNNING
