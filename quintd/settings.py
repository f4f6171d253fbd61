"""The daemon's settings: each part's own model (declared beside the part, see
:mod:`quintd.part_settings`), gathered into one frozen :class:`Settings`.

Start-up and SIGHUP reload take the same path: :func:`build_settings` turns a loaded
configuration into one :class:`Settings`; the daemon builds its parts from it at start, and
on reload hands each part its new piece through ``reconfigure``. Which keys wait for a
restart is what their declarations say (``reload=False``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quintd.control import ControlSettings
from quintd.logs import LogSettings
from quintd.part_settings import PartSettings, declared, file_keys, setting
from quintd.scanner import ScannerSettings
from quintd.shipper import DeliverySettings
from quintd.sources.manager import SourceSettings
from quintd.store import StoreSettings
from quintd.tracker import TrackerSettings

if TYPE_CHECKING:  # settings are built from a loaded config; no need to import it here
    from quintd.config import LoadedConfig

log = logging.getLogger("quintd.daemon")


class LoopSettings(PartSettings):
    """The main loop's: how often it scans, and what the kernel tells it (exits, starts)."""

    scan_interval: float = setting(
        1.0, file="scan.interval", gt=0, le=3600, doc="Seconds between process-table scans."
    )
    kernel_exits: bool = setting(
        True,
        file="scan.kernel_exits",
        doc="Learn of an agent's exit from the kernel at once (a pidfd on Linux 5.3+, kqueue "
        "on macOS) instead of at the next scan. Where the kernel refuses, quintd falls back "
        "to the scan by itself and `status` says so; `false` only to rule it out.",
    )
    process_events: bool = setting(
        True,
        file="scan.process_events",
        doc="Learn of new processes from the kernel's process events (Linux, as root: the "
        "netlink process connector) instead of listing /proc every `scan.interval`: an "
        "agent is seen as it starts, one living 50 ms too. Where the kernel refuses, quintd "
        "scans as before and `status` says so (`scan.process_events`); `false` only to rule "
        "it out.",
    )
    full_listing_interval: float = setting(
        30.0,
        file="scan.full_listing_interval",
        ge=1,
        le=3600,
        doc="With process events: seconds between two listings of /proc (the safety net; "
        "lost events bring one sooner).",
    )
    touch_interval: float = setting(
        30.0,
        gt=0,
        doc="How often live sessions' last-seen time is written down (it stamps the `ended` "
        "event of a session whose process dies while quintd is down).",
    )


class PathSettings(PartSettings):
    """Where the daemon keeps its state and its socket (resolved: see
    :mod:`quintd.config.locate` for the keys and their defaults)."""

    state_dir: Path = setting(
        ..., file=None, key="paths.state_dir", reload=False, doc="Database, lock, machine id."
    )
    runtime_dir: Path = setting(
        ..., file=None, key="paths.runtime_dir", reload=False, doc="Control socket."
    )

    @property
    def database_path(self) -> Path:
        return self.state_dir / "quintd.db"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "quintd.lock"

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "quintd.sock"


class Settings(PartSettings):
    paths: PathSettings
    scanner: ScannerSettings
    sources: SourceSettings
    tracker: TrackerSettings
    store: StoreSettings
    delivery: DeliverySettings
    control: ControlSettings
    loop: LoopSettings
    log: LogSettings


# The parts whose settings hold configuration keys (the file's schema is made of them).
PARTS: tuple[type[PartSettings], ...] = (
    DeliverySettings,
    LoopSettings,
    SourceSettings,
    TrackerSettings,
    StoreSettings,
    LogSettings,
)


def build_settings(loaded: LoadedConfig, *, only_uid: int | None = None) -> Settings:
    """The one place a configuration becomes settings, at start and on reload: each
    part's keys are taken from the file's tables by their declarations."""

    def part(model: type[PartSettings], **derived: Any) -> Any:
        values = {key.field: loaded.value(key.table, key.name) for key in file_keys([model])}
        return model(**values, **derived)

    paths = PathSettings(state_dir=loaded.state_dir, runtime_dir=loaded.runtime_dir)
    return Settings(
        paths=paths,
        scanner=part(ScannerSettings, platforms=loaded.platforms, only_uid=only_uid),
        sources=part(SourceSettings),
        tracker=part(TrackerSettings),
        store=part(StoreSettings),
        delivery=part(DeliverySettings, token=loaded.token),
        control=ControlSettings(socket_path=paths.socket_path, state_dir=paths.state_dir),
        loop=part(LoopSettings),
        log=part(LogSettings),
    )


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The settings a running daemon cannot change (declared ``reload=False``: the files
    and the socket it holds open) whose value differs between two settings, named by
    their configuration key."""
    changed = []
    for name in Settings.model_fields:
        before, after = getattr(old, name), getattr(new, name)
        for field, info in type(before).model_fields.items():
            if declared(info).get("reload", True):
                continue
            if getattr(before, field) != getattr(after, field):
                changed.append(str(declared(info).get("key") or f"{name}.{field}"))
    return changed


def settings_for_reload(running: Settings, new: Settings) -> Settings:
    """What a reload applies: the new settings, except what needs a restart (the files
    and the socket held open), which stays as it runs; each such change is logged."""
    for key in restart_only_changes(running, new):
        log.warning("%s changed: it waits for a restart to take effect", key)
    return new.model_copy(update={"paths": running.paths, "control": running.control})
