"""walq's Prometheus metrics: a custom collector that computes everything on scrape.

The only module besides walq.metrics.serve that imports prometheus_client; neither is
imported by put-wal, get-wal or the archiving paths. Names, types and labels are
documented in docs/metrics.md (tests/test_metrics.py keeps the two in step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from walq import keys
from walq.catalog import Catalog, WalState, open_catalog
from walq.catalog.base import DURATION_BUCKETS, ArchiveSummary
from walq.config import Config, ServerConfig
from walq.metrics.facts import (
    ContinuityCache,
    Derived,
    FleetFacts,
    ServerFacts,
    fleet_facts,
    server_facts,
)
from walq.report.progress import Waiting, waiting

SERVER = ["server"]


class CatalogSource:
    """The catalog a collector reads, opened on first need and kept (an exporter reuses its
    PostgreSQL pool). An embedded catalog is opened read-only: a scrape never creates it,
    and until ``walq archive`` has created it every server simply has nothing archived."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog: Catalog | None = None

    def get(self) -> Catalog | None:
        if self.catalog is None:
            if not self.config.catalog_url and not self.config.catalog_path.exists():
                return None
            self.catalog = open_catalog(self.config, readonly=not self.config.catalog_url)
        return self.catalog

    def reset(self) -> None:
        """After an error: a SQLite handle is reopened; a PostgreSQL pool heals itself."""
        if self.catalog is not None and not self.config.catalog_url:
            self.catalog.close()
            self.catalog = None

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None


class _Families:
    """The per-server families of one scrape, filled server by server."""

    def __init__(self) -> None:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=SERVER)

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=SERVER)

        self.archived = counter("walq_archived_wals", "WAL files ever archived (incl. expired)")
        self.bytes = counter("walq_archived_bytes", "Plain bytes of the WAL files ever archived")
        self.stored = counter("walq_archived_stored_bytes", "Bytes stored (compressed, encrypted)")
        self.expired = counter("walq_expired_wals", "WAL files retention expired")
        self.failed = gauge("walq_failed_wals", "WAL files parked as failed now (retry clears)")
        self.claimed = gauge("walq_claimed_wals", "WAL files being worked on (claimed rows)")
        self.last_ts = gauge(
            "walq_last_archived_timestamp_seconds", "When the newest WAL was archived (Unix time)"
        )
        self.last_age = gauge(
            "walq_last_archived_age_seconds", "Seconds since the newest WAL was archived"
        )
        self.waiting = gauge("walq_waiting_files", "Files waiting in incoming/ and streaming/")
        self.oldest = gauge(
            "walq_oldest_waiting_age_seconds", "How long the oldest waiting file has waited"
        )
        self.errors_dir = gauge("walq_errors_dir_files", "Files parked in errors/")
        self.gaps = gauge("walq_gaps", "Holes in the archived WAL sequence, all timelines")
        self.durations = HistogramMetricFamily(
            "walq_archive_duration_seconds",
            "Seconds spent archiving each WAL (prepare + store, as the catalog records them)",
            labels=SERVER,
        )
        self.backups = gauge("walq_retention_base_backups", "Base backups known (.backup files)")
        self.oldest_point = gauge(
            "walq_retention_oldest_restorable_timestamp_seconds",
            "Start of the oldest base backup whose WAL is still archived (Unix time)",
        )
        self.newest_point = gauge(
            "walq_retention_newest_restorable_timestamp_seconds",
            "When the watermark segment (newest restorable point) was archived (Unix time)",
        )
        self.window = gauge(
            "walq_retention_window_seconds", "Newest minus oldest restorable point, in seconds"
        )
        self.problems = gauge(
            "walq_collect_errors", "Parts of this scrape that could not be read (0 when all)"
        )

    def add(self, facts: ServerFacts, now: float) -> None:
        label = [facts.server]
        s = facts.summary
        self.archived.add_metric(label, s.wals)
        self.bytes.add_metric(label, s.size)
        self.stored.add_metric(label, s.stored_size)
        self.expired.add_metric(label, facts.counts.get(WalState.EXPIRED, 0))
        self.failed.add_metric(label, facts.counts.get(WalState.FAILED, 0))
        self.claimed.add_metric(label, facts.counts.get(WalState.CLAIMED, 0))
        if s.newest_archived_at is not None:
            self.last_ts.add_metric(label, s.newest_archived_at)
            self.last_age.add_metric(label, max(now - s.newest_archived_at, 0.0))
        if facts.waiting is not None:
            self.waiting.add_metric(label, facts.waiting.count)
            since = facts.waiting.oldest_since
            self.oldest.add_metric(label, 0.0 if since is None else max(now - since, 0.0))
        if facts.errors_dir_files is not None:
            self.errors_dir.add_metric(label, facts.errors_dir_files)
        if facts.derived.gaps is not None:
            self.gaps.add_metric(label, facts.derived.gaps)
        buckets = [(repr(b), n) for b, n in zip(DURATION_BUCKETS, s.duration_buckets, strict=True)]
        self.durations.add_metric(label, [*buckets, ("+Inf", s.wals)], s.duration_sum)
        ret = facts.derived.retention
        if ret is not None:
            self.backups.add_metric(label, ret.base_backups)
            if ret.oldest_restorable is not None:
                self.oldest_point.add_metric(label, ret.oldest_restorable)
            if ret.newest_restorable is not None:
                self.newest_point.add_metric(label, ret.newest_restorable)
            if ret.oldest_restorable is not None and ret.newest_restorable is not None:
                self.window.add_metric(label, ret.newest_restorable - ret.oldest_restorable)

    def all(self) -> list[Metric]:
        """The families with samples (a server without retention has no retention lines)."""
        return [v for v in vars(self).values() if isinstance(v, Metric) and v.samples]


