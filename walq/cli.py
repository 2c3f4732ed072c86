"""The ``walq`` command: a thin layer over walq's modules (design.md's CLI contract).

Exit codes: 0 success; 1 the command's own "not OK" (failed WALs, not found,
check failed); 2 bad configuration, bad argument or an error. Every error is
one line on stderr naming the file, key or argument concerned.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from walq.errors import ECHO_LIMIT, ConfigError, DuplicateWalError, NotFoundError, WalqError
from walq.restore.spool import MAX_PREFETCH, parse_prefetch

if TYPE_CHECKING:
    from walq.archive.embedded import ServerRun
    from walq.config import Config
    from walq.fleet.liveness import Liveness
    from walq.postgres.syncrep import SyncView
    from walq.report.retention import RestorePoint, RetentionWindow
    from walq.report.status import StreamingStatus
    from walq.retention.expire import ExpiryResult

EXIT_OK, EXIT_NOT_OK, EXIT_ERROR = 0, 1, 2


class Progress:
    """A one-line progress bar on a terminal, one plain line per WAL otherwise;
    ``quiet`` (``walq archive --quiet``, for cron mail): only the WALs that failed, on stderr."""

    def __init__(self, stream=sys.stdout, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.raw_bytes = 0

    def __call__(self, server: str, outcome, done: int, total: int) -> None:
        self.raw_bytes += outcome.size
        if self.quiet:
            if not outcome.ok:
                print(
                    f"walq: {server} {outcome.name} {outcome.status}: {outcome.message}",
                    file=sys.stderr,
                )
            return
        if self.tty:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r{server} [{bar}] {done}/{total} {done / elapsed:6.1f} WAL/s "
                f"{self.raw_bytes / elapsed / 1e6:7.1f} MB/s"
            )
            if not outcome.ok:
                self.stream.write(
                    f"\n{server} {outcome.name} {outcome.status}: {outcome.message}\n"
                )
            if done == total:
                self.stream.write("\n")
        else:
            detail = f" {outcome.message}" if outcome.message else ""
            sizes = (
                f" {outcome.size}->{outcome.stored_size}" if outcome.status == "archived" else ""
            )
            self.stream.write(f"{server} {outcome.name} {outcome.status}{sizes}{detail}\n")
        self.stream.flush()


def cmd_archive(config: Config, args: argparse.Namespace) -> int:
    from walq.archive.embedded import archive

    quiet = args.quiet
    runs = archive(config, args.servers or None, Progress(quiet=quiet))
    status = EXIT_OK
    for run in runs:
        if run.busy:
            _report_busy(run, quiet)
            if not run.ok:
                status = EXIT_NOT_OK
            continue
        for path in run.unknown:
            print(f"{run.server}: unknown file moved to {shown(path)}", file=sys.stderr)
        archived = sum(1 for o in run.outcomes if o.status == "archived")
        dups = sum(1 for o in run.outcomes if o.status == "duplicate")
        summary = (
            f"{run.server}: {archived} archived, {dups} duplicate(s) dropped, "
            f"{len(run.failed)} failed, {len(run.unknown)} unknown"
        )
        if not run.ok:
            status = EXIT_NOT_OK
        if not quiet:
            print(summary)
        elif not run.ok:  # the failures above, in context
            print(f"walq: {summary}", file=sys.stderr)
    return status


def _report_busy(run: ServerRun, quiet: bool = False) -> None:
    """A skip is quiet only while a live walq archive holds the lock and makes progress."""
    if quiet and not run.stuck:  # a healthy holder is doing the work: nothing to mail
        return
    if run.holder is None:  # the fleet's lock: it expires with its holder
        print(f"{run.server}: another walq archive holds the lock; skipped")
    elif run.stuck:
        print(
            f"walq: {run.server}: not archived: archive-wal lock {run.holder.describe()}",
            file=sys.stderr,
        )
    else:
        print(
            f"{run.server}: another walq archive holds the lock ({run.holder.describe()}); skipped"
        )


def cmd_put_wal(config: Config, args: argparse.Namespace) -> int:
    from walq.archive.putwal import put_wal

    try:
        put_wal(config, args.server, Path(args.path))
    except DuplicateWalError as exc:
        print(f"walq: {exc}", file=sys.stderr)
        return EXIT_NOT_OK
    return EXIT_OK


def cmd_get_wal(config: Config, args: argparse.Namespace) -> int:
    from walq.restore.getwal import get_wal

    try:
        get_wal(
            config,
            args.server,
            args.walname,
            Path(args.dest),
            prefetch=args.prefetch,
            partial=args.partial,
        )
    except NotFoundError as exc:
        print(f"walq: {exc}", file=sys.stderr)
        return EXIT_NOT_OK
    return EXIT_OK


NO_SERVERS = "no servers configured ([servers.NAME] tables)"  # as walq.archiver.archive says it


def _servers(config: Config, name: str | None):
    return [config.server(name)] if name else list(config.servers.values())


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from walq.catalog import open_catalog
    from walq.report.jsontime import with_iso_times
    from walq.report.status import server_status

    catalog = open_catalog(config)
    try:
        data = [server_status(catalog, s, home=config.home) for s in _servers(config, args.server)]
    finally:
        catalog.close()
    extra = _fleet_status(config)
    if not data:  # say so: an empty report reads as "all is well"
        print(f"walq: {NO_SERVERS}", file=sys.stderr)
    if args.json:
        print(json.dumps(with_iso_times({"servers": data, **extra}), indent=2))
        return EXIT_OK
    for st in data:
        print(f"Server {st['server']}:")
        print(f"  watermark:        {st['watermark'] or '-'}")
        last_at = st["last_archived_at"]
        age = f" ({time.time() - last_at:.0f}s ago)" if last_at else ""
        print(f"  last archived:    {st['last_archived'] or '-'}{age}")
        print(f"  archived:         {st['archived']}   in flight: {st['claimed']}")
        q = st["queued"]
        lag = (
            "unknown (a directory cannot be listed)"
            if st["lag_seconds"] is None
            else f"{st['lag_seconds']}s"
        )
        print(
            f"  queued:           {q['incoming']} incoming, {q['streaming']} streaming; lag {lag}"
        )
        print(
            f"  rates:            {st['rates']['last_minute']}/min, {st['rates']['last_hour']}/hour"
        )
        print(
            f"  gaps:             {len(st['gaps'])}"
            + "".join(f"\n    {a}..{b}" for a, b in st["gaps"])
        )
        print(
            f"  failed:           {len(st['failed'])}"
            + "".join(f"\n    {f['name']}: {f['error']}" for f in st["failed"])
        )
        print(f"  errors/ files:    {st['errors_dir_files']}")
        if "retention" in st:
            _print_retention(st["retention"])
        _print_streaming(st)
    for key, value in extra.items():
        print(f"{key}: {json.dumps(value)}")
    return EXIT_OK


def _print_retention(ret: RetentionWindow) -> None:
    """The retention window (walq.report.retention)."""

    def point(p: RestorePoint | None) -> str:
        if not p:
            return "-"
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(p["time"])) if p.get("time") else ""
        )
        return f"{p['wal']}" + (f" ({when})" if when else "")

    print(
        f"  retention:        {ret['policy'] or 'none (never expires)'}; {ret['base_backups']} base backup(s) "
        f"known, {ret['expired']} expired"
    )
    print(
        f"  restorable:       from {point(ret['oldest_restorable'])} to {point(ret['newest_restorable'])}"
    )
    for problem in ret["backup_problems"]:
        print(f"    unreadable backup: {problem}")


def _print_streaming(st: StreamingStatus) -> None:
    """Receiver state and PostgreSQL's view (walq.report.status.streaming_status)."""
    rec = st["receiver"]
    if rec["running"]:
        print(
            f"  receiver:         {rec['state']} (pid {rec['pid']}, pg_receivewal {rec['child_pid'] or '-'}, "
            f"{rec['restarts']} restart(s))"
        )
    else:
        last = f"; last: {rec['last_message']}" if rec["last_message"] else ""
        print(f"  receiver:         {rec['state']}{last}")
    pg = st.get("postgres")
    if not pg:
        return
    if not pg["reachable"]:
        print(f"  postgres:         unreachable: {pg['error']}")
        return
    print(
        f"  postgres:         {pg['version']}, current WAL {pg['current_wal'] or '-'} ({pg['current_lsn']})"
    )
    slot = pg["slot"]
    lag = pg["replication_lag_bytes"]
    if slot:
        state = "active" if slot["active"] else "inactive"
        print(
            f"  slot:             {slot['name']} {state}, retaining {slot['retained_bytes'] or 0} bytes"
        )
    print(f"  replication lag:  {'-' if lag is None else f'{lag} bytes'}")
    if line := _synchronous_line(pg["synchronous"], rec["state"]):
        print(f"  synchronous:      {line}")
    if pg["archiver_failing"]:
        print(f"  archive_command:  FAILING (last failed {pg['archiver_last_failed_wal']})")


