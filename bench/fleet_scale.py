"""Many servers, sustained (issue 15): one fleet archiving WAL that arrives on all of
its servers at once, for minutes, and the load it puts on Redis and the catalog.

    .venv/bin/python -m bench.fleet_scale [--servers 200] [--rate 30 …] [--seconds 180]
        [--scan-interval 2] [--codec none|lz4]

Per rate: a private redis-server, a throwaway catalog database, the Procfile's
workers (prefork cpu ×2, 4-thread io, beat), all from bench/control_plane.py.
Real 1 MiB segments (a throwaway ``initdb --wal-segsize=1`` cluster) arrive at
``--rate`` per second in total, round-robin over the servers, each server's names
increasing, each published atomically (bench/lag.py). Archive lag is a file's
appearance in incoming/ to its removal after the commit. Every ``--sample``
seconds: WAL archived, Redis commands and CPU (INFO commandstats, INFO cpu),
catalog transactions and row writes (pg_stat_database; pg_stat_statements' writes
when the server preloads it). Totals are read after the workers exit.
Results: bench/results/fleet-scale-<time>.json and one line per rate on stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench.control_plane import (
    fleet_config,
    make_corpus,
    private_services,
    procfile_workers,
    redis_cpu,
    save_results,
)
from bench.lag import Key, LagWatcher, percentile
from bench.services import group_cpu_seconds
from tests.services.control_plane import (
    catalog_backends,
    database_name,
    redis_counters,
    tasks_received,
)
from tests.services.fleet import ADMIN_URL, Fleet
from tests.services.pg import wait_for


def plan_feed(servers: list[str], names: list[str], total: int) -> list[tuple[str, str]]:
    """The k-th file goes to server k mod n and is that server's (k div n)-th segment."""
    if total > len(servers) * len(names):
        raise ValueError(f"{total} WAL need {math.ceil(total / len(servers))} segments per server")
    return [(servers[k % len(servers)], names[k // len(servers)]) for k in range(total)]


def catalog_writes(admin_url: str, database: str) -> dict[str, int]:
    """Transactions and rows written so far in ``database`` (pg_stat_database)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted"
            " FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return {"transactions": int(row[0]), "rows_written": int(row[1])} if row else {}


def statement_writes(catalog_url: str) -> int | None:
    """Calls of statements that wrote WAL (inserts, updates, claims) in the catalog database
    over its life, when pg_stat_statements is loaded (shared_preload_libraries); else None."""
    try:
        with psycopg.connect(catalog_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = current_database() AND s.wal_records > 0"
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


class Sampler:
    """Every ``period`` seconds: WAL archived, Redis counters and CPU, catalog counters."""

    def __init__(self, period: float, probe) -> None:
        self.period = period
        self.probe = probe
        self.series: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.series.append(self.probe())

    def __enter__(self) -> Sampler:
        self.series.append(self.probe())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.series.append(self.probe())


def _rates(series: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per-interval rates from cumulative samples (catalog ones lag by up to a second or
    so: backends report their counters at most once a second while busy)."""
    out = []
    for a, b in zip(series, series[1:], strict=False):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        out.append(
            {
                "t": round(b["t"], 1),
                "fed_per_s": round((b["fed"] - a["fed"]) / dt, 1),
                "wal_per_s": round((b["archived"] - a["archived"]) / dt, 1),
                "waiting": int(b["waiting"]),
                "redis_commands_per_s": round((b["redis_commands"] - a["redis_commands"]) / dt),
                "redis_cpu_pct": round(100 * (b["redis_cpu"] - a["redis_cpu"]) / dt, 1),
                "catalog_transactions_per_s": round(
                    (b["catalog_transactions"] - a["catalog_transactions"]) / dt
                ),
                "load1": b["load1"],
            }
        )
    return out


def run(
    servers: int,
    rate: float,
    seconds: float,
    corpus: Path,
    names: list[str],
    workdir: Path,
    *,
    scan_interval: float = 2.0,
    codec: str = "none",
    drain: float = 180.0,
    sample: float = 5.0,
    poll: float = 0.05,
) -> dict[str, object]:
    """One sustained run at ``rate`` WAL/s over ``servers`` servers for ``seconds``."""
    table: dict[str, dict[str, object]] = {
        f"s{i:03d}": {"compression": codec} for i in range(servers)
    }
    total = int(rate * seconds)
    plan = plan_feed(list(table), names, total)
    with private_services(workdir) as (redis, url):
        config = fleet_config(workdir, table, redis, url, scan_interval=scan_interval)
        incoming = {s: workdir / "home" / s / "incoming" for s in table}
        for path in incoming.values():
            path.mkdir(parents=True)
        database = database_name(url)
        fleet = Fleet(config, workdir / "logs")
        watcher = LagWatcher(interval=poll)
        broker = redis.client(0)
        try:
            procfile_workers(fleet)
            fleet.beat()
            t0 = time.perf_counter()

            def probe() -> dict[str, float]:
                counters = redis_counters(broker)
                return {
                    "t": time.perf_counter() - t0,
                    "fed": len(watcher.appeared),
                    "archived": len(watcher.gone),
                    "waiting": watcher.waiting(),
                    "redis_commands": counters.commands,
                    "redis_cpu": redis_cpu(broker),
                    "catalog_transactions": catalog_writes(ADMIN_URL, database)["transactions"],
                    "load1": os.getloadavg()[0],
                }

            def workers_cpu() -> dict[str, float]:
                return {proc.name: group_cpu_seconds(proc.pid) for proc in fleet.procs}

            start_redis, start_cpu = redis_counters(broker), redis_cpu(broker)
            start_workers = workers_cpu()
            start_catalog = catalog_writes(ADMIN_URL, database)
            load_before = os.getloadavg()
            with watcher, Sampler(sample, probe) as sampler:
                t0 = time.perf_counter()
                for k, (server, name) in enumerate(plan):
                    delay = t0 + k / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    watcher.publish(server, corpus / name, incoming[server])
                fed_seconds = time.perf_counter() - t0
                load_during = os.getloadavg()
                deadline = time.monotonic() + drain  # a saturated fleet may not finish: report it
                while watcher.waiting() and time.monotonic() < deadline:
                    time.sleep(0.1)
                elapsed = time.perf_counter() - t0
            used, cpu = redis_counters(broker) - start_redis, redis_cpu(broker) - start_cpu
            worker_cpu = {k: v - start_workers.get(k, 0.0) for k, v in workers_cpu().items()}
            tasks = tasks_received(fleet.logs(tail=0))
        finally:
            fleet.stop_all()
        wait_for(lambda: catalog_backends(ADMIN_URL, database) == 0, 120, "catalog backends")
        catalog = catalog_writes(ADMIN_URL, database)
        statements = statement_writes(url)
    lags = watcher.lags(plan)
    archived = len(lags)
    last_gone = max((watcher.gone[k] for k in plan if k in watcher.gone), default=t0)
    busy = max(last_gone - t0, fed_seconds)
    thirds = [plan[i * total // 3 : (i + 1) * total // 3] for i in range(3)]

    def p50(keys: list[Key]) -> float | None:
        values = watcher.lags(keys)
        return round(statistics.median(values), 3) if values else None

    per_wal = max(1, archived)
    return {
        "servers": servers,
        "codec": codec,
        "scan_interval_s": scan_interval,
        "rate_target": rate,
        "fed": len(plan),
        "fed_seconds": round(fed_seconds, 1),
        "fed_per_s": round(len(plan) / fed_seconds, 2) if fed_seconds else None,
        "archived": archived,
        "not_archived": len(plan) - archived,
        "wal_per_s": round(archived / busy, 2) if busy else None,
        "drain_after_feed_s": round(max(0.0, last_gone - t0 - fed_seconds), 1),
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p99_s": round(percentile(lags, 99), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "lag_p50_by_third_s": [p50(keys) for keys in thirds],
        "lag_resolution_s": poll,
        "max_waiting": watcher.max_waiting["fed"],
        "redis_commands_per_s": round(used.commands / elapsed),
        "redis_commands_per_wal": round(used.commands / per_wal, 1),
        "redis_cpu_pct": round(100 * cpu / elapsed, 1),
        "redis_cpu_ms_per_wal": round(1000 * cpu / per_wal, 3),
        "redis_top_commands": dict(sorted(used.by_command.items(), key=lambda kv: -kv[1])[:8]),
        "catalog_transactions_per_s": round(
            (catalog["transactions"] - start_catalog["transactions"]) / elapsed, 1
        ),
        "catalog_transactions_per_wal": round(
            (catalog["transactions"] - start_catalog["transactions"]) / per_wal, 2
        ),
        "catalog_rows_written_per_s": round(
            (catalog["rows_written"] - start_catalog["rows_written"]) / elapsed, 1
        ),
        "catalog_write_statements_per_wal": (
            round(statements / per_wal, 2) if statements is not None else None
        ),
        "celery_tasks": dict(tasks),
        "worker_cpu_pct": {k: round(100 * v / elapsed, 1) for k, v in worker_cpu.items()},
        "worker_cpu_ms_per_wal": {k: round(1000 * v / per_wal, 2) for k, v in worker_cpu.items()},
        "seconds": round(elapsed, 1),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_end_of_feed": [round(x, 2) for x in load_during],
        "series": _rates(sampler.series),
    }


def summary(row: dict[str, object]) -> str:
    return (
        f"{row['servers']} servers, {row['rate_target']} WAL/s fed for {row['fed_seconds']} s: "
        f"{row['archived']}/{row['fed']} archived at {row['wal_per_s']} WAL/s, "
        f"lag p50 {row['lag_p50_s']} s p99 {row['lag_p99_s']} s "
        f"(p50 by third {row['lag_p50_by_third_s']}), "
        f"Redis {row['redis_commands_per_s']} commands/s {row['redis_cpu_pct']}% CPU, "
        f"catalog {row['catalog_transactions_per_s']} transactions/s, "
        f"workers' CPU % {row['worker_cpu_pct']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[30.0], help="WAL/s fed in total; one run each"
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="feed duration per run")
    parser.add_argument("--scan-interval", type=float, default=2.0)
    parser.add_argument("--codec", choices=["none", "lz4"], default="none")
    parser.add_argument("--drain", type=float, default=180.0, help="wait this long after the feed")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/)")
    args = parser.parse_args()
    if args.servers < 1 or args.seconds <= 0 or any(r <= 0 for r in args.rate):
        parser.error("--servers, --seconds and --rate must be positive")
    per_server = math.ceil(max(args.rate) * args.seconds / args.servers)
    root = Path(tempfile.mkdtemp(prefix="walq-fleet-scale-"))
    root.chmod(0o755)
    try:
        corpus, names = make_corpus(root / "corpus", per_server)
        rows = []
        for rate in args.rate:
            row = run(
                args.servers,
                rate,
                args.seconds,
                corpus,
                names,
                Path(tempfile.mkdtemp(dir=root)),
                scan_interval=args.scan_interval,
                codec=args.codec,
                drain=args.drain,
                sample=args.sample,
            )
            rows.append(row)
            print(summary(row), flush=True)
        save_results(rows, "fleet-scale", args.out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
