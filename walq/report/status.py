"""status: what an operator needs to know before a disaster.

status reports, per server, the watermark (highest WAL with nothing missing
below it), the last archived WAL and its age, gaps, failed WALs, what is still
queued in incoming/ and streaming/, and recent rates. ``walq check`` turns the
same facts into one OK/FAILED line per condition (walq.report.checks).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

from walq.archive.identity import known_segment_size
from walq.catalog import Catalog, WalState
from walq.config import ServerConfig
from walq.errors import WalqError
from walq.postgres.client import PostgresError, fetch_info, slot_name
from walq.postgres.receiver import ReceiverState, application_name, receiver_state
from walq.postgres.syncrep import SyncView, sync_view
from walq.report.continuity import continuity
from walq.report.retention import RetentionWindow, retention_window
from walq.report.waiting import list_pending, waiting

# The shapes below are ``walq status --json`` (keys in output order); cli.py prints from them.


class TimelineStatus(TypedDict):
    tli: int
    first: str
    last: str
    watermark: str
    segments: int


class FailedWal(TypedDict):
    name: str
    error: str | None
    attempts: int


class QueuedCounts(TypedDict):
    incoming: int
    streaming: int


class ArchiveRates(TypedDict):
    last_minute: int
    last_hour: int


class SlotStatus(TypedDict):
    name: str
    active: bool
    retained_bytes: int | None


class PostgresUnreachable(TypedDict):
    reachable: Literal[False]
    error: str


class PostgresView(TypedDict):
    reachable: Literal[True]
    version: str
    system_identifier: int
    current_lsn: str
    current_wal: str | None
    archive_mode: str
    archiver_failed_count: int
    archiver_last_failed_wal: str | None
    archiver_failing: bool
    slot: SlotStatus | None
    replication_lag_bytes: int | None
    synchronous: SyncView


class StreamingStatus(TypedDict):
    receiver: ReceiverState
    postgres: NotRequired[PostgresView | PostgresUnreachable]  # only with a conninfo


class ServerStatus(StreamingStatus):
    server: str
    watermark: str | None
    timelines: list[TimelineStatus]
    last_archived: str | None
    last_archived_at: float | None  # epoch seconds here; ISO 8601 in --json (walq.report.jsontime)
    lag_seconds: float | None  # None: incoming/ or streaming/ could not be listed
    oldest_waiting_since: float | None
    gaps: list[list[str]]
    archived: int
    claimed: int
    failed: list[FailedWal]
    queued: QueuedCounts
    errors_dir_files: int
    rates: ArchiveRates
    system_identifier: str | None
    wal_segment_size: int | None
    storage_url: str | None
    retention: NotRequired[RetentionWindow]  # with home: status shows it, check does not


def pending_files(directory: Path | None) -> list[Path]:
    if directory is None:
        return []
    try:
        return list_pending(directory)
    except OSError:  # missing, not a directory, unreadable: check reports it, status goes on
        return []


def streaming_status(server: ServerConfig, with_postgres: bool = True) -> StreamingStatus:
    """The receiver's recorded state and, with a conninfo, PostgreSQL's view (slot, lag, archiver)."""
    receiver = receiver_state(server)
    data: StreamingStatus = {"receiver": receiver}
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
        if slot
        else None,
        "replication_lag_bytes": info.replication_lag_bytes,
        "synchronous": sync_view(
            application_name(server),
            info.synchronous_standby_names,
            info.receiver_sync_state,
            info.receiver_sync_priority,
            receiver["synchronous"],
        ),
    }
    return data


def server_status(
    catalog: Catalog,
    server: ServerConfig,
    now: float | None = None,
    with_postgres: bool = True,
    home: Path | None = None,
) -> ServerStatus:
    """One server's status. With ``home`` (walq's, where a sharing Barman keeps its
    backup.info files) it includes the retention window, whose base backups are read
    back from storage; `walq check` does without, to stay cheap."""
    now = now or time.time()
    archived = catalog.records(server.name, WalState.ARCHIVED)
    failed = catalog.records(server.name, WalState.FAILED)
    counts = catalog.counts(server.name)
    seg_size = known_segment_size(catalog, server)
    cont = continuity([r.name for r in archived], seg_size) if seg_size and archived else None
    last = max(archived, key=lambda r: r.archived_at or 0, default=None)
    incoming = pending_files(server.incoming_dir)
    streaming = pending_files(server.streaming_dir)
    try:  # the same measure as check's ``archiver progress`` (walq.report.waiting)
        queue = waiting(server)
        lag: float | None = round(queue.lag(now), 1)
        oldest = queue.oldest_since
    except OSError:  # check reports the unlistable directory; status goes on
        lag = oldest = None
    status: ServerStatus = {
        "server": server.name,
        "watermark": cont.watermark if cont else None,
        "timelines": [
            {
                "tli": t.tli,
                "first": t.first,
                "last": t.last,
                "watermark": t.watermark,
                "segments": t.count,
            }
            for t in (cont.timelines if cont else [])
        ],
        "last_archived": last.name if last else None,
        "last_archived_at": last.archived_at if last else None,
        "lag_seconds": lag,
        "oldest_waiting_since": oldest,
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
        "wal_segment_size": seg_size,
        "storage_url": server.storage_url,
        **streaming_status(server, with_postgres),
    }
    if home is not None:
        status["retention"] = retention_window(
            home,
            server,
            archived,
            cont.watermark if cont else None,
            counts.get("expired", 0),
            seg_size,
        )
    return status