def _synchronous_line(sync: SyncView, receiver_state: str | None) -> str | None:
    """Is the receiver a synchronous standby (nothing to say for a server never streamed)?"""
    if not sync["named"]:
        if receiver_state == "never started":
            return None
        return f"no ({sync['application_name']} is not in synchronous_standby_names)"
    state = sync["sync_state"] or "no receiver connected"
    flag = ", pg_receivewal without --synchronous" if sync["started_synchronous"] is False else ""
    return f"yes ({state}{flag})"


def _fleet_status(config: Config) -> dict[str, object]:
    """Queue depths and in-flight WALs in fleet mode (walq.fleet_status, if present)."""
    if not config.fleet:
        return {}
    try:
        from walq.fleet.queues import fleet_status
    except ImportError:
        return {}
    return fleet_status(config)


def _fleet_liveness(config: Config) -> Liveness | str | None:
    """Read the fleet's heartbeats once for every server's check (None: embedded mode)."""
    if not config.fleet:
        return None
    from walq.fleet.liveness import fleet_liveness

    return fleet_liveness(config)


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from walq.catalog import open_catalog
    from walq.report.check_output import CheckReport, check_line, nagios_error
    from walq.report.checks import run_checks

    servers = _servers(config, args.server)
    report = CheckReport()
    if not servers:  # nothing checked is not a pass
        if args.nagios:
            code, line = nagios_error(NO_SERVERS, unknown=True)
            print(line)
            return code
        print(f"walq: {NO_SERVERS}: nothing to check", file=sys.stderr)
        if args.json:
            print(json.dumps(report.as_json(), indent=2))
        return EXIT_NOT_OK
    catalog = open_catalog(config)
    liveness = _fleet_liveness(config)
    try:
        for server in servers:
            for result in run_checks(config, server, catalog, liveness):
                report.add(server.name, result)
                if not (args.nagios or args.json):  # each line as soon as it is known
                    print(check_line(server.name, result))
    finally:
        catalog.close()
    if args.nagios:
        code, line = report.nagios()
        print(line)
        return code
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    return EXIT_OK if report.ok else EXIT_NOT_OK


