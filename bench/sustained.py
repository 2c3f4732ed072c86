"""Sustained load: WAL arriving steadily while the fleet archives, and the lag it sees.

- A throwaway 16 MiB-segment cluster runs pgbench (2 clients, a steady 500
  transactions/s) for the whole window; its ``archive_command`` is
  ``walq put-wal live %p`` (real WAL at pgbench's pace).
- On top, the corpus arrives in two servers' incoming directories (``pg1`` and
  ``pg2``, the same bytes under two server names) at a fixed combined rate
  (default 10 segments/s), each file published atomically (dot-file, rename) as
  put-wal does.
- The fleet (the same Celery workers as the fleet row, beat at ``scan_interval``)
  archives all three servers.

Archive lag is the time from a file appearing in incoming to its removal, which
walq does only after the commit (bench/lag.py: a watcher polls every 10 ms); it
also records the most files waiting at once.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from bench.lag import LagWatcher, percentile
from bench.measure import Meter
from bench.runners import WALQ, Ctx, fleet_settings, start_fleet, walq_server
from tests.services.config_file import write_walq_config
from tests.services.pg import Cluster, chown_postgres

PGBENCH_TPS = (
    500  # a steady write load beside the archiver (unthrottled, pgbench alone takes the cores)
)


def run(
    ctx: Ctx,
    rate: float = 10.0,
    seconds: float | None = None,
    scan_interval: float = 0.5,
    quick: bool = False,
    codec: str = "zstd",
    level: int | None = 3,
) -> dict[str, object]:
    d = ctx.fresh("sustained")
    os.chmod(d, 0o755)
    servers = {name: walq_server(codec, level) for name in ("pg1", "pg2", "live")}
    cfg = write_walq_config(d, servers, **fleet_settings(ctx, scan_interval=scan_interval))
    res = subprocess.run(
        [str(WALQ), "--config", str(cfg), "catalog", "init"], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"walq catalog init: {res.stderr}")
    home = d / "home"
    incoming = {s: home / s / "incoming" for s in servers}
    for path in incoming.values():
        path.mkdir(parents=True, exist_ok=True)
    chown_postgres(home / "live")
    os.chmod(cfg, 0o644)

    cluster = Cluster(d / "live-pg")
    cluster.initdb(
        wal_segsize_mb=16,
        conf={
            "archive_mode": "on",
            "archive_command": f"'{WALQ} --config {cfg} put-wal live %p'",
            "checkpoint_timeout": "30s",
            "max_wal_size": "256MB",
            "min_wal_size": "64MB",
            "synchronous_commit": "off",
        },
    )
    cluster.start()
    cluster.pgbench_init(scale=5)

    names = ctx.corpus.segments
    total = int(rate * seconds) if seconds else 2 * len(names)
    total = min(total, 2 * len(names))
    plan = [("pg1" if k % 2 == 0 else "pg2", names[k // 2]) for k in range(total)]
    watcher = LagWatcher(scanned={"live": incoming["live"]})

    fleet = None
    pgbench = None
    try:
        with Meter() as m:
            fleet = start_fleet(ctx, cfg, d / "logs", m)
            beat = fleet.beat()
            m.adopt(beat.pid)
            pgbench = subprocess.Popen(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    *cluster.pgbench_command(
                        "-n",
                        "-T",
                        str(int(total / rate) + 30),
                        "-c",
                        "2",
                        "-j",
                        "1",
                        "-R",
                        str(PGBENCH_TPS),
                    ),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0 if quick else 3.0)  # pgbench under way before WAL starts arriving
            m.start_clock()
            with watcher:
                t0 = time.perf_counter()
                for k, (server, name) in enumerate(plan):
                    due = t0 + k / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    watcher.publish(server, ctx.corpus.directory / name, incoming[server])
                fed_seconds = time.perf_counter() - t0
                deadline = time.monotonic() + 180
                while watcher.waiting() and time.monotonic() < deadline:
                    time.sleep(0.05)
            m.stop_clock()
    finally:
        if pgbench is not None and pgbench.poll() is None:
            pgbench.terminate()
            pgbench.wait(30)
        cluster.stop("immediate")
        if fleet is not None:
            fleet.stop_all()
    m.close()
    lags = watcher.lags(plan)
    live = watcher.lags([k for k in watcher.appeared if k[0] == "live"])
    missing = len(plan) - len(lags)
    sample = m.sample()
    workers = {k: round(v / (1 << 20)) for k, v in sample.procs.items() if "celery" in k}
    result = {
        "codec": f"{codec}-{level}" if level is not None else codec,
        "rate_segments_per_s": rate,
        "fed_segments": len(plan),
        "fed_seconds": round(fed_seconds, 1),
        "achieved_rate": round(len(plan) / fed_seconds, 2) if fed_seconds else None,
        "scan_interval_s": scan_interval,
        "pgbench_tps": PGBENCH_TPS,
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p99_s": round(percentile(lags, 99), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "max_waiting_in_incoming": watcher.max_waiting["fed"],
        "not_archived": missing,
        "live_pgbench_segments": len(live),
        "live_lag_p50_s": round(statistics.median(live), 3) if live else None,
        "live_lag_max_s": round(max(live), 3) if live else None,
        "cpu_s_per_segment": round(sample.cpu / max(1, len(lags) + len(live)), 3)
        if sample.cpu
        else None,
        "peak_rss_mib_by_process": workers,
    }
    subprocess.run(["rm", "-rf", str(d)], check=False)
    return result
