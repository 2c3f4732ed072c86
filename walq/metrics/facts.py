"""What a metrics scrape knows about each server, gathered cheaply (no prometheus_client here).

Per server and per scrape: one aggregate catalog query (``Catalog.summary``), the
per-state counts, the listings of incoming/ and streaming/ (walq.report.progress's
``waiting``) and of errors/. Never a storage listing, never a storage client: a scrape
of an S3-backed server sends S3 nothing.

Gaps and the retention window need the archived names (one row per WAL). They change
only when a WAL is archived or expired, so ``ContinuityCache`` recomputes them only
when the summary's fingerprint (WALs ever archived, rows archived and expired, newest
archive time) moves: an exporter that is scraped every 15 s reads them once per new WAL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from walq.archive.identity import known_segment_size
from walq.catalog import Catalog, WalState
from walq.catalog.base import ArchiveSummary
from walq.config import Config, ServerConfig
from walq.fleet.liveness import Liveness, read_liveness
from walq.report.continuity import continuity
from walq.report.progress import Waiting, waiting
from walq.report.status import list_pending
from walq.wal import WalKind, WalNameError, parse_wal_name


@dataclass(frozen=True)
class RetentionFacts:
    """The restorable window of a server with a retention_policy (walq.report.retention's
    rules): oldest = the oldest archived .backup whose start segment is still archived."""

    base_backups: int
    oldest_restorable: float | None  # the .backup file's mtime (when the backup started)
    newest_restorable: float | None  # when the watermark segment was archived


@dataclass(frozen=True)
class Derived:
    """What needs the archived names: recomputed only when the fingerprint changes."""

    gaps: int | None  # None while the segment size is unknown
    retention: RetentionFacts | None


@dataclass(frozen=True)
class ServerFacts:
    server: str
    summary: ArchiveSummary
    counts: dict[str, int]
    waiting: Waiting | None  # None: incoming/ or streaming/ could not be listed
    errors_dir_files: int | None
    derived: Derived
    problems: tuple[str, ...] = ()  # parts that could not be read (counted, not raised)


def _is_backup(name: str) -> bool:
    try:
        return parse_wal_name(name).kind is WalKind.BACKUP
    except WalNameError:
        return False


def _retention(
    catalog: Catalog, server: ServerConfig, names: list[str], watermark: str | None
) -> RetentionFacts:
    present = set(names)
    backups = sorted(n for n in names if _is_backup(n))
    usable = [b for b in backups if b[:24] in present]
    oldest = catalog.get(server.name, usable[0]) if usable else None
    newest = catalog.get(server.name, watermark) if watermark else None
    return RetentionFacts(
        len(backups),
        oldest.mtime if oldest else None,
        newest.archived_at if newest else None,
    )


def derive(catalog: Catalog, server: ServerConfig) -> Derived:
    names = catalog.archived_names(server.name)
    seg_size = known_segment_size(catalog, server)
    cont = continuity(names, seg_size) if seg_size and names else None
    gaps = len(cont.gaps) if cont else (0 if not names else None)
    retention = (
        _retention(catalog, server, names, cont.watermark if cont else None)
        if server.retention_policy
        else None
    )
    return Derived(gaps, retention)


@dataclass
class ContinuityCache:
    """Derived facts per server, kept while the server's fingerprint stays the same."""

    entries: dict[str, tuple[tuple[object, ...], Derived]] = field(default_factory=dict)

    def get(
        self, catalog: Catalog, server: ServerConfig, fingerprint: tuple[object, ...]
    ) -> Derived:
        cached = self.entries.get(server.name)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        derived = derive(catalog, server)
        self.entries[server.name] = (fingerprint, derived)
        return derived


def _count_errors_dir(server: ServerConfig) -> int | None:
    try:
        return len(list_pending(server.errors_dir))
    except FileNotFoundError:
        return 0
    except OSError:
        return None


def server_facts(
    catalog: Catalog, server: ServerConfig, cache: ContinuityCache | None = None
) -> ServerFacts:
    problems: list[str] = []
    summary = catalog.summary(server.name)
    counts = catalog.counts(server.name)
    fingerprint = (
        summary.wals,
        counts.get(WalState.ARCHIVED, 0),
        counts.get(WalState.EXPIRED, 0),
        summary.newest_archived_at,
        server.retention_policy,
    )
    derived = (cache or ContinuityCache()).get(catalog, server, fingerprint)
    queue: Waiting | None
    try:
        queue = waiting(server)
    except OSError:
        queue = None
        problems.append("waiting")
    errors = _count_errors_dir(server)
    if errors is None:
        problems.append("errors_dir")
    return ServerFacts(server.name, summary, counts, queue, errors, derived, tuple(problems))


@dataclass(frozen=True)
class FleetFacts:
    """The fleet's Redis side: queue depths (LLEN), task outcomes per
    stage and the liveness heartbeats. None where Redis could not be read."""

    queues: dict[str, int] | None
    outcomes: dict[tuple[str, str, str], int] | None
    liveness: Liveness | None


def fleet_facts(config: Config) -> FleetFacts:
    import redis  # only fleets reach here

    from walq.fleet.outcomes import read_outcomes
    from walq.fleet.queues import queue_depths

    queues = outcomes = live = None
    timeouts = {"socket_timeout": 5, "socket_connect_timeout": 5}
    if config.broker_url:
        try:
            broker = redis.Redis.from_url(config.broker_url, **timeouts)
            with broker:
                queues = queue_depths(broker)
        except redis.RedisError:
            pass
    if config.effective_lock_url:
        try:
            walq_redis = redis.Redis.from_url(config.effective_lock_url, **timeouts)
            with walq_redis:
                outcomes = read_outcomes(walq_redis)
                live = read_liveness(walq_redis, config.liveness_maximum)
        except redis.RedisError:
            pass
    return FleetFacts(queues, outcomes, live)