def cmd_list(config: Config, args: argparse.Namespace) -> int:
    """Catalog rows of one server, or of every server (then each line starts with its name)."""
    from walq.catalog import WalState, open_catalog
    from walq.report.jsontime import with_iso_times

    servers = _servers(config, args.server)
    if not servers:
        print(f"walq: {NO_SERVERS}", file=sys.stderr)
    catalog = open_catalog(config)
    try:
        rows = [
            r
            for server in servers
            for r in catalog.records(server.name, WalState.FAILED if args.failed else None)
        ]
    finally:
        catalog.close()
    if args.json:
        document = [{c: getattr(r, c) for c in r.COLUMNS} for r in rows]
        print(json.dumps(with_iso_times(document), indent=2))
        return EXIT_OK
    width = max((len(s.name) for s in servers), default=6) if not args.server else 0

    def server_column(name: str) -> str:
        return f"{name:<{width}} " if width else ""

    print(
        f"{server_column('server')}{'name':<40} {'state':<9} {'size':>10} {'stored':>10} "
        f"{'codec':<7} {'enc':<5} {'tries':>5}  error"
    )
    for r in rows:
        print(
            f"{server_column(r.server)}{r.name:<40} {r.state:<9} {r.size or '':>10} "
            f"{r.stored_size or '':>10} {r.codec or '':<7} {r.encryption or '':<5} "
            f"{r.attempts:>5}  {r.last_error or ''}"
        )
    return EXIT_OK


