"""PostgreSQL-side checks for ``walq check`` (called last by walq.report.checks.run_checks).

What is checked depends on how WAL reaches walq, using Barman's keys:
``archiver`` (archive_command, the default) checks archive_mode, that
archive_command calls walq for this server, and that PostgreSQL's archiver is
not currently failing; ``streaming_archiver`` checks the replication slot
(present and active), that ``walq receive-wal`` runs, and whether the receiver
is a synchronous standby (walq.postgres.syncrep.sync_verdict says when that
fails). Every server with a conninfo gets "PostgreSQL reachable" and "system identifier matches". A
server without conninfo gets one ``PostgreSQL: SKIPPED (no conninfo)`` line (a
check that did not run is never reported OK), plus "receiver running" when it streams.
"""

from __future__ import annotations

import shlex

from walq.archive.identity import known_system_identifier
from walq.catalog import Catalog
from walq.config import ServerConfig
from walq.errors import WalqError
from walq.postgres.client import PgInfo, fetch_info, mask_conninfo, slot_name
from walq.postgres.receiver import application_name, receiver_state
from walq.postgres.syncrep import sync_verdict, sync_view
from walq.report.result import CheckResult


def _archive_command_uses_walq(command: str, server: str) -> bool:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    calls_walq = any(w == "walq" or w.endswith("/walq") for w in words)
    return calls_walq and "put-wal" in words and server in words


def _reachable_checks(server: ServerConfig, info: PgInfo, catalog: Catalog) -> list[CheckResult]:
    """The checks that need PostgreSQL's answers (run once it is reachable)."""
    results: list[CheckResult] = []
    if server.archiver:
        mode_ok = info.archive_mode in ("on", "always")
        results.append(
            CheckResult("archive_mode on", mode_ok, f"archive_mode = {info.archive_mode}")
        )
        if mode_ok:  # with archive_mode off PostgreSQL shows archive_command as "(disabled)"
            uses = _archive_command_uses_walq(info.archive_command, server.name)
            cmd = mask_conninfo(info.archive_command) or "(empty)"
            results.append(
                CheckResult(
                    "archive_command uses walq",
                    uses,
                    ""
                    if uses
                    else f"archive_command = {cmd} (expected: walq put-wal {server.name} %p)",
                )
            )
        arch = info.archiver
        detail = (
            f"{arch.failed_count} failure(s) since the stats reset, last {arch.last_failed_wal}"
            if arch.failed_count
            else ""
        )
        results.append(CheckResult("no archiver failures", not arch.failing, detail))
    if server.streaming_archiver:
        name = slot_name(server)
        slot = info.slot(name)
        if slot is None:
            results.append(
                CheckResult(
                    "replication slot",
                    False,
                    f"slot '{name}' does not exist (walq receive-wal --create-slot {server.name})",
                )
            )
        else:
            results.append(
                CheckResult(
                    "replication slot",
                    slot.active,
                    f"slot '{name}' active, retaining {slot.retained_bytes or 0} bytes"
                    if slot.active
                    else f"slot '{name}' is not active (no receiver connected)",
                )
            )
        results.append(synchronous_check(server, info))
    known = known_system_identifier(catalog, server)
    if not known:
        results.append(
            CheckResult.skip(
                "system identifier matches",
                f"PostgreSQL {info.system_identifier}; the archive has not recorded one yet",
            )
        )
    else:
        results.append(
            CheckResult(
                "system identifier matches",
                known == info.system_identifier,
                f"PostgreSQL {info.system_identifier}, archive {known}"
                if known != info.system_identifier
                else str(known),
            )
        )
    return results


def synchronous_check(server: ServerConfig, info: PgInfo) -> CheckResult:
    """``synchronous streaming``: is the receiver the synchronous standby PostgreSQL expects?"""
    view = sync_view(
        application_name(server),
        info.synchronous_standby_names,
        info.receiver_sync_state,
        info.receiver_sync_priority,
        receiver_state(server)["synchronous"],
    )
    ok, detail = sync_verdict(view)
    return CheckResult("synchronous streaming", ok, detail)


def _receiver_check(server: ServerConfig) -> CheckResult:
    state = receiver_state(server)
    if state["running"]:
        return CheckResult("receiver running", True, f"pid {state['pid']}, {state['state']}")
    detail = f"walq receive-wal {server.name} is not running"
    if state.get("last_message"):
        detail += f"; last: {state['last_message']}"
    return CheckResult("receiver running", False, detail)


def postgres_checks(server: ServerConfig, catalog: Catalog) -> list[CheckResult]:
    """The PostgreSQL-side lines of ``walq check``, in the order they are printed."""
    results: list[CheckResult] = []
    if not server.conninfo:
        results.append(CheckResult.skip("PostgreSQL", "no conninfo"))
        if server.streaming_archiver:  # the supervisor's state is local: no conninfo needed
            results.append(_receiver_check(server))
        return results
    try:
        info = fetch_info(server)
    except WalqError as exc:
        results.append(CheckResult("PostgreSQL reachable", False, str(exc)))
    else:
        results.append(CheckResult("PostgreSQL reachable", True, f"PostgreSQL {info.version}"))
        results.extend(_reachable_checks(server, info, catalog))
    if server.streaming_archiver:
        results.append(_receiver_check(server))
    return results
