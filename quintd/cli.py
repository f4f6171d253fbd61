"""The ``quintd`` command line: run | status | scan | config check|show."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from quintd import __version__, service
from quintd.config import LoadedConfig, load_config, render_config, running_as_root
from quintd.control import request
from quintd.daemon import Daemon, dead_letter_json
from quintd.errors import EXIT_OK, NotRunningError, QuintdError
from quintd.logs import register_secret, setup_logging
from quintd.scanner import AgentProcess, Scanner
from quintd.sessions import format_timestamp
from quintd.signing import SigningResolver
from quintd.store import Store


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $QUINTD_CONFIG, /etc/quintd/config.toml as root, "
        "else the user config dir)",
    )
    parser = argparse.ArgumentParser(
        prog="quintd",
        description="Monitor AI coding agents on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"quintd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text (default) or JSON objects"
    )
    status = commands.add_parser("status", parents=[common], help="ask the running daemon")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    scan = commands.add_parser("scan", parents=[common], help="list agent processes now")
    scan.add_argument("--json", action="store_true", help="machine-readable output")
    queue = commands.add_parser("queue", help="list dead letters, or re-queue them")
    queue_commands = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    listing = queue_commands.add_parser("list", parents=[common], help="list dead letters")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    requeue = queue_commands.add_parser(
        "requeue", parents=[common], help="put dead letters back in the queue"
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("seqs", nargs="*", type=int, default=[], metavar="SEQ")
    queue.add_argument("--config", metavar="PATH", help=argparse.SUPPRESS)
    queue.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    service = commands.add_parser("service", help="install or remove the system service")
    service_commands = service.add_subparsers(
        dest="service_command", required=True, metavar="ACTION"
    )
    for action in ("install", "uninstall"):
        sub = service_commands.add_parser(
            action, parents=[common], help=f"{action} the systemd unit or launchd plist"
        )
        scope = sub.add_mutually_exclusive_group()
        scope.add_argument(
            "--system",
            action="store_const",
            const="system",
            dest="scope",
            help="system-wide (the default as root)",
        )
        scope.add_argument(
            "--user",
            action="store_const",
            const="user",
            dest="scope",
            help="for this user (the default otherwise)",
        )
        sub.add_argument("--dry-run", action="store_true", help="only say what would happen")
        sub.add_argument(
            "--root", metavar="DIR", default="/", help="prefix for every path (packaging, tests)"
        )
        sub.add_argument(
            "--os", choices=["linux", "macos"], dest="target_os", help=argparse.SUPPRESS
        )
    config = commands.add_parser("config", help="check or show the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser("check", parents=[common], help="validate; exit 0 or 78")
    config_commands.add_parser(
        "show", parents=[common], help="print the effective config, token redacted"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = load_config(args.config)
        log_format = getattr(args, "log_format", None) or loaded.config.log.format
        setup_logging(loaded.config.log.level, log_format)
        register_secret(loaded.token)
        return _dispatch(args, loaded)
    except QuintdError as exc:
        print(f"quintd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    if args.command == "run":
        return Daemon(loaded, reload_config=lambda: load_config(args.config)).run()
    if args.command == "status":
        return _status(loaded, as_json=args.json)
    if args.command == "scan":
        return _scan(loaded, as_json=args.json)
    if args.command == "queue":
        return _queue(loaded, args)
    if args.command == "service":
        return _service(args)
    if args.config_command == "check":
        print(f"{loaded.source or 'built-in defaults'}: ok")
        return EXIT_OK
    sys.stdout.write(render_config(loaded))
    return EXIT_OK


def _status(loaded: LoadedConfig, *, as_json: bool) -> int:
    result = request(loaded.socket_path, "status")
    if as_json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(render_status(result))
    return EXIT_OK


def render_status(s: dict[str, Any]) -> str:
    queue = s["queue"]
    delivery = s["delivery"]
    lines = [
        f"quintd {s['version']} running: pid {s['pid']}, up {_duration(s['uptime_s'])}",
        f"config:      {s['config_file'] or 'built-in defaults'}",
        f"endpoint:    {s['endpoint']}",
        "token:       " + ("set" if s["token_set"] else "not set: delivery waits for a token"),
        f"queue:       {queue['depth']} event(s), {queue['bytes']} bytes"
        + (f", oldest {_duration(queue['oldest_age_s'])}" if queue["oldest_age_s"] else "")
        + f"; dead letters: {queue['dead_letters']}",
        f"delivered:   {delivery['delivered']}; last success: {delivery['last_success'] or '-'}",
        f"last error:  {delivery['last_error'] or '-'}",
    ]
    if queue.get("coalesced") or queue.get("refused"):
        lines.append(
            f"at bound:    {queue['coalesced']} coalesced, {queue['refused']} refused "
            f"(max_bytes {queue['max_bytes']})"
        )
    if queue.get("lost_databases"):
        lines.append(f"lost:        {queue['lost_databases']} database(s): {queue['last_loss']}")
    if not delivery.get("alive", True):
        lines.append("delivery:    the delivery thread has stopped; restart quintd")
    if delivery["paused"]:
        lines.append(f"paused:      {delivery['paused']}")
    if delivery["next_attempt_at"]:
        lines.append(f"next try:    {delivery['next_attempt_at']}")
    sessions = s["sessions"]
    lines.append(f"sessions:    {len(sessions)}")
    if sessions:
        rows = [["SESSION", "PLATFORM", "PID", "STATE", "NAME", "PARENT"]]
        for sess in sessions:
            rows.append(
                [
                    sess["session_id"],
                    sess["platform"],
                    str(sess["pid"]),
                    sess["state"],
                    sess["session_name"] or "-",
                    sess["parent_id"] or "-",
                ]
            )
        lines.extend("  " + line for line in _table(rows))
    return "\n".join(lines)


def _service(args: argparse.Namespace) -> int:
    root = Path(args.root)
    scope: Literal["system", "user"] = args.scope or ("system" if running_as_root() else "user")
    file = service.service_file(
        target_os=args.target_os or service.current_os(),
        scope=scope,
        root=root,
        home=Path.home(),
        command=service.quintd_command(),
    )
    act = root == Path("/")  # run the service manager only on the live system
    if args.service_command == "install":
        lines = service.install(file, dry_run=args.dry_run, act=act)
    else:
        lines = service.uninstall(file, dry_run=args.dry_run, act=act)
    print("\n".join(lines))
    return EXIT_OK


def _queue(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Through the running daemon when there is one, else on the database directly."""
    if args.queue_command == "requeue":
        seqs = None if args.all else list(args.seqs)
        try:
            moved = request(loaded.socket_path, "requeue", seqs=seqs)["requeued"]
        except NotRunningError:
            with _offline_store(loaded) as store:
                moved = store.requeue(seqs)
        print(f"requeued {moved} dead letter(s)")
        return EXIT_OK
    try:
        letters = request(loaded.socket_path, "dead_letters")
    except NotRunningError:
        with _offline_store(loaded) as store:
            letters = [dead_letter_json(d) for d in store.dead_letters()]
    if args.json:
        print(json.dumps(letters, indent=2))
        return EXIT_OK
    if not letters:
        print("no dead letters")
        return EXIT_OK
    rows = [["SEQ", "FAILED", "STATUS", "STATE", "SESSION", "REASON"]]
    for d in letters:
        rows.append(
            [
                str(d["seq"]),
                d["failed_at"],
                str(d["status"] or "-"),
                d["state"],
                d["session_id"],
                d["reason"][:80],
            ]
        )
    print("\n".join(_table(rows)))
    return EXIT_OK