def fleet_metrics(facts: FleetFacts) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "walq_redis_up", "1 when the scrape could read this Redis", labels=["role"]
    )
    up.add_metric(["broker"], 0 if facts.queues is None else 1)
    up.add_metric(["lock"], 0 if facts.liveness is None else 1)
    yield up
    if facts.queues is not None:
        depth = GaugeMetricFamily(
            "walq_queue_messages", "Messages waiting in a Celery queue (LLEN)", labels=["queue"]
        )
        for queue, n in sorted(facts.queues.items()):
            depth.add_metric([queue], n)
        yield depth
    if facts.outcomes is not None:
        outcomes = CounterMetricFamily(
            "walq_task_outcomes",
            "Stage runs by outcome (ok, retry, wait, skipped, failed, refused)",
            labels=["server", "stage", "outcome"],
        )
        for labels, n in sorted(facts.outcomes.items()):
            outcomes.add_metric(list(labels), n)
        yield outcomes
    live = facts.liveness
    if live is not None:
        workers = GaugeMetricFamily(
            "walq_live_workers",
            "Workers with a fresh heartbeat consuming a queue",
            labels=["queue"],
        )
        for queue in keys.QUEUES:
            workers.add_metric([queue], len(live.consumers(queue)))
        yield workers
        age = live.beat_age()
        if age is not None:
            yield GaugeMetricFamily(
                "walq_beat_last_tick_age_seconds", "Seconds since beat's last tick", value=age
            )


class WalqCollector(Collector):
    """Computes every metric on scrape, from the catalog, the directories and (fleet) Redis."""

    def __init__(
        self,
        config: Config,
        servers: list[ServerConfig],
        source: CatalogSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.servers = servers
        self.source = source
        self.cache = ContinuityCache()
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        now = self.clock()
        for server in self.servers:
            try:
                catalog = self.source.get()
                facts = (
                    server_facts(catalog, server, self.cache)
                    if catalog is not None
                    else _nothing_archived(server)
                )
            except Exception:  # an unreadable server is counted in walq_collect_errors, never fatal
                self.source.reset()
                families.problems.add_metric([server.name], 1)
                continue
            families.add(facts, now)
            families.problems.add_metric([server.name], len(facts.problems))
        yield from families.all()
        if self.config.fleet:
            yield from fleet_metrics(fleet_facts(self.config))


def _nothing_archived(server: ServerConfig) -> ServerFacts:
    """Facts for an embedded home whose catalog does not exist yet."""
    queue: Waiting | None
    try:
        queue = waiting(server)
    except OSError:
        queue = None
    empty = ArchiveSummary(0, 0, 0, None, 0.0, (0,) * len(DURATION_BUCKETS))
    return ServerFacts(server.name, empty, {}, queue, 0, Derived(0, None))


def make_registry(collector: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
