"""What archiving one WAL costs the fleet's control plane, pinned with bounds.

A real fleet laid out like the Procfile (a prefork worker for scans and CPU work, a
thread-pool worker for I/O), its own redis-server (so nothing else's commands are
counted) and its own catalog database (pg_stat_database counts only its
transactions). Counts, not times: Redis commands (INFO commandstats, Lua's inner
commands included) and bytes, Celery tasks, catalog transactions, result keys left.
Issue 15's targets: <= 20 Redis commands and <= 3 catalog transactions per WAL,
no result keys, <= 12 Redis commands per server per idle scan tick.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.services.control_plane import (
    PerWal,
    catalog_backends,
    catalog_transactions,
    redis_counters,
    result_keys,
    tasks_finished,
    tasks_received,
)
from tests.services.fleet import (
    ADMIN_URL,
    assert_archived_once,
    celery_client,
    fleet_settings,
    pending,
)
from tests.services.homes import xlogdb_names
from tests.services.pg import wait_for
from walq.catalog import open_catalog

IDLE_TICKS = 10
WARM_UP = 2  # WALs archived before the measured batch (which is the rest of the corpus)


@pytest.fixture
def private_catalog() -> Iterator[tuple[str, str]]:
    """A database of this test's own: (its URL, its name), dropped afterwards."""
    name = f"walq_cp_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name, name
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _all_done(fleet, task: str | None = None, count: int = 0) -> bool:
    logs = fleet.logs(tail=0)
    received, finished = tasks_received(logs), tasks_finished(logs)
    if task is not None and finished[task] < count:
        return False
    return sum(received.values()) == sum(finished.values())


def _wait_archived(fleet, home, names: list[str]) -> None:
    try:
        wait_for(
            lambda: (
                len(xlogdb_names(home.wals())) == len(names)
                and not pending(home.incoming())
                and _all_done(fleet)
            ),
            240,
            "the fleet to archive the batch",
            0.2,
        )
    except TimeoutError:
        raise AssertionError(fleet.logs()) from None


def test_control_plane_cost_per_wal_and_per_idle_tick(
    make_home, redis_server, private_catalog, wal_corpus, fleet_factory, workdir: Path
) -> None:
    catalog_url, database = private_catalog
    # claim_timeout 20: a WAL stored ahead of an earlier one waits at most 10 s for it
    home = make_home(
        {"pg1": {}}, **fleet_settings(redis_server.url, catalog_url, claim_timeout=20.0)
    )
    fleet = fleet_factory(home.config_path)
    broker = redis_server.client(0)
    client = celery_client(home.config_path)
    # Warm-up: the server's identity is learned and its directories made by a first
    # batch, under workers that then exit (so pg_stat_database has their transactions).
    # What follows is steady state: new workers (their start-up counted), a known server.
    fleet.worker("warm-cpu", concurrency=2, queues="walq.scan,walq.cpu")
    fleet.worker("warm-io", pool="threads", concurrency=4, queues="walq.io")
    warm = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:WARM_UP])
    client.send_task("walq.scan_server", args=["pg1"], ignore_result=True)
    _wait_archived(fleet, home, warm)
    fleet.stop_all()
    wait_for(lambda: catalog_backends(ADMIN_URL, database) == 0, 60, "catalog backends to exit")
    tasks_before = tasks_received(fleet.logs(tail=0))

    fleet.worker("cpu", concurrency=2, queues="walq.scan,walq.cpu")
    fleet.worker("io", pool="threads", concurrency=4, queues="walq.io")
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[WARM_UP:])

    xacts_before = catalog_transactions(ADMIN_URL, database)
    redis_before = redis_counters(broker)
    client.send_task("walq.scan_server", args=["pg1"], ignore_result=True)
    _wait_archived(fleet, home, warm + names)
    redis_used = redis_counters(broker) - redis_before
    left = result_keys(broker)
    tasks = tasks_received(fleet.logs(tail=0)) - tasks_before

    # Idle: scans of a server with nothing new, one per beat tick.
    scans_before = tasks_finished(fleet.logs(tail=0))["walq.scan_server"]
    idle_before = redis_counters(broker)
    for _ in range(IDLE_TICKS):
        client.send_task("walq.scan_server", args=["pg1"], ignore_result=True)
    wait_for(
        lambda: _all_done(fleet, "walq.scan_server", scans_before + IDLE_TICKS),
        120,
        "the idle scans",
        0.2,
    )
    idle_used = redis_counters(broker) - idle_before

    fleet.stop_all()  # a backend reports its transactions when it exits
    wait_for(lambda: catalog_backends(ADMIN_URL, database) == 0, 60, "catalog backends to exit")
    xacts = catalog_transactions(ADMIN_URL, database) - xacts_before

    n = len(names)
    cost = PerWal(
        wals=n,
        redis_commands=redis_used.commands / n,
        redis_bytes=redis_used.bytes_in / n,
        celery_tasks=(sum(tasks.values()) - 1) / n,
        catalog_transactions=xacts / n,
        result_keys=left,
    )
    idle_per_tick = idle_used.commands / IDLE_TICKS
    print(f"\ncontrol plane: {cost.line()}")
    print(f"tasks: {dict(tasks)}")
    print(f"redis by command: {sorted(redis_used.by_command.items(), key=lambda kv: -kv[1])}")
    print(f"idle scan tick: {idle_per_tick:.1f} Redis commands {idle_used.by_command}")

    catalog = open_catalog(home.config)
    try:
        assert_archived_once(home, catalog, warm + names)
    finally:
        catalog.close()
    # Measured on this machine (40 WAL after a 2-WAL warm-up, one server): ~10 Redis
    # commands, ~5 KiB, ~2.05 Celery tasks, ~3.1 catalog transactions per WAL (2 per WAL:
    # store's guard read and its stored mark; one claim_many for the scan, 1 per commit
    # batch; ~1 per WAL of the new workers' start-up: connections, migrate, identity
    # reads); ~3.3 commands per idle tick. Redis per WAL: LPUSH + BRPOP per Celery
    # message (kombu's ack emulation is off, workers/app.py), one HINCRBY per stage run
    # (walq_task_outcomes_total), store's SET NX asking for the commit, and shares of the
    # scan's and the group commit's. With ack emulation on: ~27 per WAL and ~11 per idle
    # tick (7 more commands per message: MULTI ZADD HSET EXEC, MULTI ZREM HDEL EXEC).
    # Before issue 15: 113, 55 KiB, 4, 12, 161 result keys, 32.6. The per-WAL bounds fail
    # a change that doubles them (the Redis bound also fails if ack emulation comes back;
    # the catalog bound if a claim or a read per WAL comes back); the idle bound leaves
    # room for the workers' own polling and fails if ack emulation comes back.
    assert left == 0, "walq's tasks leave no result keys"
    assert cost.redis_commands <= 20
    assert cost.redis_bytes <= 8 * 1024
    assert cost.celery_tasks <= 2.6
    assert cost.catalog_transactions <= 4
    assert idle_per_tick <= 8
