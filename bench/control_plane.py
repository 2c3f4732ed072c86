"""The control-plane row: what one archived WAL costs Redis, Celery and the catalog,
at 1, 20 and 200 servers, and what an idle scan tick costs per server.

    .venv/bin/python -m bench.control_plane [--servers 1 20 200] [--wal 200]

Per run: a private redis-server, a throwaway catalog database, the Procfile's
workers (prefork cpu + threads io), ``--wal`` real 1 MiB segments spread over the
servers (each server archives its share of the corpus), one scan per server.
Counts, not times: Redis commands (INFO commandstats, Lua's inner commands
included) and bytes in, Redis CPU seconds (INFO cpu), Celery tasks (worker logs),
catalog transactions (pg_stat_database of the catalog's own database, read after
the workers exit so every backend has reported). Then one idle scan per server
(walq.scan_server, as Flower applies it), and one idle tick of the group as beat
sends it (walq.scan_group: one message, no scan sent for an idle server).
Results: bench/results/control-plane-<time>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.services import CatalogDB
from tests.services.config_file import write_walq_config
from tests.services.control_plane import (
    catalog_backends,
    catalog_transactions,
    database_name,
    redis_counters,
    result_keys,
    tasks_finished,
    tasks_received,
)
from tests.services.fleet import ADMIN_URL, FAST, Fleet, RedisServer, celery_client
from tests.services.homes import xlogdb_names
from tests.services.pg import wait_for

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(rows: list[dict[str, object]], stem: str, out: Path | None = None) -> Path:
    """Write a run's rows as JSON (default bench/results/<stem>-<time>.json) and say where."""
    out = out or RESULTS / f"{stem}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"results: {out}")
    return out


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def make_corpus(root: Path, segments: int) -> tuple[Path, list[str]]:
    """Real 1 MiB segments from a throwaway cluster (tests/conftest.py's recipe)."""
    from tests.conftest import _make_corpus

    names, _ = _make_corpus(root, segments)
    return root / "archive", names


@contextlib.contextmanager
def private_services(workdir: Path) -> Iterator[tuple[RedisServer, str]]:
    """A private redis-server and a throwaway catalog database (its URL), both removed after."""
    redis = RedisServer(workdir / "redis").start()
    try:
        with CatalogDB(ADMIN_URL) as catalog:
            yield redis, catalog.url
    finally:
        redis.stop()


def fleet_config(
    workdir: Path,
    table: dict[str, dict[str, object]],
    redis: RedisServer,
    catalog_url: str,
    **overrides: object,
) -> Path:
    """walq.toml for the bench fleet: broker db 0, locks db 1, the tests' short timers."""
    return write_walq_config(
        workdir,
        table,
        broker_url=f"{redis.url}/0",
        lock_url=f"{redis.url}/1",
        catalog_url=catalog_url,
        **{**FAST, "claim_timeout": 20.0, **overrides},
    )


def procfile_workers(fleet: Fleet) -> None:
    """The Procfile's layout: CPU work on prefork ×2, scans and I/O work on 4 threads."""
    fleet.worker("cpu", concurrency=2, queues="walq.cpu")
    fleet.worker("io", pool="threads", concurrency=4, queues="walq.scan,walq.io")


def one_run(
    servers: int, total: int, corpus: Path, names: list[str], workdir: Path
) -> dict[str, object]:
    with private_services(workdir) as (redis, url):
        return _measure(servers, total, corpus, names, workdir, redis, url)