def cmd_retry(config: Config, args: argparse.Namespace) -> int:
    from walq.archive.retry import retry

    if not args.walnames and not args.all_failed:
        raise ConfigError("retry: name WAL files or pass --all-failed")
    names = None if args.all_failed else args.walnames
    reset, runs = retry(config, args.server, names)
    print(f"{args.server}: {len(reset)} WAL(s) re-driven: {' '.join(reset) or '-'}")
    if config.fleet and reset:
        print(f"{args.server}: the next scan (within {config.scan_interval:g}s) enqueues them")
    if runs is not None:
        return cmd_archive_report(runs)
    return EXIT_OK


def cmd_archive_report(runs) -> int:
    for run in runs:
        if run.busy:
            _report_busy(run)
    return EXIT_OK if all(r.ok for r in runs) else EXIT_NOT_OK


def cmd_catalog_init(config: Config, args: argparse.Namespace) -> int:
    """Create or migrate the catalog's schema (also done on first use)."""
    from walq.catalog import open_catalog

    catalog = open_catalog(config)
    try:
        migrate = getattr(catalog, "migrate", None)
        version = migrate() if migrate else None
    finally:
        catalog.close()
    where = (
        "PostgreSQL catalog (catalog_url)"
        if config.catalog_url
        else f"SQLite catalog {config.catalog_path}"
    )
    print(f"{where} ready" + (f", schema version {version}" if version else ""))
    return EXIT_OK


def cmd_catalog_resync(config: Config, args: argparse.Namespace) -> int:
    """Repair the catalog from storage (walq.retention.resync): 0 in sync, 1 lost or refused objects."""
    from walq.retention.resync import print_resync, resync

    result = resync(config, args.server, args.dry_run)
    for line in print_resync(result):
        print(line)
    return EXIT_OK if result.ok else EXIT_NOT_OK


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    """One server, or every server in turn (one that cannot be read does not stop the
    others): 0 all clean, 1 problems (or no server configured), 2 a server could not be read."""
    from walq.catalog import open_catalog
    from walq.report.verify import verify
    from walq.storage import open_storage

    servers = _servers(config, args.server)
    if not servers:  # nothing read back is not "clean"
        print(f"walq: {NO_SERVERS}: nothing to verify", file=sys.stderr)
        return EXIT_NOT_OK
    status = EXIT_OK
    catalog = open_catalog(config)
    try:
        for server in servers:
            try:
                report = verify(server, catalog, open_storage(server))
            except WalqError as exc:
                if args.server:  # one server: main() reports it as every command does
                    raise
                print(f"walq: {server.name}: {_one_line(str(exc))}", file=sys.stderr)
                status = EXIT_ERROR
                continue
            for problem in report.problems:
                print(f"{server.name}: {problem}")
            print(
                f"{server.name}: {report.checked} WAL(s) read back, "
                f"{len(report.problems)} problem(s)"
            )
            if not report.ok and status == EXIT_OK:
                status = EXIT_NOT_OK
    finally:
        catalog.close()
    return status


