"""One function per tool: set up a fresh copy of the corpus, run the tool the way
it is used in production, measure only the archiving (or restoring), check the
result, clean up. Each returns a ``Run``.

How each tool is driven:

- ``walq archive``: one run over an incoming directory holding the corpus.
- ``barman archive-wal``: the same, with a minimal barman.conf (local storage).
- ``pgbackrest archive-push`` (async, ``process-max=2``): a pg_wal-like directory
  with ``archive_status/*.ready``; ``archive-push %p`` is called once per WAL in
  order and ``.ready`` becomes ``.done`` after each success, as PostgreSQL does.
  The async process it forks is counted (cgroup).
- ``barman-cloud-wal-archive``: once per WAL, as an archive_command.
- walq fleet: Celery workers and beat on this machine, started before the clock
  (a service, idle until WAL arrives); the clock starts as the corpus is linked
  into incoming; done when incoming is empty.
- restores: ``walq get-wal --prefetch 8`` and ``barman-cloud-wal-restore``,
  once per WAL in order, as restore_command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.corpus import REPO, Corpus
from bench.measure import Meter, Sample
from bench.services import group_pids
from tests.services.config_file import write_walq_config

if TYPE_CHECKING:  # the services need the test stack; local-only runs never load them
    from bench.services import BenchS3, CatalogDB
    from tests.services.fleet import RedisServer

VENV = REPO / ".venv" / "bin"
WALQ = VENV / "walq"
PYTHON = VENV / "python"


@dataclass
class Run:
    tool: str
    segments: int
    raw_bytes: int
    stored_bytes: int
    sample: Sample
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def seg_per_s(self) -> float:
        return self.segments / self.sample.wall

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["seg_per_s"] = self.seg_per_s
        return d


@dataclass
class Ctx:
    corpus: Corpus
    scratch: Path
    bench_bin: Path  # .venv-bench/bin (barman, barman-cloud-*)
    s3: BenchS3 | None = None
    catalog_db: CatalogDB | None = None
    redis: RedisServer | None = None
    per_wal_limit: int = 0  # for tools that start one process per WAL (0: whole corpus)
    log: Callable[[str], None] = print

    def fresh(self, name: str) -> Path:
        d = self.scratch / f"{name}-{uuid.uuid4().hex[:6]}"
        d.mkdir(parents=True)
        return d

    def per_wal(self) -> Corpus:
        if self.per_wal_limit and self.per_wal_limit < len(self.corpus.segments):
            return self.corpus.middle(self.per_wal_limit)
        return self.corpus

    def close(self) -> None:
        """Stop the services started for this run and remove the scratch tree."""
        if self.s3 is not None:
            self.s3.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.catalog_db is not None:
            self.catalog_db.__exit__(None, None, None)
        shutil.rmtree(self.scratch, ignore_errors=True)


def tree_bytes(path: Path, skip: tuple[str, ...] = ()) -> tuple[int, int]:
    count = total = 0
    for p in path.rglob("*"):
        if p.is_file() and not any(s in p.name for s in skip):
            count += 1
            total += p.stat().st_size
    return count, total


def _expect(count: int, wanted: int, what: str) -> None:
    if count != wanted:
        raise RuntimeError(f"{what}: {count} stored, expected {wanted}")


def walq_server(codec: str, level: int | None, **extra: object) -> dict[str, object]:
    return {"compression": codec, "compression_level": level if codec != "none" else None, **extra}


# -- walq embedded ---------------------------------------------------------------------------


def walq_archive(
    ctx: Ctx, codec: str, level: int | None, *, s3: bool = False, keep: bool = False
) -> Run:
    d = ctx.fresh("walq")
    env = None
    bucket = None
    extra: dict[str, object] = {}
    if s3:
        bucket = ctx.s3.bucket("walq")  # type: ignore[union-attr]
        extra = {"storage_url": f"s3://{bucket}/walq", "s3_endpoint_url": ctx.s3.endpoint}  # type: ignore[union-attr]
        env = ctx.s3.env()  # type: ignore[union-attr]
    cfg = write_walq_config(d, {"pg1": walq_server(codec, level, **extra)})
    incoming = d / "home" / "pg1" / "incoming"
    n = len(ctx.corpus.link_into(incoming))
    store0 = _store_cpu(ctx) if s3 else 0.0
    with Meter() as m:
        m.run([str(WALQ), "--config", str(cfg), "archive"], env=env, label="walq archive")
        m.stop_clock()
    store = _store_cpu(ctx) - store0 if s3 else None
    m.close()
    left = [p for p in incoming.iterdir() if not p.name.startswith(".")]
    if left:
        raise RuntimeError(f"walq archive left {len(left)} files in incoming")
    if s3:
        keys = _s3_sizes(ctx, bucket, "walq/")
        _expect(len(keys), n, "walq s3")
        stored = sum(keys.values())
    else:
        count, stored = tree_bytes(d / "home" / "pg1" / "wals", skip=("xlog.db", ".walq-owned"))
        _expect(count, n, "walq")
    run = Run("walq", n, n * ctx.corpus.seg_size, stored, m.sample())
    if store is not None:
        run.extra["store_cpu_s"] = store
    if keep:
        run.extra.update(config=str(cfg), bucket=bucket, dir=str(d))
    else:
        _cleanup(ctx, d, bucket)
    return run


def _store_cpu(ctx: Ctx) -> float:
    """CPU seconds SeaweedFS has used so far (it shares the cores, outside the cgroup)."""
    from bench.services import process_cpu_seconds

    pids = ctx.s3.pids() if ctx.s3 is not None else []  # type: ignore[union-attr]
    return sum(process_cpu_seconds(p) for p in pids)


def _s3_sizes(ctx: Ctx, bucket: str | None, prefix: str) -> dict[str, int]:
    client = ctx.s3.client()  # type: ignore[union-attr]
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if "/wals/" in o["Key"] or "/archive/" in o["Key"]:
                base = o["Key"].rsplit("/", 1)[1]
                if len(base) >= 24 and base[:24].isalnum() and not base.startswith("archive.info"):
                    out[o["Key"]] = o["Size"]
    return out


def _cleanup(ctx: Ctx, d: Path, bucket: str | None = None) -> None:
    shutil.rmtree(d, ignore_errors=True)
    if bucket:
        ctx.s3.drop_bucket(bucket)  # type: ignore[union-attr]


# -- Barman -------------------------------------------------------------------------------


def barman_archive(ctx: Ctx, codec: str, level: int | None) -> Run:
    d = ctx.fresh("barman")
    home = d / "bh"
    incoming = home / "pg1" / "incoming"
    (home / "pg1" / "errors").mkdir(parents=True)
    conf = d / "barman.conf"
    lines = [
        "[barman]",
        f"barman_home = {home}",
        "barman_user = root",
        f"log_file = {d / 'barman.log'}",
        "log_level = INFO",
        "",
        "[pg1]",
        "description = bench",
        "conninfo = host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        "backup_method = postgres",
        "archiver = on",
    ]
    if codec != "none":
        lines.append(f"compression = {codec}")
        if level is not None:
            lines.append(f"compression_level = {level}")
    conf.write_text("\n".join(lines) + "\n")
    n = len(ctx.corpus.link_into(incoming))
    barman = str(ctx.bench_bin / "barman")
    with Meter() as m:
        m.run([barman, "-c", str(conf), "-q", "archive-wal", "pg1"], label="barman archive-wal")
        m.stop_clock()
    m.close()
    xlogdb = (home / "pg1" / "wals" / "pg1-xlog.db").read_text().splitlines()
    _expect(len(xlogdb), n, f"barman archive-wal (log {d / 'barman.log'})")
    _, stored = tree_bytes(home / "pg1" / "wals", skip=("xlog.db",))
    _cleanup(ctx, d)
    return Run("barman", n, n * ctx.corpus.seg_size, stored, m.sample())


def _barman_cloud(ctx: Ctx, tool: str) -> list[str]:
    """A barman-cloud command from the bench virtualenv, aimed at the benchmark's S3 server."""
    endpoint = ctx.s3.endpoint  # type: ignore[union-attr]
    return [str(ctx.bench_bin / tool), "--cloud-provider", "aws-s3", "--endpoint-url", endpoint]


