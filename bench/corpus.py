"""A corpus of real WAL for the benchmark, made once and cached under bench/.cache/.

A throwaway cluster with 16 MiB segments runs pgbench (frequent checkpoints, so
the WAL carries full-page images as production WAL does) and archives every
finished segment with plain ``cp``. The segments, a manifest and a minimal copy
of the cluster's control data (``PG_VERSION`` + ``global/pg_control``, which
pgBackRest's stanza needs) are kept; the cluster itself is removed.

Every benchmark run works on a *fresh copy*: a directory of hard links to the
cached segments, so a tool may unlink or rename its inputs freely. The cached
files are made read-only (0444) and their sizes are re-checked after every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO):  # before bench/ itself, where bench.py would shadow the package
    sys.path.insert(0, str(REPO))

from tests.services.pg import Cluster, chown_postgres  # noqa: E402

CACHE = Path(os.environ.get("WALQ_BENCH_CACHE") or REPO / "bench" / ".cache")
SEG_MB = 16


@dataclass
class Corpus:
    directory: Path
    segments: list[str]
    system_identifier: int
    seg_size: int
    pgdata: Path  # PG_VERSION + global/pg_control of the cluster that wrote the WAL

    @property
    def raw_bytes(self) -> int:
        return len(self.segments) * self.seg_size

    def take(self, count: int) -> Corpus:
        return Corpus(
            self.directory,
            self.segments[:count],
            self.system_identifier,
            self.seg_size,
            self.pgdata,
        )

    def middle(self, count: int) -> Corpus:
        """``count`` consecutive segments from the middle: past the bulk load, typical WAL."""
        start = max(0, (len(self.segments) - count) // 2)
        return Corpus(
            self.directory,
            self.segments[start : start + count],
            self.system_identifier,
            self.seg_size,
            self.pgdata,
        )

    def link_into(self, dest: Path, names: list[str] | None = None) -> list[str]:
        """A fresh copy of the corpus in ``dest``: hard links (the cache is read-only)."""
        dest.mkdir(parents=True, exist_ok=True)
        chosen = self.segments if names is None else names
        for name in chosen:
            os.link(self.directory / name, dest / name)
        return chosen

    def check_intact(self) -> None:
        for name in self.segments:
            st = (self.directory / name).stat()
            if st.st_size != self.seg_size:
                raise RuntimeError(
                    f"corpus file {name} changed size ({st.st_size}); delete {self.directory}"
                )


def _count(archive: Path) -> int:
    return sum(1 for p in archive.iterdir() if len(p.name) == 24)


def make(segments: int, log=print) -> Corpus:
    """The cached corpus with at least ``segments`` 16 MiB segments (made if missing)."""
    cached = []
    for manifest in CACHE.glob(f"corpus-{SEG_MB}m-*/manifest.json"):
        data = json.loads(manifest.read_text())
        if len(data["segments"]) >= segments:
            cached.append((len(data["segments"]), manifest.parent, data))
    if cached:  # the smallest cached corpus that is big enough; its first segments
        _, found, data = min(cached, key=lambda c: c[0])
        corpus = Corpus(
            found / "wal",
            data["segments"],
            data["system_identifier"],
            data["seg_size"],
            found / "pgdata",
        )
        return corpus.take(segments)
    base = CACHE / f"corpus-{SEG_MB}m-{segments}"
    manifest = base / "manifest.json"
    shutil.rmtree(base, ignore_errors=True)
    work = base / "build"
    archive = work / "archive"
    archive.mkdir(parents=True)
    os.chmod(CACHE, 0o755)  # the cluster runs as the postgres user
    os.chmod(base, 0o755)
    chown_postgres(work)
    cluster = Cluster(work / "c")
    log(
        f"corpus: making {segments} real {SEG_MB} MiB segments with pgbench in {base} (once; cached)"
    )
    started = time.monotonic()
    cluster.initdb(
        wal_segsize_mb=SEG_MB,
        conf={
            "archive_mode": "on",
            "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
            "max_wal_size": "1GB",
            "min_wal_size": "128MB",
            "checkpoint_timeout": "30s",
            "synchronous_commit": "off",
            "shared_buffers": "128MB",
        },
    )
    cluster.start()
    try:
        cluster.pgbench_init(scale=10)
        while _count(archive) < segments + 1:
            cluster._run(cluster.pgbench_command("-n", "-T", "15", "-c", "4", "-j", "2"))
            log(f"corpus: {_count(archive)} segments archived ({time.monotonic() - started:.0f}s)")
        sysid = int(cluster.psql("SELECT system_identifier FROM pg_control_system()"))
        cluster.switch_wal()
        cluster.wait_ready_drained(120, "the corpus archiver to catch up")
    finally:
        cluster.stop()
    names = sorted(p.name for p in archive.iterdir() if len(p.name) == 24)[:segments]
    wal = base / "wal"
    wal.mkdir()
    digest = hashlib.sha256()
    for name in names:
        os.rename(archive / name, wal / name)
        os.chmod(wal / name, 0o444)
        digest.update(name.encode())
    pgdata = base / "pgdata"
    (pgdata / "global").mkdir(parents=True)
    shutil.copy2(cluster.data / "PG_VERSION", pgdata / "PG_VERSION")
    shutil.copy2(cluster.data / "global" / "pg_control", pgdata / "global" / "pg_control")
    os.chmod(pgdata, 0o700)
    shutil.rmtree(work)
    manifest.write_text(
        json.dumps(
            {
                "segments": names,
                "system_identifier": sysid,
                "seg_size": SEG_MB << 20,
                "made_seconds": round(time.monotonic() - started, 1),
                "names_sha256": digest.hexdigest(),
            },
            indent=1,
        )
    )
    log(f"corpus: done in {time.monotonic() - started:.0f}s")
    return Corpus(wal, names, sysid, SEG_MB << 20, pgdata)


if __name__ == "__main__":
    c = make(int(sys.argv[1]) if len(sys.argv) > 1 else 128)
    print(c.directory, len(c.segments), c.system_identifier)