def _measure(
    servers: int,
    total: int,
    corpus: Path,
    names: list[str],
    workdir: Path,
    redis: RedisServer,
    url: str,
) -> dict[str, object]:
    """Each server gets total/servers consecutive segments of the corpus (servers are
    independent, so two may archive copies of the same segments)."""
    database = database_name(url)
    share = min(len(names), max(1, total // servers))
    table: dict[str, dict[str, object]] = {
        f"s{i:03d}": {"compression": "lz4"} for i in range(servers)
    }
    config = fleet_config(workdir, table, redis, url)
    home = workdir / "home"
    expected = 0
    for i, server in enumerate(table):
        incoming = home / server / "incoming"
        incoming.mkdir(parents=True)
        start = (i * share) % (len(names) - share + 1)
        for name in names[start : start + share]:
            shutil.copy2(corpus / name, incoming / name)
            expected += 1
    fleet = Fleet(config, workdir / "logs")
    try:
        procfile_workers(fleet)
        broker = redis.client(0)
        client = celery_client(config)
        xacts0, redis0, cpu0 = (
            catalog_transactions(ADMIN_URL, database),
            redis_counters(broker),
            redis_cpu(broker),
        )
        started = time.monotonic()
        for server in table:
            client.send_task("walq.scan_server", args=[server], ignore_result=True)

        def done() -> bool:
            archived = sum(len(xlogdb_names(home / s / "wals", s)) for s in table)
            logs = fleet.logs(tail=0)
            return archived == expected and sum(tasks_received(logs).values()) == sum(
                tasks_finished(logs).values()
            )

        wait_for(done, 1800, "the fleet to archive the corpus", 0.5)
        seconds = time.monotonic() - started
        used, cpu = redis_counters(broker) - redis0, redis_cpu(broker) - cpu0
        tasks = tasks_received(fleet.logs(tail=0))
        left = result_keys(broker)
        scans = tasks_finished(fleet.logs(tail=0))["walq.scan_server"]
        idle0 = redis_counters(broker)
        for server in table:
            client.send_task("walq.scan_server", args=[server], ignore_result=True)
        wait_for(
            lambda: tasks_finished(fleet.logs(tail=0))["walq.scan_server"] >= scans + servers,
            600,
            "the idle scans",
            0.5,
        )
        idle = redis_counters(broker) - idle0
        # What beat sends instead (walq.scan_group): one message for all the idle servers.
        ticks = tasks_finished(fleet.logs(tail=0))["walq.scan_group"]
        group0 = redis_counters(broker)
        client.send_task("walq.scan_group", args=["default"], ignore_result=True)
        wait_for(
            lambda: tasks_finished(fleet.logs(tail=0))["walq.scan_group"] > ticks,
            600,
            "the idle group tick",
            0.5,
        )
        group = redis_counters(broker) - group0
    finally:
        fleet.stop_all()
    wait_for(lambda: catalog_backends(ADMIN_URL, database) == 0, 120, "catalog backends to exit")
    xacts = catalog_transactions(ADMIN_URL, database) - xacts0
    return {
        "servers": servers,
        "wal": expected,
        "seconds": round(seconds, 1),
        "redis_commands_per_wal": round(used.commands / expected, 1),
        "redis_kib_in_per_wal": round(used.bytes_in / expected / 1024, 2),
        "redis_cpu_ms_per_wal": round(1000 * cpu / expected, 3),
        "celery_tasks_per_wal": round((sum(tasks.values()) - servers) / expected, 2),
        "catalog_transactions_per_wal": round(xacts / expected, 2),
        "result_keys_left": left,
        "idle_redis_commands_per_server_tick": round(idle.commands / servers, 1),
        "idle_group_tick_redis_commands": group.commands,
        "idle_group_tick_redis_commands_per_server": round(group.commands / servers, 2),
        "tasks": dict(tasks),
        "redis_by_command": dict(sorted(used.by_command.items(), key=lambda kv: -kv[1])),
        "idle_redis_by_command": dict(sorted(idle.by_command.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 20, 200])
    parser.add_argument("--wal", type=int, default=200, help="WAL archived per run, in total")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="walq-cp-"))
    root.chmod(0o755)
    try:
        corpus, names = make_corpus(root / "corpus", min(args.wal, 200))
        rows = []
        for servers in args.servers:
            row = one_run(servers, args.wal, corpus, names, Path(tempfile.mkdtemp(dir=root)))
            rows.append(row)
            shown = {k: v for k, v in row.items() if k not in ("tasks", "redis_by_command")}
            print(json.dumps(shown), flush=True)
        save_results(rows, "control-plane")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