def barman_cloud_archive(ctx: Ctx, codec: str, level: int | None) -> Run:
    corpus = ctx.per_wal()
    d = ctx.fresh("bcloud")
    src = d / "pg_wal"
    n = len(corpus.link_into(src))
    bucket = ctx.s3.bucket("bcloud")  # type: ignore[union-attr]
    env = ctx.s3.env()  # type: ignore[union-attr]
    flag = {"zstd": "--zstd", "lz4": "--lz4", "gzip": "--gzip", "none": None}[codec]
    base = [
        *_barman_cloud(ctx, "barman-cloud-wal-archive"),
        *([flag] if flag else []),
        *(["--compression-level", str(level)] if flag and level is not None else []),
        f"s3://{bucket}/bc",
        "pg1",
    ]
    store0 = _store_cpu(ctx)
    with Meter() as m:
        for name in corpus.segments:
            m.system([*base, str(src / name)], env=env, label="barman-cloud-wal-archive")
        m.stop_clock()
    store = _store_cpu(ctx) - store0
    m.close()
    sizes = _s3_sizes(ctx, bucket, "bc/")
    _expect(len(sizes), n, "barman-cloud-wal-archive")
    _cleanup(ctx, d, bucket)
    return Run(
        "barman-cloud",
        n,
        n * corpus.seg_size,
        sum(sizes.values()),
        m.sample(),
        {"store_cpu_s": store},
    )


