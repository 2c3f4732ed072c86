"""Meters for the fleet's control plane: what archiving costs Redis, Celery and the catalog.

Counts, not times, so they hold on a loaded machine: Redis commands from INFO
commandstats (commands run inside Lua scripts included) and bytes in, Celery
tasks from the workers' logs, catalog transactions from pg_stat_database of the
catalog's own database (read from another database, so reading adds nothing).
Used by tests/test_control_plane.py and the control-plane bench row.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import psycopg
import redis

RECEIVED = re.compile(r"Task (walq\.\w+)\[[^\]]+\] received")
FINISHED = re.compile(r"Task (walq\.\w+)\[[^\]]+\] (?:succeeded|raised|retry|ignored)")


@dataclass(frozen=True)
class RedisCounters:
    commands: int
    bytes_in: int
    by_command: dict[str, int]

    def __sub__(self, other: RedisCounters) -> RedisCounters:
        keys = set(self.by_command) | set(other.by_command)
        diff = {k: self.by_command.get(k, 0) - other.by_command.get(k, 0) for k in keys}
        return RedisCounters(
            self.commands - other.commands,
            self.bytes_in - other.bytes_in,
            {k: v for k, v in diff.items() if v},
        )


def redis_counters(client: redis.Redis) -> RedisCounters:
    """Every command the server ran so far (INFO commandstats counts calls inside EVAL too)."""
    stats = client.info("commandstats")
    by_command = {
        name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
    }
    bytes_in = int(client.info("stats")["total_net_input_bytes"])
    return RedisCounters(sum(by_command.values()), bytes_in, by_command)


def result_keys(client: redis.Redis) -> int:
    """Celery result-backend keys left in the broker's database."""
    return sum(1 for _ in client.scan_iter(match="celery-task-meta-*", count=1000))


def database_name(url: str) -> str:
    """The database a libpq URL names (the part after the last slash, before any '?')."""
    return url.split("?", 1)[0].rsplit("/", 1)[1]


def catalog_transactions(admin_url: str, database: str) -> int:
    """Committed plus rolled-back transactions of ``database`` so far, as its backends
    reported them (a backend reports at the latest when it exits)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def catalog_backends(admin_url: str, database: str) -> int:
    """Connections open to ``database`` (its transactions are counted once they close)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


def tasks_received(logs: str) -> Counter[str]:
    """Celery tasks the workers received, by task name (from their INFO logs)."""
    return Counter(RECEIVED.findall(logs))


def tasks_finished(logs: str) -> Counter[str]:
    return Counter(FINISHED.findall(logs))


@dataclass(frozen=True)
class PerWal:
    """One run's control-plane cost divided by the WAL it archived."""

    wals: int
    redis_commands: float
    redis_bytes: float
    celery_tasks: float
    catalog_transactions: float
    result_keys: int

    def line(self) -> str:
        return (
            f"{self.wals} WAL: {self.redis_commands:.1f} Redis commands, "
            f"{self.redis_bytes / 1024:.1f} KiB in, {self.celery_tasks:.2f} Celery tasks, "
            f"{self.catalog_transactions:.2f} catalog transactions per WAL; "
            f"{self.result_keys} result keys left"
        )