def cmd_expire(config: Config, args: argparse.Namespace) -> int:
    from walq.retention.expire import expire_server

    names = args.servers or sorted(config.servers)
    if not names:
        print(f"walq: {NO_SERVERS}", file=sys.stderr)
        return EXIT_OK
    return _retention_runs(names, lambda name: expire_server(config, name, args.dry_run))


def cmd_delete(config: Config, args: argparse.Namespace) -> int:
    from walq.retention.expire import delete_before

    return _retention_runs(
        [args.server], lambda name: delete_before(config, name, args.before, args.dry_run)
    )


def _retention_runs(names: list[str], run: Callable[[str], ExpiryResult]) -> int:
    """Each server in turn (one failing does not stop the others): 0 done or nothing to
    do, 1 some refused, 2 some failed."""
    from walq.retention.report import print_result

    status = EXIT_OK
    for name in names:
        try:
            result = run(name)
        except WalqError as exc:
            print(f"walq: {name}: {_one_line(str(exc))}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        print_result(result)
        if result.refused is not None and status == EXIT_OK:
            status = EXIT_NOT_OK
    return status


def cmd_receive_wal(config: Config, args: argparse.Namespace) -> int:
    from walq.postgres.receiver import receive_wal

    return receive_wal(config, args.server, create_slot=args.create_slot, reset=args.reset)


def cmd_switch_wal(config: Config, args: argparse.Namespace) -> int:
    """pg_switch_wal(); with --archive, wait until the closed WAL is archived (walq.archive.wait)."""
    from walq.postgres.client import switch_wal

    server = config.server(args.server)
    switched = switch_wal(server, force=args.force)
    print(switched.message, flush=True)
    if not args.archive:
        return EXIT_OK
    from walq.archive.wait import wait_archived

    limit = f" (max: {args.archive_timeout:g} seconds)" if args.archive_timeout else ""
    print(
        f"Waiting for the WAL file {switched.closed} from server '{server.name}'{limit}", flush=True
    )
    result = wait_archived(config, server, switched.closed, args.archive_timeout or None)
    if not result.ok:
        print(f"walq: switch-wal: {server.name}: {result.message}", file=sys.stderr)
        return EXIT_NOT_OK
    print(result.message)
    return EXIT_OK


def cmd_metrics(config: Config, args: argparse.Namespace) -> int:
    from walq.metrics.commands import run_metrics

    return run_metrics(config, args.servers, Path(args.output) if args.output else None)


def cmd_exporter(config: Config, args: argparse.Namespace) -> int:
    from walq.metrics.commands import run_exporter

    return run_exporter(config, args.servers, args.listen)


def _listen_address(text: str) -> tuple[str, int]:
    from walq.metrics.commands import parse_listen

    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse with walq's error contract: one line on stderr naming the argument, exit 2."""

    def error(self, message: str) -> NoReturn:
        limit = 4 * ECHO_LIMIT  # argparse echoes a bad value whole ("invalid choice: '…'")
        if len(message) > limit:
            message = f"{message[:limit]}…({len(message)} characters)"
        where = self.prog.removeprefix("walq").strip()
        self.exit(EXIT_ERROR, f"walq: {where + ': ' if where else ''}{message}\n")


class _Version(argparse.Action):
    """``walq --version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = f"walq {version('walq')}"
        except PackageNotFoundError:  # a source tree nobody installed
            text = "walq (version unknown: not installed as a package)"
        print(text)  # stdout, as argparse's own version action does
        parser.exit(EXIT_OK)


def _archive_timeout(text: str) -> float:
    """--archive-timeout: seconds, 0 for no limit (Barman's default is 30)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400 * 7:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 0 (no limit) to 604800 (got {text[:ECHO_LIMIT]!r})"
        )
    return seconds


def _prefetch_count(text: str) -> int:
    try:
        return parse_prefetch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


Command = Callable[["Config", argparse.Namespace], int]


def _command(
    sub: argparse._SubParsersAction[Any],
    name: str,
    summary: str,
    func: Command,
    servers: str = "one",
) -> argparse.ArgumentParser:
    """One subcommand: its help line, its SERVER argument(s) and the function it runs.

    ``servers``: "one" (required), "optional" (default: every server), "many"
    (zero or more; default: every server) or "none"."""
    p = sub.add_parser(name, help=summary, description=summary)
    if servers == "one":
        p.add_argument("server", metavar="SERVER", help="a server configured in [servers.NAME]")
    elif servers == "optional":
        p.add_argument("server", nargs="?", metavar="SERVER", help="one server (default: all)")
    elif servers == "many":
        p.add_argument("servers", nargs="*", metavar="SERVER", help="servers (default: all)")
    p.set_defaults(func=func)
    return p


def _flag(p: argparse.ArgumentParser, name: str, explanation: str) -> None:
    p.add_argument(name, action="store_true", help=explanation)


DRY_RUN = "print every name that would go; change nothing"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="walq", description="WAL archiving for PostgreSQL fleets")
    parser.add_argument("--config", help="config file (default $WALQ_CONFIG, then ./walq.toml)")
    parser.add_argument("--version", action=_Version, help="print walq's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(
        sub, "archive", "archive everything pending now (embedded mode)", cmd_archive, "many"
    )
    _flag(p, "--quiet", "print only errors, on stderr (for cron: no mail when all is well)")

    p = _command(sub, "put-wal", "archive_command: copy PATH into incoming atomically", cmd_put_wal)
    p.add_argument("path", help="the WAL file PostgreSQL hands over (%p)")

    p = _command(sub, "get-wal", "restore_command: write WALNAME to DEST", cmd_get_wal)
    p.add_argument("walname", help="the WAL file PostgreSQL asks for (%f)")
    p.add_argument("dest", help="where to write it (%p), or - for standard output")
    p.add_argument(
        "--prefetch",
        type=_prefetch_count,
        default=0,
        metavar="N",
        help=f"keep the next N segments restored ahead (0 to {MAX_PREFETCH})",
    )
    p.add_argument(
        "-P",
        "--partial",
        action="store_true",
        help="a segment not in the archive: serve its .partial (archived, else streaming/)",
    )

    p = _command(sub, "status", "watermark, lag, gaps, failures", cmd_status, "optional")
    _flag(p, "--json", "machine-readable output")

    p = _command(sub, "check", "one OK/FAILED line per check", cmd_check, "optional")
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--nagios", action="store_true", help="one Nagios plugin line; exit 0 OK, 2 CRITICAL"
    )
    out.add_argument("--json", action="store_true", help="the checks as one JSON document")

    p = _command(sub, "list", "catalog rows", cmd_list, "optional")
    _flag(p, "--failed", "only the failed WALs")
    _flag(p, "--json", "machine-readable output")

    p = _command(sub, "retry", "re-drive failed WALs", cmd_retry)
    p.add_argument("walnames", nargs="*", metavar="WALNAME", help="the failed WALs to re-drive")
    _flag(p, "--all-failed", "every failed WAL of the server")

    p = sub.add_parser("catalog", help="catalog maintenance", description="catalog maintenance")
    catalog_sub = p.add_subparsers(dest="catalog_command", required=True)
    _command(catalog_sub, "init", "create or migrate the catalog schema", cmd_catalog_init, "none")
    p = _command(
        catalog_sub,
        "resync",
        "adopt objects others stored, mark what others deleted",
        cmd_catalog_resync,
    )
    _flag(p, "--dry-run", "report only; change nothing")

    _command(
        sub,
        "verify",
        "read the archive back: continuity and checksums",
        cmd_verify,
        "optional",
    )

    p = _command(
        sub,
        "expire",
        "apply the servers' retention_policy (delete WAL no kept backup needs)",
        cmd_expire,
        "many",
    )
    _flag(p, "--dry-run", DRY_RUN)

    p = _command(
        sub,
        "delete",
        "delete every WAL before WALNAME on its timeline line, whatever the policy",
        cmd_delete,
    )
    p.add_argument("--before", required=True, metavar="WALNAME", help="the first WAL kept")
    _flag(p, "--dry-run", DRY_RUN)

    p = _command(
        sub, "receive-wal", "supervise pg_receivewal into the streaming dir", cmd_receive_wal
    )
    _flag(p, "--create-slot", "create the replication slot first")
    _flag(p, "--reset", "point the streaming directory at the slot's restart position")

    p = _command(sub, "switch-wal", "ask the server to switch WAL", cmd_switch_wal)
    _flag(p, "--force", "CHECKPOINT first, so an idle server has something to close")
    _flag(p, "--archive", "then wait until the closed WAL is archived (exit 1 on timeout)")
    p.add_argument(
        "--archive-timeout",
        type=_archive_timeout,
        default=30.0,
        metavar="SECONDS",
        help="how long --archive waits (default 30; 0: no limit)",
    )
    _metrics_commands(sub)
    return parser


