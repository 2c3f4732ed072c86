"""status and check: what an operator needs to know before a disaster.

status reports, per server, the watermark (highest WAL with nothing missing
below it), the last archived WAL and its age, gaps, failed WALs, what is still
queued in incoming/ and streaming/, and recent rates. check turns the same
facts into one OK/FAILED line per condition.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from walq.catalog import Catalog, WalState
from walq.config import Config, ServerConfig
from walq.continuity import continuity
from walq.errors import WalqError
from walq.fsutil import makedirs_durable, open_private
from walq.locks import FileLock, busy_holder, is_locked
from walq.storage import open_storage


def pending_files(directory: Path | None) -> list[Path]:
    if directory is None:
        return []
    try:
        return sorted(
            Path(e.path) for e in os.scandir(directory)
            if not e.name.startswith(".") and not e.name.endswith(".tmp")
        )
    except OSError:  # missing, not a directory, unreadable: check reports it, status goes on
        return []


def streaming_status(server: ServerConfig, with_postgres: bool = True) -> dict[str, object]:
    """The receiver's recorded state and, with a conninfo, PostgreSQL's view (slot, lag, archiver)."""
    from walq.postgres import PostgresError, fetch_info, slot_name
    from walq.receiver import receiver_state

    data: dict[str, object] = {"receiver": receiver_state(server)}
    if not (with_postgres and server.conninfo):
        return data
    try:
        info = fetch_info(server)
    except (PostgresError, WalqError) as exc:
        data["postgres"] = {"reachable": False, "error": str(exc)}
        return data
    slot = info.slot(slot_name(server))
    data["postgres"] = {
        "reachable": True,
        "version": info.version,
        "system_identifier": info.system_identifier,
        "current_lsn": info.current_lsn,
        "current_wal": info.current_wal,
        "archive_mode": info.archive_mode,
        "archiver_failed_count": info.archiver.failed_count,
        "archiver_last_failed_wal": info.archiver.last_failed_wal,
        "archiver_failing": info.archiver.failing,
        "slot": {"name": slot.name, "active": slot.active, "retained_bytes": slot.retained_bytes}
        if slot else None,
        "replication_lag_bytes": info.replication_lag_bytes,
    }
    return data


def server_status(
    catalog: Catalog, server: ServerConfig, now: float | None = None, with_postgres: bool = True
) -> dict[str, object]:
    now = now or time.time()
    archived = catalog.records(server.name, WalState.ARCHIVED)
    failed = catalog.records(server.name, WalState.FAILED)
    counts = catalog.counts(server.name)
    seg_size = int(catalog.get_meta(server.name, "wal_segment_size") or 0)
    cont = continuity([r.name for r in archived], seg_size) if seg_size and archived else None
    last = max(archived, key=lambda r: r.archived_at or 0, default=None)
    incoming = pending_files(server.incoming_dir)
    streaming = pending_files(server.streaming_dir)
    oldest = min((p.stat().st_mtime for p in incoming if p.exists()), default=None)
    return {
        "server": server.name,
        "watermark": cont.watermark if cont else None,
        "timelines": [
            {"tli": t.tli, "first": t.first, "last": t.last, "watermark": t.watermark, "segments": t.count}
            for t in (cont.timelines if cont else [])
        ],
        "last_archived": last.name if last else None,
        "last_archived_at": last.archived_at if last else None,
        "lag_seconds": round(now - oldest, 1) if oldest else 0.0,
        "gaps": [list(g) for g in (cont.gaps if cont else [])],
        "archived": counts.get("archived", 0),
        "claimed": counts.get("claimed", 0),
        "failed": [{"name": r.name, "error": r.last_error, "attempts": r.attempts} for r in failed],
        "queued": {"incoming": len(incoming), "streaming": len(streaming)},
        "errors_dir_files": len(pending_files(server.errors_dir)),
        "rates": {
            "last_minute": sum(1 for r in archived if (r.archived_at or 0) > now - 60),
            "last_hour": sum(1 for r in archived if (r.archived_at or 0) > now - 3600),
        },
        "system_identifier": catalog.get_meta(server.name, "system_identifier"),
        "wal_segment_size": seg_size or None,
        "storage_url": server.storage_url,
        **streaming_status(server, with_postgres),
    }


@dataclass(frozen=True)
class CheckResult:
    """One line of ``walq check``. A skipped check did not run: it is not OK, but not a failure either."""

    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False

    @classmethod
    def skip(cls, name: str, why: str) -> CheckResult:
        return cls(name, True, why, skipped=True)

    @property
    def status(self) -> str:
        return "SKIPPED" if self.skipped else "OK" if self.ok else "FAILED"


def _errors_dir_empty(server: ServerConfig) -> None:
    """Raises unless errors/ is empty or absent; an unreadable one is a failure, not "empty"."""
    assert server.errors_dir is not None
    try:
        names = [e.name for e in os.scandir(server.errors_dir)
                 if not e.name.startswith(".") and not e.name.endswith(".tmp")]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WalqError(f"cannot list {server.errors_dir}: {exc.strerror or exc}") from None
    if names:
        raise WalqError(f"{len(names)} file(s) in {server.errors_dir}")


def _writable(path: Path | None) -> None:
    assert path is not None
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


def attempt_result(results: list[CheckResult], name: str, fn: Callable[[], CheckResult]) -> None:
    try:
        results.append(fn())
    except OSError as exc:
        results.append(CheckResult(name, False, f"{exc.filename or ''}: {exc.strerror}"))


CheckFn = Callable[[Config, ServerConfig, Catalog], "CheckResult | list[CheckResult]"]
EXTRA_CHECKS: list[CheckFn] = []  # PostgreSQL-side checks register here (walq.postgres)


def describe_gaps(gaps: list[list[str]], shown: int = 3) -> str:
    """'2 gap(s): A..B, C' for a check line (a one-segment gap is its name alone)."""
    if not gaps:
        return ""
    ranges = [start if start == end else f"{start}..{end}" for start, end in gaps[:shown]]
    more = f", and {len(gaps) - shown} more" if len(gaps) > shown else ""
    return f"{len(gaps)} gap(s): {', '.join(ranges)}{more}"


def run_checks(config: Config, server: ServerConfig, catalog: Catalog) -> list[CheckResult]:
    results: list[CheckResult] = []

    def attempt(name: str, fn: Callable[[], object]) -> None:
        try:
            detail = fn()
            results.append(CheckResult(name, True, detail if isinstance(detail, str) else ""))
        except (WalqError, OSError) as exc:
            results.append(CheckResult(name, False, str(exc)))

    attempt("storage", lambda: open_storage(server).check())
    if server.encryption == "gpg":
        from walq.crypto import check_key

        attempt("encryption key", lambda: check_key(server))
        if not server.encryption_passphrase_command:
            results.append(CheckResult.skip("decryption", "no encryption_passphrase_command"))
    for key in ("incoming_dir", "streaming_dir", "errors_dir"):
        attempt(f"{key} writable", lambda k=key: _writable(getattr(server, k)))
    status = server_status(catalog, server, with_postgres=False)
    gaps = status["gaps"]
    if status["archived"] and not status["wal_segment_size"]:
        results.append(CheckResult.skip("no gaps", "segment size not learned yet"))
    else:
        results.append(CheckResult("no gaps", not gaps, describe_gaps(gaps)))
    failed = status["failed"]
    results.append(CheckResult(
        "no failed WALs", not failed,
        f"{len(failed)} failed, first {failed[0]['name']}: {failed[0]['error']}" if failed else "",
    ))
    if not config.effective_lock_url:  # the fleet's Redis lock expires with its holder
        attempt_result(results, "archiver lock", lambda: archiver_lock_check(config, server))
    attempt("errors directory empty", lambda: _errors_dir_empty(server))
    import walq.pgchecks  # noqa: F401  (registers the PostgreSQL-side checks on first use)

    for extra in EXTRA_CHECKS:
        found = extra(config, server, catalog)
        results.extend(found if isinstance(found, list) else [found])
    return results