# -- pgBackRest -----------------------------------------------------------------------------


PGBR_CODEC = {"zstd": "zst", "lz4": "lz4", "gzip": "gz", "none": "none"}


def pgbackrest_stanza(
    ctx: Ctx, d: Path, codec: str, level: int | None, *, s3: bool = False
) -> tuple[list[str], Path, str | None]:
    """A stanza in ``d`` for the corpus's cluster, async with a spool as PostgreSQL's
    archive_command uses it: (the pgbackrest command line, pg_wal, the S3 bucket)."""
    pgdata = d / "pgdata"
    shutil.copytree(ctx.corpus.pgdata, pgdata)
    os.chmod(pgdata, 0o700)
    wal = pgdata / "pg_wal"
    status = wal / "archive_status"
    status.mkdir(parents=True)
    for sub in ("spool", "lock", "log"):
        (d / sub).mkdir()
    bucket = None
    lines = [
        "[global]",
        f"spool-path={d / 'spool'}",
        f"lock-path={d / 'lock'}",
        f"log-path={d / 'log'}",
        "archive-async=y",
        "process-max=2",
        f"compress-type={PGBR_CODEC[codec]}",
        *([f"compress-level={level}"] if level is not None and codec != "none" else []),
        "log-level-console=warn",
    ]
    if s3:
        bucket = ctx.s3.bucket("pgbr")  # type: ignore[union-attr]
        from tests.services.s3 import ACCESS_KEY, REGION, SECRET_KEY

        lines += [
            "repo1-type=s3",
            "repo1-path=/pgbr",
            f"repo1-s3-bucket={bucket}",
            "repo1-s3-endpoint=127.0.0.1",
            f"repo1-storage-port={ctx.s3.https_port}",  # type: ignore[union-attr]
            f"repo1-s3-region={REGION}",
            f"repo1-s3-key={ACCESS_KEY}",
            f"repo1-s3-key-secret={SECRET_KEY}",
            "repo1-s3-uri-style=path",
            "repo1-storage-verify-tls=n",
        ]
    else:
        lines.append(f"repo1-path={d / 'repo'}")
    lines += ["", "[bench]", f"pg1-path={pgdata}"]
    conf = d / "pgbackrest.conf"
    conf.write_text("\n".join(lines) + "\n")
    pgbr = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
    res = subprocess.run([*pgbr, "--no-online", "stanza-create"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pgbackrest stanza-create: {res.stderr or res.stdout}")
    return pgbr, wal, bucket


def pgbackrest_push(ctx: Ctx, codec: str, level: int | None, *, s3: bool = False) -> Run:
    d = ctx.fresh("pgbr")
    pgbr, wal, bucket = pgbackrest_stanza(ctx, d, codec, level, s3=s3)
    status = wal / "archive_status"
    n = len(ctx.corpus.link_into(wal))
    for name in ctx.corpus.segments:
        (status / f"{name}.ready").touch()
    store0 = _store_cpu(ctx) if s3 else 0.0
    with Meter() as m:
        for name in ctx.corpus.segments:
            m.system([*pgbr, "archive-push", str(wal / name)], label="pgbackrest archive-push")
            os.rename(status / f"{name}.ready", status / f"{name}.done")
        m.stop_clock()
        # the async process exits by itself once its queue is empty
        deadline = time.monotonic() + 60
        while m.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
    store = _store_cpu(ctx) - store0 if s3 else None
    m.close()
    if s3:
        sizes = _s3_sizes(ctx, bucket, "pgbr/archive/")
    else:
        sizes = {
            str(p): p.stat().st_size for p in (d / "repo" / "archive").rglob("0*") if p.is_file()
        }
    _expect(len(sizes), n, f"pgbackrest archive-push (logs {d / 'log'})")
    _cleanup(ctx, d, bucket)
    return Run(
        "pgbackrest",
        n,
        n * ctx.corpus.seg_size,
        sum(sizes.values()),
        m.sample(),
        {"store_cpu_s": store} if store is not None else {},
    )


# -- walq fleet ---------------------------------------------------------------------------


# name, pool, concurrency, queues. One prefork worker serving all three queues
# with two processes per core: the chain's stages wait on Redis and PostgreSQL
# round trips, so one process per core leaves the cores idle (measured: 2 CPU +
# 4 I/O threads in two workers, 3+8, 3+2, 4, 6 and 8 processes). Override with
# WALQ_BENCH_FLEET="cpu:prefork:2:walq.cpu io:threads:4:walq.scan,walq.io".
FLEET_WORKERS = tuple(
    (n, pool, int(c), q)
    for n, pool, c, q in (
        w.split(":")
        for w in os.environ.get(
            "WALQ_BENCH_FLEET", "fleet:prefork:4:walq.scan,walq.cpu,walq.io"
        ).split()
    )
)


def fleet_settings(ctx: Ctx, scan_interval: float = 0.5) -> dict[str, object]:
    from tests.services.fleet import fleet_settings as fs

    return fs(ctx.redis.url, ctx.catalog_db.fresh_schema(), scan_interval=scan_interval)  # type: ignore[union-attr]


def start_fleet(ctx: Ctx, cfg: Path, logdir: Path, meter: Meter | None):
    from tests.services.fleet import Fleet

    fleet = Fleet(cfg, logdir)
    for name, pool, conc, queues in FLEET_WORKERS:
        proc = fleet.worker(name, pool=pool, concurrency=conc, queues=queues)
        if meter is not None:
            for pid in group_pids(proc.pid):
                meter.adopt(pid)
    return fleet


def walq_fleet(ctx: Ctx, codec: str, level: int | None) -> Run:
    d = ctx.fresh("fleet")
    cfg = write_walq_config(d, {"pg1": walq_server(codec, level)}, **fleet_settings(ctx))
    res = subprocess.run(
        [str(WALQ), "--config", str(cfg), "catalog", "init"], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"walq catalog init: {res.stderr}")
    incoming = d / "home" / "pg1" / "incoming"
    fleet = None
    try:
        with Meter() as m:
            # The fleet is a service: workers and beat are up (idle ticks) before the clock,
            # which starts as the corpus arrives in incoming/.
            fleet = start_fleet(ctx, cfg, d / "logs", m)
            beat = fleet.beat()
            m.adopt(beat.pid)
            m.start_clock()
            n = len(ctx.corpus.link_into(incoming))
            deadline = time.monotonic() + 600
            while any(not p.name.startswith(".") for p in incoming.iterdir()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fleet did not finish:\n{fleet.logs()[-4000:]}")
                time.sleep(0.02)
            m.stop_clock()
    finally:
        if fleet is not None:
            fleet.stop_all()
    m.close()
    xlogdb = (d / "home" / "pg1" / "wals" / "pg1-xlog.db").read_text().splitlines()
    _expect(len(xlogdb), n, "walq fleet")
    _, stored = tree_bytes(d / "home" / "pg1" / "wals", skip=("xlog.db", ".walq-owned"))
    _cleanup(ctx, d)
    return Run("walq-fleet", n, n * ctx.corpus.seg_size, stored, m.sample())


# -- restores -----------------------------------------------------------------------------


def prepare_restore_source(ctx: Ctx, codec: str, level: int | None) -> Run:
    """A walq S3 archive of the corpus that both restore tools read (not timed)."""
    return walq_archive(ctx, codec, level, s3=True, keep=True)


def walq_get_wal(ctx: Ctx, source: Run, prefetch: int = 8) -> Run:
    corpus = ctx.per_wal() if ctx.per_wal_limit else ctx.corpus
    d = ctx.fresh("getwal")
    cfg = source.extra["config"]
    home = Path(str(source.extra["dir"])) / "home"
    shutil.rmtree(home / "restore-spool", ignore_errors=True)
    env = ctx.s3.env()  # type: ignore[union-attr]
    cmd = [str(WALQ), "--config", str(cfg), "get-wal", "pg1"]
    sample = _restore_each(
        ctx,
        corpus,
        d,
        lambda name, dest: [*cmd, name, str(dest), "--prefetch", str(prefetch)],
        env,
        "walq get-wal",
    )
    shutil.rmtree(home / "restore-spool", ignore_errors=True)
    n = len(corpus.segments)
    return Run("walq", n, n * corpus.seg_size, 0, sample, {"prefetch": prefetch})


def barman_cloud_restore(ctx: Ctx, source: Run, parallel: int = 0) -> Run:
    corpus = ctx.per_wal()
    d = ctx.fresh("bcrestore")
    env = ctx.s3.env()  # type: ignore[union-attr]
    cmd = [
        *_barman_cloud(ctx, "barman-cloud-wal-restore"),
        "--spool-dir",
        str(d / "spool"),
        *(["--parallel", str(parallel)] if parallel else []),
    ]
    url = f"s3://{source.extra['bucket']}/walq"
    sample = _restore_each(
        ctx,
        corpus,
        d,
        lambda name, dest: [*cmd, url, "pg1", name, str(dest)],
        env,
        "barman-cloud-wal-restore",
    )
    n = len(corpus.segments)
    return Run("barman-cloud", n, n * corpus.seg_size, 0, sample, {"parallel": parallel})


def _restore_each(
    ctx: Ctx,
    corpus: Corpus,
    d: Path,
    command: Callable[[str, Path], list[str]],
    env: dict[str, str],
    label: str,
) -> Sample:
    """Run a restore_command once per WAL in order, as recovery does, into ``d``; time it,
    check each restored file, and remove ``d``."""
    with Meter() as m:
        for name in corpus.segments:
            m.system(command(name, d / "RECOVERYXLOG"), env=env, label=label)
            _check_restored(d / "RECOVERYXLOG", ctx.corpus.seg_size, name)
        m.stop_clock()
    m.close()
    shutil.rmtree(d, ignore_errors=True)
    return m.sample()


def _check_restored(path: Path, size: int, name: str) -> None:
    st = path.stat()
    if st.st_size != size:
        raise RuntimeError(f"restored {name}: {st.st_size} bytes")
    with open(path, "rb") as f:
        head = f.read(40)
    # xlp_pageaddr (offset 8) names the segment: a wrong file would not match
    pageaddr = int.from_bytes(head[8:16], "little")
    log_, seg = int(name[8:16], 16), int(name[16:24], 16)
    if pageaddr != (log_ << 32) + seg * size:
        raise RuntimeError(f"restored {name}: header names another segment")
    path.unlink()


# -- the codec alone ----------------------------------------------------------------------


def codec_limit(ctx: Ctx, codec: str, level: int | None, workers: int) -> Run:
    with Meter() as m:
        proc = m.popen(
            [
                str(PYTHON),
                str(REPO / "bench" / "codec_limit.py"),
                "--codec",
                codec,
                "--level",
                str(level if level is not None else -100),
                "--workers",
                str(workers),
                str(ctx.corpus.directory),
                *ctx.corpus.segments,
            ],
            stdout=subprocess.PIPE,
        )
        out = proc.stdout.read()  # type: ignore[union-attr]
        if m.wait(proc, "codec_limit") != 0:
            raise RuntimeError("codec_limit.py failed")
        m.stop_clock()
    m.close()
    data = json.loads(out)
    sample = m.sample()
    sample.wall, sample.cpu, sample.cpu_source = data["wall"], data["cpu"], "in-process"
    n = len(ctx.corpus.segments)
    return Run("codec", n, n * ctx.corpus.seg_size, data["stored"], sample, {"workers": workers})


def python_startup(ctx: Ctx, count: int = 20) -> float:
    """Seconds for a bare ``python -c pass`` with walq's interpreter (the floor for get-wal)."""
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run([str(PYTHON), "-c", "pass"], check=True)
    return (time.perf_counter() - started) / count
