"""Shared fixtures: real PostgreSQL clusters, a cached corpus of real WAL, walq homes.

Everything here uses real parts, in scratch directories the ``postgres`` OS user
can enter (tests/services/scratch.py). Helpers that test modules import live in
tests/services/, never here.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings

from tests.services.config_file import write_walq_config
from tests.services.homes import VENV_BIN, WalqHome
from tests.services.pg import Cluster, chown_postgres, ensure_runnable
from tests.services.scratch import BASE, fresh_dir, scratch_base

# Hypothesis's per-example deadline (200 ms) is a timing assertion: on a busy machine, or with
# the suite's two xdist workers, a stalled example would fail a correct test. Timing is for bench/.
settings.register_profile("walq", deadline=None)
settings.load_profile("walq")

# The real services' fixtures (s3_server, s3_bucket, barman_cloud_restore, gpg_key, gpg_env,
# redis_server, catalog_db, fleet_factory) are found by every test module through these.
pytest_plugins = ["tests.services.s3", "tests.services.gpg", "tests.services.fleet"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A world-traversable scratch directory, removed afterwards."""
    path = fresh_dir("w")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def walq_runnable_by_postgres() -> None:
    ensure_runnable(VENV_BIN / "python")


@dataclass
class WalCorpus:
    """Real WAL segments from one throwaway cluster, archived with plain cp."""

    directory: Path
    segments: list[str]
    system_identifier: int
    seg_size: int = 1 << 20
    other_cluster: list[str] = field(default_factory=list)  # names in directory/other
    history: str | None = None

    def path(self, name: str) -> Path:
        return self.directory / name

    def copy_into(self, dest: Path, names: list[str] | None = None) -> list[str]:
        dest.mkdir(parents=True, exist_ok=True)
        chosen = names if names is not None else self.segments
        for name in chosen:
            shutil.copy2(self.directory / name, dest / name)
        return chosen


def _make_corpus(root: Path, segments_wanted: int) -> tuple[list[str], int]:
    archive = root / "archive"
    archive.mkdir(parents=True)
    chown_postgres(root)
    cluster = Cluster(root / "c")
    cluster.initdb(conf={"archive_mode": "on", "archive_command": f"'cp %p {archive}/%f'"})
    cluster.start()
    try:
        cluster.pgbench_init(1)
        while len(list(archive.iterdir())) < segments_wanted:
            cluster.pgbench(300)
            cluster.switch_wal()
        sysid = int(cluster.psql("SELECT system_identifier FROM pg_control_system()"))
        cluster.psql("CHECKPOINT")
        cluster.switch_wal()
        cluster.wait_ready_drained(60, "the corpus archiver to catch up")
    finally:
        cluster.stop()
    names = sorted(p.name for p in archive.iterdir() if len(p.name) == 24)
    return names, sysid


RUN_ENV = "WALQ_TEST_RUN"  # one id a pytest run, shared with its xdist workers


def pytest_configure(config: pytest.Config) -> None:
    """The controller (or the only process) names the run before any xdist worker starts:
    the workers inherit the variable and so find the same shared WAL corpus."""
    if not hasattr(config, "workerinput"):
        os.environ.setdefault(RUN_ENV, uuid.uuid4().hex[:12])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller removes the run's corpus once every worker has finished with it."""
    if not hasattr(config, "workerinput") and RUN_ENV in os.environ:
        corpus = BASE / f"corpus-{os.environ[RUN_ENV]}"
        shutil.rmtree(corpus, ignore_errors=True)
        corpus.with_suffix(".lock").unlink(missing_ok=True)


def _build_corpus(root: Path) -> dict:
    names, sysid = _make_corpus(root / "main", 40)
    other_names, _ = _make_corpus(root / "other", 2)
    other_dir = root / "main" / "archive" / "other"
    other_dir.mkdir()
    for name in other_names:
        shutil.copy2(root / "other" / "archive" / name, other_dir / name)
    return {"segments": names, "system_identifier": sysid, "other_cluster": other_names}


@pytest.fixture(scope="session")
def wal_corpus() -> WalCorpus:
    """~40 real 1 MiB segments plus a few from a second cluster (another system id).

    Tests only read it, so one corpus serves the whole run: the first xdist worker to need
    it builds it under a lock, the others wait and read what it wrote."""
    root = BASE / f"corpus-{os.environ[RUN_ENV]}"  # named by pytest_configure
    scratch_base()
    with open(root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = root / "corpus.json"
        if not made.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way
            root.mkdir()
            os.chmod(root, 0o755)
            made.write_text(json.dumps(_build_corpus(root)))
        facts = json.loads(made.read_text())
    return WalCorpus(
        root / "main" / "archive",
        facts["segments"],
        facts["system_identifier"],
        other_cluster=facts["other_cluster"],
    )


@pytest.fixture
def walq_home(workdir: Path) -> WalqHome:
    """One server 'pg1' with zstd on local storage under a fresh home."""
    (workdir / "home").mkdir()
    return WalqHome(workdir, write_walq_config(workdir, {"pg1": {"compression": "zstd"}}))


@pytest.fixture
def make_home(workdir: Path):
    """Factory: a walq home with custom server settings and top-level keys."""

    def make(servers: dict[str, dict[str, object]] | None = None, **top: object) -> WalqHome:
        (workdir / "home").mkdir(exist_ok=True)
        return WalqHome(workdir, write_walq_config(workdir, servers or {"pg1": {}}, **top))

    return make


@pytest.fixture
def cluster_factory(workdir: Path) -> Iterator:
    """Start throwaway clusters under workdir; all are stopped at teardown."""
    started: list[Cluster] = []

    def make(
        name: str = "pg", conf: dict[str, str] | None = None, wal_segsize_mb: int = 1
    ) -> Cluster:
        cluster = Cluster(workdir / name)
        cluster.initdb(wal_segsize_mb=wal_segsize_mb, conf=conf)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop("immediate")
