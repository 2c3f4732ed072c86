"""check: the facts of ``walq status`` turned into one OK/FAILED/SKIPPED line per condition.

The archive-side checks are here; the PostgreSQL-side ones (archive_command,
slot, receiver, identity) are walq.postgres.checks, then the archiving-progress
ones (is anything archived, lately; is the pile in incoming/ growing or old) are
walq.report.progress, called last.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from walq.catalog import Catalog
from walq.config import Config, ServerConfig
from walq.crypto import check_key
from walq.errors import WalqError
from walq.fleet.liveness import Liveness, fleet_liveness, liveness_checks
from walq.fsutil import makedirs_durable, open_private
from walq.locks import FileLock, busy_holder, is_locked
from walq.postgres.checks import postgres_checks
from walq.report.progress import progress_checks
from walq.report.result import CheckResult
from walq.report.status import server_status
from walq.report.waiting import list_pending
from walq.retention.resync import lost_wals
from walq.storage import open_storage


def _errors_dir_empty(server: ServerConfig) -> None:
    """Raises unless errors/ is empty or absent; an unreadable one is a failure, not "empty"."""
    try:
        files = list_pending(server.errors_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WalqError(f"cannot list {server.errors_dir}: {exc.strerror or exc}") from None
    if files:
        raise WalqError(f"{len(files)} file(s) in {server.errors_dir}")


def _writable(path: Path) -> None:
    makedirs_durable(path)
    probe = path / f".walq-check-{uuid.uuid4().hex}"
    os.close(open_private(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    probe.unlink()


def archiver_lock_check(config: Config, server: ServerConfig) -> CheckResult:
    """OK when the archive-wal lock is free or held by a live walq archive that made progress
    within ``claim_timeout``; FAILED for a stuck holder or a lock no live walq archive holds."""
    lock = FileLock(config.home, server.name)
    if not is_locked(lock.path):
        return CheckResult("archiver lock", True, "free")
    holder = busy_holder(lock, config.claim_timeout)
    if holder is None:
        return CheckResult("archiver lock", True, "free")
    return CheckResult("archiver lock", holder.healthy, holder.describe())


def _attempt_result(results: list[CheckResult], name: str, fn: Callable[[], CheckResult]) -> None:
    """Run a check that builds its own line; an OSError (say, an unreadable lock file)
    becomes a FAILED line naming the file."""
    try:
        results.append(fn())
    except OSError as exc:
        results.append(CheckResult(name, False, f"{exc.filename or ''}: {exc.strerror}"))


def describe_gaps(gaps: list[list[str]], shown: int = 3) -> str:
    """'2 gap(s): A..B, C' for a check line (a one-segment gap is its name alone)."""
    if not gaps:
        return ""
    ranges = [start if start == end else f"{start}..{end}" for start, end in gaps[:shown]]
    more = f", and {len(gaps) - shown} more" if len(gaps) > shown else ""
    return f"{len(gaps)} gap(s): {', '.join(ranges)}{more}"


def run_checks(
    config: Config, server: ServerConfig, catalog: Catalog, liveness: Liveness | str | None = None
) -> list[CheckResult]:
    """Every line for ``server``. In fleet mode ``liveness`` is what
    walq.fleet.liveness.fleet_liveness read once for all servers (read here when None)."""
    results: list[CheckResult] = []

    def attempt(name: str, fn: Callable[[], object]) -> None:
        try:
            detail = fn()
            results.append(CheckResult(name, True, detail if isinstance(detail, str) else ""))
        except (WalqError, OSError) as exc:
            results.append(CheckResult(name, False, str(exc)))

    attempt("storage", lambda: open_storage(server).check())
    if server.encryption == "gpg":
        attempt("encryption key", lambda: check_key(server))
        if not server.encryption_passphrase_command:
            results.append(CheckResult.skip("decryption", "no encryption_passphrase_command"))
    dirs = {
        "incoming_dir": server.incoming_dir,
        "streaming_dir": server.streaming_dir,
        "errors_dir": server.errors_dir,
    }
    for key, path in dirs.items():
        attempt(f"{key} writable", partial(_writable, path))
    status = server_status(catalog, server, with_postgres=False)
    gaps = status["gaps"]
    if status["archived"] and not status["wal_segment_size"]:
        results.append(CheckResult.skip("no gaps", "segment size not learned yet"))
    else:
        results.append(CheckResult("no gaps", not gaps, describe_gaps(gaps)))
    lost = lost_wals(catalog, server.name)
    if lost:  # only ever set by `walq catalog resync`: rows whose objects vanished mid-archive
        results.append(
            CheckResult(
                "no lost WALs", False, f"{len(lost)} lost (catalog resync), first {lost[0]}"
            )
        )
    failed = status["failed"]
    results.append(
        CheckResult(
            "no failed WALs",
            not failed,
            f"{len(failed)} failed, first {failed[0]['name']}: {failed[0]['error']}"
            if failed
            else "",
        )
    )
    if not config.effective_lock_url:  # the fleet's Redis lock expires with its holder
        _attempt_result(results, "archiver lock", lambda: archiver_lock_check(config, server))
    attempt("errors directory empty", lambda: _errors_dir_empty(server))
    results.extend(postgres_checks(server, catalog))
    results.extend(progress_checks(config, server, status, catalog.counts(server.name)))
    if config.fleet:
        results.extend(liveness_checks(liveness or fleet_liveness(config), server.worker_group))
    return results
