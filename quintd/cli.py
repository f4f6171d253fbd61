"""The ``quintd`` command line: run | status | reload | scan | queue | service | config.

Each subcommand imports what it uses when it runs, so that ``quintd --version`` and
``quintd status`` do not pay for the daemon's libraries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from quintd import __version__
from quintd.errors import EXIT_FAILURE, EXIT_OK, ConfigError, NotRunningError, QuintdError

if TYPE_CHECKING:
    from quintd.config import LoadedConfig
    from quintd.model import AgentProcess
    from quintd.signing import SigningInfo
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
    status.add_argument(
        "--format",
        choices=("text", "json", "prometheus"),
        default="text",
        help="text (default), json (as --json), or the Prometheus text exposition format",
    )
    status.add_argument(
        "--watch", action="store_true", help="refresh every second until Ctrl-C (text only)"
    )
    reload = commands.add_parser(
        "reload",
        parents=[common],
        help="make the running daemon reload its configuration, and wait for its answer",
    )
    reload.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="signal only if the daemon on the control socket is this process (systemd's $MAINPID)",
    )
    reload.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the daemon to report the reload (default: 30)",
    )
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
    requeue.add_argument(
        "--force",
        action="store_true",
        help="requeue even events whose session's `ended` was delivered already",
    )
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
    config_commands.add_parser(
        "schema", help="print a JSON Schema of config.toml (for editors that check TOML)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "config" and args.config_command == "schema":
            from quintd.config import json_schema  # needs no configuration, not even a valid one

            print(json.dumps(json_schema(), indent=2))
            return EXIT_OK
        from quintd.config import load_config
        from quintd.logs import register_secret, setup_logging

        try:
            loaded = load_config(args.config)
        except ConfigError as exc:
            if args.command == "reload":
                # The daemon is the judge of its file (its environment may differ): it is
                # asked all the same, and says why it refuses.
                return _reload_despite(exc, args)
            if args.command != "status":
                raise
            # A broken edit: the daemon still runs with what it loaded before, and its
            # status (with the reload error) is what is needed now.
            return _status_despite(exc, args)
        log_format = getattr(args, "log_format", None) or loaded.config.log.format
        setup_logging(loaded.config.log.level, log_format)
        register_secret(loaded.token)
        return _dispatch(args, loaded)
    except QuintdError as exc:
        # Every line says who speaks: a message of several problems is several lines.
        for line in str(exc).splitlines() or [""]:
            print(f"quintd: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`quintd status | head -1`): what it wanted, it has.
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit does not
    fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _dispatch(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    if args.command == "run":
        from quintd.config import load_config
        from quintd.daemon import Daemon

        return Daemon(
            loaded,
            reload_config=lambda: load_config(args.config),
            log_format=getattr(args, "log_format", None),
        ).run()
    if args.command == "status":
        if args.watch:
            from quintd.control import request
            from quintd.protocol import Command

            def fetch() -> Any:
                result = request(loaded.socket_path, Command.STATUS)
                _check_identity(loaded, result)
                return result

            return _watch(args, fetch)
        return _status(loaded, args)
    if args.command == "reload":
        return _reload(loaded.socket_path, loaded.state_dir, loaded.source, args)
    if args.command == "scan":
        return _scan(loaded, as_json=args.json)
    if args.command == "queue":
        return _queue(loaded, args)
    if args.command == "service":
        return _service(args)
    if args.config_command == "check":
        for warning in loaded.warnings:
            print(f"quintd: warning: {warning}", file=sys.stderr)
        print(f"{loaded.source or 'built-in defaults'}: ok")
        return EXIT_OK
    from quintd.config import render_config

    sys.stdout.write(render_config(loaded))
    return EXIT_OK


def _status(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from quintd.control import request
    from quintd.protocol import Command

    try:
        result = request(loaded.socket_path, Command.STATUS)
    except NotRunningError as exc:
        return _not_running(exc, args, loaded.socket_path)
    _check_identity(loaded, result)
    return _show_status(result, args)


def _status_despite(error: ConfigError, args: argparse.Namespace) -> int:
    """``status`` with a configuration file that does not load: the daemon started from
    it (at the paths the file still names, or the defaults) is shown, and the problem
    said on stderr."""
    from quintd.config import locate_daemon
    from quintd.control import request
    from quintd.protocol import Command

    for line in str(error).splitlines():
        print(f"quintd: {line}", file=sys.stderr)
    source, state_dir, runtime_dir = locate_daemon(args.config)
    socket_path = runtime_dir / "quintd.sock"
    if args.watch:

        def fetch() -> Any:
            result = request(socket_path, Command.STATUS)
            if not _started_from(result, state_dir, source):
                raise QuintdError(f"the daemon on {socket_path} is not this configuration's")
            return result

        # The problem stays on the screen (a redraw would wipe what stderr said).
        problem = [f"quintd: {line}" for line in str(error).splitlines()]
        problem.append("quintd: the running daemon keeps the configuration it loaded")
        return _watch(args, fetch, "\n".join(problem))
    try:
        result = request(socket_path, Command.STATUS)
    except NotRunningError as exc:
        _not_running(exc, args, socket_path)
        return error.exit_code
    if not _started_from(result, state_dir, source):
        print(f"quintd: the daemon on {socket_path} is not this configuration's", file=sys.stderr)
        return error.exit_code
    print(
        "quintd: the running daemon keeps the configuration it loaded; fix the file "
        "before reloading (a reload would be rejected)",
        file=sys.stderr,
    )
    return _show_status(result, args)


def _started_from(result: Any, state_dir: Path, source: Path | None) -> bool:
    """Whether the daemon that answered runs with this state dir or this config file."""
    return isinstance(result, dict) and (
        _same_path(result.get("state_dir"), state_dir)
        or (source is not None and _same_path(result.get("config_file"), source))
    )


def _reload_despite(error: ConfigError, args: argparse.Namespace) -> int:
    """``reload`` with a configuration file that does not load here: the daemon started
    from it is found as ``status`` finds it, and asked to reload all the same."""
    from quintd.config import locate_daemon

    source, state_dir, runtime_dir = locate_daemon(args.config)
    return _reload(runtime_dir / "quintd.sock", state_dir, source, args, error)


def _reload(
    socket_path: Path,
    state_dir: Path,
    source: Path | None,
    args: argparse.Namespace,
    local_error: ConfigError | None = None,
) -> int:
    """SIGHUP to the daemon that answers on the control socket (this configuration's,
    and with ``--pid`` that very process), then wait until it says how the reload went:
    0 reloaded, 78 the new configuration was rejected (the daemon runs on with the old),
    1 no answer in time or another daemon, 3 none running."""
    import time

    from quintd.control import request
    from quintd.errors import EXIT_CONFIG
    from quintd.protocol import Command

    def ask() -> dict[str, Any]:
        result = request(socket_path, Command.STATUS)
        ours = isinstance(result, dict) and (
            _same_path(result.get("state_dir"), state_dir)
            or (source is not None and _same_path(result.get("config_file"), source))
        )
        if not ours or not isinstance(result.get("pid"), int):
            raise QuintdError(
                f"the daemon answering on {socket_path} is not this configuration's "
                f"(state dir {state_dir}); nothing was signalled"
            )
        return dict(result)

    try:
        before = ask()
    except QuintdError as exc:
        # No daemon to judge the file: what is wrong with it, as read here, is news too.
        for line in str(local_error or "").splitlines():
            print(f"quintd: {line}", file=sys.stderr)
        if not isinstance(exc, NotRunningError):
            raise
        print(f"quintd: {exc}", file=sys.stderr)
        return exc.exit_code
    pid: int = before["pid"]
    if args.pid is not None and args.pid != pid:
        raise QuintdError(
            f"the daemon on {socket_path} is pid {pid}, not {args.pid}; nothing was signalled"
        )
    _send_sighup(pid, lambda: ask()["pid"] == pid)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            now = ask()
        except NotRunningError as exc:
            raise QuintdError(f"pid {pid} went away while reloading ({exc})") from None
        if now["pid"] != pid:
            raise QuintdError(f"pid {pid} was replaced by pid {now['pid']} while reloading")
        if now.get("reloads", 0) != before.get("reloads", 0):
            print(f"quintd: pid {pid} reloaded {now.get('config_file') or 'built-in defaults'}")
            return EXIT_OK
        error = now.get("last_reload_error")
        if error and error != before.get("last_reload_error"):
            print(
                f"quintd: pid {pid} rejected the configuration and runs on with the one it had:",
                file=sys.stderr,
            )
            for line in str(error).splitlines():
                print(f"quintd: {line}", file=sys.stderr)
            return EXIT_CONFIG
        if time.monotonic() >= deadline:
            raise QuintdError(
                f"sent SIGHUP to pid {pid}, but it did not report a reload within "
                f"{args.timeout:g}s (quintd status shows what it does)"
            )
        time.sleep(0.05)  # the polling interval of a wait with a deadline


def _send_sighup(pid: int, still_ours: Callable[[], bool]) -> None:
    """SIGHUP through a pidfd where there are pidfds: the process is pinned first, then
    checked to be the daemon still, so a pid reused meanwhile is never signalled."""
    import signal

    pidfd = -1
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
    try:
        if pidfd >= 0 and not still_ours():
            raise QuintdError(f"pid {pid} is no longer the daemon; nothing was signalled")
        try:
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, signal.SIGHUP)
            else:
                os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise QuintdError(f"pid {pid} exited before the reload") from None
        except PermissionError:
            raise QuintdError(
                f"not allowed to signal pid {pid}: run as the daemon's user (or root)"
            ) from None
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _watch(args: argparse.Namespace, fetch: Callable[[], Any], note: str = "") -> int:
    """The status ``fetch`` asks the daemon for, redrawn in place every second (like top)
    until Ctrl-C; ``note`` (a configuration file that does not load) heads every frame."""
    import signal
    import time

    from quintd.protocol import StatusReport, from_json
    from quintd.status_text import render_status

    if args.json or args.format != "text":
        raise QuintdError("--watch shows the text status; --json and --format are for one shot")
    # Ctrl-C is waited for, not raised in the middle of a request or a write: where the
    # OS can (sigtimedwait), SIGINT stays blocked and the pause between frames waits for it.
    waits_for_sigint = hasattr(signal, "sigtimedwait")
    if waits_for_sigint:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        while True:
            started = time.monotonic()
            try:
                frame = render_status(from_json(StatusReport, fetch(), "status"))
            except QuintdError as exc:  # not running (yet), restarting...: keep looking
                frame = f"quintd: {exc}"
            if note:
                frame = f"{note}\n\n{frame}"
            stamp = time.strftime("%H:%M:%S")
            # Home, the frame, then clear what is left of the last one: no flicker.
            sys.stdout.write(f"\x1b[H{frame}\n\n{stamp}  (Ctrl-C to quit)\x1b[J")
            sys.stdout.flush()
            pause = max(1.0 - (time.monotonic() - started), 0.0)
            if not waits_for_sigint:
                time.sleep(pause)
            elif signal.sigtimedwait({signal.SIGINT}, pause) is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if waits_for_sigint:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    sys.stdout.write("\n")
    return EXIT_OK


def _not_running(exc: NotRunningError, args: argparse.Namespace, socket_path: Path) -> int:
    if args.json or args.format == "json":
        print(json.dumps({"running": False, "socket": str(socket_path), "error": str(exc)}))
    elif args.format == "prometheus":
        # A scrape file that says "down" rather than none (or a stale one).
        from quintd.metrics import render_down

        sys.stdout.write(render_down())
        print(f"quintd: {exc}", file=sys.stderr)
    else:
        print(f"quintd: {exc}", file=sys.stderr)
    return exc.exit_code


def _show_status(result: Any, args: argparse.Namespace) -> int:
    from quintd.protocol import StatusReport, from_json

    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(dict(result, running=True), indent=2))
        return EXIT_OK
    report = from_json(StatusReport, result, "status")
    if fmt == "prometheus":
        from quintd.metrics import render_prometheus

        sys.stdout.write(render_prometheus(report))
        return EXIT_OK
    from quintd.status_text import render_status

    print(render_status(report))
    return EXIT_OK


def _same_path(a: object, b: object) -> bool:
    return (
        isinstance(a, str)
        and isinstance(b, str | Path)
        and (os.path.realpath(a) == os.path.realpath(b))
    )


def _check_identity(loaded: LoadedConfig, result: Any) -> None:
    """The daemon answering on the socket must be this configuration's: the same state
    dir, or the same config file (whose state dir changed, pending a restart). Another
    daemon that took the socket path is never reported as this one."""
    if not isinstance(result, dict):
        raise QuintdError("quintd answered with something that is not a status report")
    if _same_path(result.get("state_dir"), loaded.state_dir):
        return
    if loaded.source is not None and _same_path(result.get("config_file"), loaded.source):
        print(
            f"quintd: note: the configuration names state dir {loaded.state_dir}; the daemon "
            f"runs with {result.get('state_dir')} until it is restarted",
            file=sys.stderr,
        )
        return
    raise QuintdError(
        f"the daemon answering on {loaded.socket_path} runs with state dir "
        f"{result.get('state_dir')}, not {loaded.state_dir}: it is another quintd (two "
        f"daemons share paths.runtime_dir?)"
    )


def _service(args: argparse.Namespace) -> int:
    from quintd import service
    from quintd.config import running_as_root

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
    from quintd.control import request
    from quintd.protocol import (
        Command,
        DeadLetterRow,
        RequeueRefusal,
        RequeueReply,
        RequeueRequest,
        from_json,
        to_json,
    )

    if args.queue_command == "requeue":
        ask = RequeueRequest(seqs=None if args.all else list(args.seqs), force=args.force)
        try:
            reply = from_json(
                RequeueReply, request(loaded.socket_path, Command.REQUEUE, **to_json(ask))
            )
        except NotRunningError:
            with _offline_store(loaded) as store:
                moved, refused = store.requeue(ask.seqs, force=ask.force)
            reply = RequeueReply(moved, [RequeueRefusal(seq, why) for seq, why in refused])
        print(f"requeued {reply.requeued} dead letter(s)")
        for refusal in reply.refused:
            print(f"not requeued: {refusal.seq}: {refusal.reason}", file=sys.stderr)
        return EXIT_OK if not reply.refused else EXIT_FAILURE
    try:
        letters = from_json(
            list[DeadLetterRow], request(loaded.socket_path, Command.DEAD_LETTERS), "dead letters"
        )
    except NotRunningError:
        from quintd.status_report import dead_letter_row

        with _offline_store(loaded) as store:
            letters = [dead_letter_row(d) for d in store.dead_letters()]
    if args.json:
        print(json.dumps(to_json(letters), indent=2))
        return EXIT_OK
    from quintd.status_text import render_dead_letters

    print(render_dead_letters(letters))
    return EXIT_OK


@contextlib.contextmanager
def _offline_store(loaded: LoadedConfig) -> Iterator[Store]:
    from quintd.store import Store

    if not loaded.database_path.exists():
        raise QuintdError(f"no queue database at {loaded.database_path}")
    store = Store(loaded.database_path)
    try:
        yield store
    finally:
        store.close()


def _scan(loaded: LoadedConfig, *, as_json: bool) -> int:
    from datetime import UTC, datetime

    from quintd.model import format_timestamp
    from quintd.scanner import Scanner, ScannerSettings
    from quintd.signing import SigningResolver
    from quintd.status_text import cell, table

    resolver = SigningResolver()
    # One-shot: wait for every signing identity (hashing a large binary takes a moment).
    settings = ScannerSettings(platforms=loaded.platforms, signing_budget=120.0, signing_wait=120.0)
    scanner = Scanner(settings, resolver)
    agents = scanner.scan_complete(timeout=120.0)
    identities = {a.pid: scanner.identity(a.pid) for a in agents}
    resolver.close()
    if as_json:
        print(json.dumps([agent_json(a, identities[a.pid]) for a in agents], indent=2))
        return EXIT_OK
    if not agents:
        print("no agent processes found")
        return EXIT_OK
    header = ["PLATFORM", "PID", "PPID", "STARTED", "USER", "MATCHED", "IDENTITY", "VERSION"]
    rows = [[*header, "VERIFIED", "PARENT", "CWD"]]
    for a in agents:
        info = identities[a.pid]
        rows.append(
            [
                cell(a.platform),
                str(a.pid),
                str(a.ppid),
                format_timestamp(datetime.fromtimestamp(a.start_time, UTC)),
                cell(a.user or "?"),
                cell(a.matched_by),
                cell(a.signing_id),
                cell(info.version if info is not None else None),
                cell(info.detail if info is not None else None),
                str(a.parent_pid) if a.parent_pid else "-",
                cell(a.cwd or "?", 200),
            ]
        )
    print("\n".join(table(rows)))
    return EXIT_OK


def agent_json(a: AgentProcess, info: SigningInfo | None = None) -> dict[str, Any]:
    from datetime import UTC, datetime

    from quintd.model import clean_text, format_timestamp

    identity = None
    if info is not None:
        identity = {
            "signing_id": clean_text(info.signing_id),
            "source": info.source,
            "package": clean_text(info.identifier),
            "version": clean_text(info.version),
            "verified": info.valid,  # true, false, or null where nothing could be checked
            "detail": clean_text(info.detail, 500),
        }
    return {
        "platform": a.platform,
        "pid": a.pid,
        "ppid": a.ppid,
        "started_at": format_timestamp(datetime.fromtimestamp(a.start_time, UTC)),
        "user": clean_text(a.user),
        "exe": clean_text(a.exe, 4096),
        "cwd": clean_text(a.cwd, 4096),
        "signing_id": clean_text(a.signing_id),
        "matched_by": a.matched_by,
        "name": clean_text(a.name),
        "parent_pid": a.parent_pid,
        "identity": identity,
    }