@contextlib.contextmanager
def _offline_store(loaded: LoadedConfig) -> Iterator[Store]:
    if not loaded.database_path.exists():
        raise QuintdError(f"no queue database at {loaded.database_path}")
    store = Store(loaded.database_path)
    try:
        yield store
    finally:
        store.close()


def _scan(loaded: LoadedConfig, *, as_json: bool) -> int:
    resolver = SigningResolver()
    # One-shot: wait for every signing identity (hashing a large binary takes a moment).
    agents = Scanner(loaded.platforms, resolver, signing_budget=120.0).scan()
    resolver.close()
    if as_json:
        print(json.dumps([agent_json(a) for a in agents], indent=2))
        return EXIT_OK
    if not agents:
        print("no agent processes found")
        return EXIT_OK
    rows = [["PLATFORM", "PID", "PPID", "STARTED", "USER", "MATCHED", "SIGNING", "PARENT", "CWD"]]
    for a in agents:
        rows.append(
            [
                a.platform,
                str(a.pid),
                str(a.ppid),
                format_timestamp(datetime.fromtimestamp(a.start_time, UTC)),
                a.user or "?",
                a.matched_by,
                a.signing_id or "-",
                str(a.parent_pid) if a.parent_pid else "-",
                a.cwd or "?",
            ]
        )
    print("\n".join(_table(rows)))
    return EXIT_OK


def agent_json(a: AgentProcess) -> dict[str, Any]:
    return {
        "platform": a.platform,
        "pid": a.pid,
        "ppid": a.ppid,
        "started_at": format_timestamp(datetime.fromtimestamp(a.start_time, UTC)),
        "user": a.user,
        "exe": a.exe,
        "cwd": a.cwd,
        "signing_id": a.signing_id,
        "matched_by": a.matched_by,
        "name": a.name,
        "parent_pid": a.parent_pid,
    }


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
