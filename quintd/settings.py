"""Every component's settings, built from the configuration in one function.

Start-up and SIGHUP reload take the same path: :func:`build_settings` turns a loaded
configuration into one frozen :class:`Settings`; the daemon builds its parts from it at
start, and on reload hands each part its new piece through ``reconfigure``. A key is
reloadable unless it is listed in :data:`RESTART_ONLY`; a reload that changes one of those
logs that it waits for a restart.

To add a configuration key: add it to ``config.py`` (the file format), put it in the
settings of the component that uses it here, and read it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from quintd.model import INGEST_PATH
from quintd.platforms import BUILTIN_PLATFORMS, Platform

if TYPE_CHECKING:  # settings are built from a loaded config; no need to import it here
    from quintd.config import LoadedConfig

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]  # as in config.py (the file's types)


@dataclass(frozen=True)
class ScannerSettings:
    platforms: tuple[Platform, ...] = BUILTIN_PLATFORMS
    # Seconds one pass waits for new agents' signing identities; the rest arrives later.
    signing_budget: float = 0.25
    # How long a new agent's session may be held back for its signing identity, so that
    # its first event carries it; after that it is announced without, and the identity
    # follows as an update. A script's identity takes milliseconds; a 300 MB binary checked
    # against its package's tarball takes 2-4 s the first time on a 2-core machine (once
    # per version: identities are kept), the live tier's Codex, Claude Code and OpenCode.
    signing_wait: float = 10.0
    # A per-user daemon watches only its own user's processes (None: every user's).
    only_uid: int | None = None


@dataclass(frozen=True)
class SourceSettings:
    watch: bool = True  # watch state directories for changes (else poll known files)
    # inotify watches one user's state directories may hold (root's limit is shared by
    # every root service); beyond it their files are polled. 0: none.
    watches_per_user: int = 1000


@dataclass(frozen=True)
class TrackerSettings:
    idle_after: float = 120.0
    busy_cpu_ratio: float = 0.01  # CPU time over wall time that counts as work
    # New sessions one user's agents may announce in a minute; beyond it they wait
    # (held, counted, logged once), announced as the minute allows.
    new_per_user_per_minute: int = 60


@dataclass(frozen=True)
class StoreSettings:
    max_bytes: int = 256 * 1024 * 1024
    min_free_disk: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class DeliverySettings:
    """Where and how to deliver."""

    endpoint: str
    token: str | None = field(repr=False)  # a secret: never in a repr, a log or status
    timeout: float = 10.0
    batch_size: int = 100
    flush_interval: float = 1.0
    batch_body: bool = False
    in_flight: int = 4
    drain_timeout: float = 5.0  # seconds a shutdown spends on a last flush
    # Seconds over which the first delivery after start-up is spread (a fleet rebooting
    # at once must not hit the endpoint in the same second).
    start_jitter: float = 33.0

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> DeliverySettings:
        return build_settings(loaded).delivery

    @property
    def url(self) -> str:
        return self.endpoint + INGEST_PATH


@dataclass(frozen=True)
class ControlSettings:
    socket_path: Path
    state_dir: Path  # the daemon answering on the socket must be this state dir's


@dataclass(frozen=True)
class LoopSettings:
    scan_interval: float = 1.0
    # Exits from the kernel (pidfd, kqueue) rather than found by the next scan.
    kernel_exits: bool = True
    # How often live sessions' last-seen time is written down (it stamps the `ended`
    # event of a session whose process dies while quintd is down).
    touch_interval: float = 30.0


@dataclass(frozen=True)
class LogSettings:
    level: LogLevel = "info"
    format: LogFormat = "text"


@dataclass(frozen=True)
class PathSettings:
    state_dir: Path
    runtime_dir: Path

    @property
    def database_path(self) -> Path:
        return self.state_dir / "quintd.db"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "quintd.lock"

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "quintd.sock"


@dataclass(frozen=True)
class Settings:
    paths: PathSettings
    scanner: ScannerSettings
    sources: SourceSettings
    tracker: TrackerSettings
    store: StoreSettings
    delivery: DeliverySettings
    control: ControlSettings
    loop: LoopSettings
    log: LogSettings


def build_settings(loaded: LoadedConfig, *, only_uid: int | None = None) -> Settings:
    """The one place a configuration becomes settings, at start and on reload."""
    cfg = loaded.config
    paths = PathSettings(state_dir=loaded.state_dir, runtime_dir=loaded.runtime_dir)
    return Settings(
        paths=paths,
        scanner=ScannerSettings(platforms=loaded.platforms, only_uid=only_uid),
        sources=SourceSettings(watches_per_user=cfg.scan.watches_per_user),
        tracker=TrackerSettings(
            idle_after=cfg.sessions.idle_after,
            new_per_user_per_minute=cfg.sessions.new_per_user_per_minute,
        ),
        store=StoreSettings(max_bytes=cfg.queue.max_bytes, min_free_disk=cfg.queue.min_free_disk),
        delivery=DeliverySettings(
            endpoint=cfg.cloud.endpoint,
            token=loaded.token,
            timeout=cfg.cloud.timeout,
            batch_size=cfg.queue.batch_size,
            flush_interval=cfg.queue.flush_interval,
            batch_body=cfg.cloud.batch_body,
            in_flight=cfg.queue.in_flight,
            drain_timeout=cfg.queue.drain_timeout,
            start_jitter=cfg.queue.start_jitter,
        ),
        control=ControlSettings(socket_path=paths.socket_path, state_dir=paths.state_dir),
        loop=LoopSettings(scan_interval=cfg.scan.interval, kernel_exits=cfg.scan.kernel_exits),
        log=LogSettings(level=cfg.log.level, format=cfg.log.format),
    )


# Keys a running daemon cannot change: the files and the socket it holds open.
RESTART_ONLY: dict[str, Callable[[Settings], object]] = {
    "paths.state_dir": lambda s: s.paths.state_dir,
    "paths.runtime_dir": lambda s: s.paths.runtime_dir,
}


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The restart-only keys whose value differs between two settings."""
    return [key for key, get in RESTART_ONLY.items() if get(old) != get(new)]