def _metrics_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``walq metrics`` and ``walq exporter`` (docs/metrics.md)."""
    p = _command(sub, "metrics", "print Prometheus metrics once (text format)", cmd_metrics, "many")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write FILE atomically instead of stdout (node_exporter's textfile collector)",
    )
    p = _command(sub, "exporter", "serve Prometheus metrics over HTTP", cmd_exporter, "many")
    p.add_argument(
        "--listen",
        type=_listen_address,
        required=True,
        metavar="HOST:PORT",
        help="address to serve /metrics on, e.g. 127.0.0.1:9187",
    )


EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """The full CLI (the console script enters through walq.main.main first).

    Whatever happens, the user sees one line on stderr, never a traceback
    (WALQ_DEBUG=1 adds it for an unexpected error); a reader that closed our
    stdout (``walq status | head``) ends the command quietly."""
    args = build_parser().parse_args(argv)
    nagios = getattr(args, "nagios", False)  # errors become the plugin's one stdout line
    try:
        from walq.config import load_config

        config = load_config(args.config)
        code = args.func(config, args)
        sys.stdout.flush()  # a closed pipe must surface here, not at interpreter exit
        return code
    except BrokenPipeError as exc:
        if _stdout_closed():
            _discard_stdout()
            return EXIT_BROKEN_PIPE
        return _fail(f"walq: {_one_line(str(exc))}")
    except WalqError as exc:
        return _fail(f"walq: {_one_line(str(exc))}", nagios=nagios)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # the environment refused something walq did not foresee
        return _fail(f"walq: {_one_line(str(exc))}", debug=True, nagios=nagios)
    except Exception as exc:  # the safety net promised by the README
        return _fail(
            f"walq: internal error: {type(exc).__name__}: {_one_line(str(exc))}",
            debug=True,
            nagios=nagios,
        )


def _fail(line: str, debug: bool = False, nagios: bool = False) -> int:
    """One line on stderr, exit 2; for ``check --nagios`` the plugin's line on stdout
    instead: CRITICAL (2) for walq's own errors, UNKNOWN (3) for unforeseen ones (``debug``)."""
    if debug and os.environ.get("WALQ_DEBUG") == "1":
        traceback.print_exc()
    from walq.masking import mask_secrets

    if nagios:
        from walq.report.check_output import nagios_error

        code, plugin_line = nagios_error(mask_secrets(line.removeprefix("walq: ")), debug)
        with contextlib.suppress(OSError):
            print(plugin_line)
        return code
    with contextlib.suppress(OSError):  # stderr itself gone: the exit code is all that is left
        print(mask_secrets(line), file=sys.stderr)
    return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def shown(path: object) -> str:
    """A path for one output line: quoted when it holds a newline or other control character."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _stdout_closed() -> bool:
    """Did the reader of our stdout go away (poll reports an error on the pipe)?"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
