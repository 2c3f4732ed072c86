"""Where walq's CPU goes, per row: the profiles quoted in docs/benchmarks.md.

    .venv/bin/python bench/profile.py archive [--codec zstd-3] [--segments 128]
    .venv/bin/python bench/profile.py s3 | fleet | get-wal

Runs walq on the cached corpus under ``py-spy record --subprocesses`` (from
.venv-bench, see bench/run.sh), then sorts the samples into buckets (codec,
sha256, reading, boto3, Redis/Celery, catalog, waits, ...) and prints the share
of each. The raw samples are kept for flame graphs (``--raw PATH``).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO):  # before bench/ itself, where bench.py would shadow the package
    sys.path.insert(0, str(REPO))

from bench import corpus as corpus_mod  # noqa: E402
from bench import runners  # noqa: E402
from tests.services.config_file import write_walq_config  # noqa: E402

PYSPY = REPO / ".venv-bench" / "bin" / "py-spy"
IDLE = (
    "Condition.wait",
    "_epoll.poll",
    "select (",
    "_PollLikeSelector.select",
    "Connection._recv",
    "do_poll",
    "SocketBuffer._read_from_socket",
    "Connection.wait",
    "Event.wait",
    "sleep",
)

BUCKETS = [  # (name, test on the leaf frame, test on the whole stack); first match wins
    (
        "codec",
        lambda leaf, st: (
            "codecs.py:" in leaf  # frames read "_Zstd.compress (walq/codecs.py:70)"
            or "compress_chunks" in leaf
            or "decompress_chunks" in leaf
        ),
    ),
    (
        "checksum",
        lambda leaf, st: (
            "accounted (" in leaf or "_copy_verified (" in leaf or "checksums.py:" in leaf
        ),
    ),
    ("read", lambda leaf, st: "read_chunks (" in leaf or "_chain (" in leaf),
    ("imports", lambda leaf, st: "importlib" in st),
    ("boto3 (requests, signing)", lambda leaf, st: "botocore" in st or "urllib3" in st),
    ("PostgreSQL catalog (psycopg)", lambda leaf, st: "psycopg" in st),
    ("Redis / kombu", lambda leaf, st: "redis" in st or "kombu" in st),
    ("Celery / billiard", lambda leaf, st: "celery" in st or "billiard" in st),
    (
        "store + commit",
        lambda leaf, st: "finish (embedded.py" in st or "store (" in st or "commit (" in st,
    ),
    ("write payload", lambda leaf, st: "prepare (" in leaf and "steps.py:" in leaf),
]


def summarize(raw: Path) -> str:
    busy = idle = 0
    cats: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        leaf, count = frames[-1], int(n)
        if any(k in leaf for k in IDLE):
            idle += count
            continue
        busy += count
        for name, test in BUCKETS:
            if test(leaf, stack):
                cats[name] += count
                break
        else:
            cats["other"] += count
    lines = [f"{busy} busy samples, {idle} idle ({idle / max(1, busy + idle):.0%} of all)"]
    lines += [f"  {name:30s} {100 * v / max(1, busy):5.1f}%" for name, v in cats.most_common()]
    return "\n".join(lines)


def record(
    cmd: list[str], raw: Path, env: dict[str, str] | None = None, pid: int | None = None
) -> subprocess.Popen | None:
    base = [str(PYSPY), "record", "--subprocesses", "-r", "200", "-f", "raw", "-o", str(raw)]
    if pid is not None:
        return subprocess.Popen(
            [*base, "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    subprocess.run(
        [*base, "--", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("row", choices=["archive", "s3", "fleet", "get-wal"])
    ap.add_argument("--codec", default="zstd-3")
    ap.add_argument("--segments", type=int, default=128)
    ap.add_argument("--raw", type=Path, default=None)
    args = ap.parse_args()
    codec, _, lv = args.codec.partition("-")
    level = int(lv) if lv else None
    corpus = corpus_mod.make(args.segments, log=lambda m: print(m, file=sys.stderr))
    scratch = corpus_mod.CACHE / f"profile-{os.getpid()}"
    scratch.mkdir(parents=True)
    raw = args.raw or scratch.parent / f"profile-{args.row}.txt"
    ctx = runners.Ctx(corpus, scratch, REPO / ".venv-bench" / "bin")
    s3 = None
    try:
        if args.row in ("s3", "get-wal"):
            from bench.services import BenchS3

            s3 = ctx.s3 = BenchS3(scratch / "s3").start()
        d = ctx.fresh("p")
        if args.row in ("archive", "s3"):
            extra = {}
            env = None
            if s3 is not None:
                bucket = s3.bucket("prof")
                extra = {"storage_url": f"s3://{bucket}/walq", "s3_endpoint_url": s3.endpoint}
                env = s3.env()
            cfg = write_walq_config(d, {"pg1": runners.walq_server(codec, level, **extra)})
            corpus.link_into(d / "home" / "pg1" / "incoming")
            record([str(runners.WALQ), "--config", str(cfg), "archive"], raw, env)
        elif args.row == "get-wal":
            source = runners.prepare_restore_source(ctx, codec, level)
            out = d / "RECOVERYXLOG"
            name = corpus.segments[len(corpus.segments) // 2]
            record(
                [
                    str(runners.WALQ),
                    "--config",
                    str(source.extra["config"]),
                    "get-wal",
                    "pg1",
                    name,
                    str(out),
                    "--prefetch",
                    "8",
                ],
                raw,
                s3.env(),
            )  # type: ignore[union-attr]
        else:
            from bench.services import CatalogDB
            from tests.services.fleet import ADMIN_URL, RedisServer

            ctx.redis = RedisServer(scratch / "redis").start()
            ctx.catalog_db = CatalogDB(ADMIN_URL).__enter__()
            cfg = write_walq_config(
                d, {"pg1": runners.walq_server(codec, level)}, **runners.fleet_settings(ctx)
            )
            subprocess.run(
                [str(runners.WALQ), "--config", str(cfg), "catalog", "init"],
                check=True,
                capture_output=True,
            )
            incoming = d / "home" / "pg1" / "incoming"
            corpus.link_into(incoming)
            fleet = runners.start_fleet(ctx, cfg, d / "logs", None)
            try:
                spies = [
                    record([], raw.with_suffix(f".{p.name}.txt"), pid=p.pid) for p in fleet.procs
                ]
                time.sleep(1)
                fleet.beat()
                while any(not p.name.startswith(".") for p in incoming.iterdir()):
                    time.sleep(0.05)
                for spy in spies:
                    spy.send_signal(2)  # type: ignore[union-attr]
                    spy.wait(30)  # type: ignore[union-attr]
            finally:
                fleet.stop_all()
            merged = "".join(
                p.read_text() for p in raw.parent.glob(raw.with_suffix("").name + ".*.txt")
            )
            raw.write_text(merged)
        print(f"{args.row}, {args.codec}, {len(corpus.segments)} segments ({raw}):")
        print(summarize(raw))
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
