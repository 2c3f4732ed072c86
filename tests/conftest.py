"""Shared fixtures: real PostgreSQL clusters, a cached corpus of real WAL, walq homes.

Everything here uses real parts. Directories live under /tmp/walq-tests
(world-traversable) because clusters and archive/restore commands run as the
``postgres`` OS user, who cannot enter pytest's private tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services.pg import Cluster, as_postgres, chown_postgres, ensure_runnable
from walq.config import Config, load_config

# The real services' fixtures (s3_server, s3_bucket, barman_cloud_restore, gpg_key, gpg_env,
# redis_server, catalog_db, fleet_factory) are found by every test module through these.
pytest_plugins = ["tests.services.s3", "tests.services.gpg", "tests.services.fleet"]

BASE = Path(os.environ.get("WALQ_TEST_BASE", "/tmp/walq-tests"))
VENV_BIN = Path(sys.executable).parent
WALQ = VENV_BIN / "walq"


def _fresh_dir(prefix: str) -> Path:
    BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE, 0o755)
    path = BASE / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A world-traversable scratch directory, removed afterwards."""
    path = _fresh_dir("w")
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
        # wait until the archiver has caught up with everything it was given
        from tests.services.pg import wait_for

        wait_for(lambda: int(cluster.psql("SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready'")) == 0,
                 60, "the corpus archiver to catch up")
    finally:
        cluster.stop()
    names = sorted(p.name for p in archive.iterdir() if len(p.name) == 24)
    return names, sysid


@pytest.fixture(scope="session")
def wal_corpus() -> Iterator[WalCorpus]:
    """~40 real 1 MiB segments plus a few from a second cluster (another system id)."""
    root = _fresh_dir("corpus")
    names, sysid = _make_corpus(root / "main", 40)
    other_names, _ = _make_corpus(root / "other", 2)
    directory = root / "main" / "archive"
    other_dir = directory / "other"
    other_dir.mkdir()
    for name in other_names:
        shutil.copy2(root / "other" / "archive" / name, other_dir / name)
    yield WalCorpus(directory, names, sysid, other_cluster=other_names)
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class WalqHome:
    """A configured walq installation: config file, home, and a CLI runner."""

    root: Path
    config_path: Path

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def home(self) -> Path:
        return self.root / "home"

    def server_dir(self, server: str = "pg1") -> Path:
        return self.home / server

    def incoming(self, server: str = "pg1") -> Path:
        return self.home / server / "incoming"

    def errors(self, server: str = "pg1") -> Path:
        return self.home / server / "errors"

    def wals(self, server: str = "pg1") -> Path:
        return self.home / server / "wals"

    def give_to_postgres(self, *servers: str) -> None:
        """Create the servers' directories now and hand the tree to the postgres user,
        so a process running as root (a worker) cannot create them first, unwritable
        for archive_command."""
        for server in servers or ("pg1",):
            for sub in ("incoming", "streaming", "errors"):
                (self.home / server / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "spool").mkdir(parents=True, exist_ok=True)
        chown_postgres(self.root)

    def run(self, *args: str, as_pg: bool = False, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the walq CLI (optionally as the postgres OS user, like archive_command)."""
        if as_pg:
            chown_postgres(self.root)
        cmd = [*(as_postgres() if as_pg else []), str(WALQ), "--config", str(self.config_path), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"walq {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res


def write_config(root: Path, servers: dict[str, dict[str, object]], **top: object) -> Path:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f'home = "{root / "home"}"'] + [f"{k} = {value(v)}" for k, v in top.items()]
    for name, settings in servers.items():
        lines.append(f"\n[servers.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in settings.items()]
    path = root / "walq.toml"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def walq_home(workdir: Path) -> WalqHome:
    """One server 'pg1' with zstd on local storage under a fresh home."""
    (workdir / "home").mkdir()
    return WalqHome(workdir, write_config(workdir, {"pg1": {"compression": "zstd"}}))


@pytest.fixture
def make_home(workdir: Path):
    """Factory: a walq home with custom server settings and top-level keys."""

    def make(servers: dict[str, dict[str, object]] | None = None, **top: object) -> WalqHome:
        (workdir / "home").mkdir(exist_ok=True)
        return WalqHome(workdir, write_config(workdir, servers or {"pg1": {}}, **top))

    return make


@pytest.fixture
def cluster_factory(workdir: Path) -> Iterator:
    """Start throwaway clusters under workdir; all are stopped at teardown."""
    started: list[Cluster] = []

    def make(name: str = "pg", conf: dict[str, str] | None = None, wal_segsize_mb: int = 1) -> Cluster:
        cluster = Cluster(workdir / name)
        cluster.initdb(wal_segsize_mb=wal_segsize_mb, conf=conf)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop("immediate")


def walq_command(home: WalqHome, *args: str) -> str:
    """A shell command line for archive_command/restore_command."""
    return f"{WALQ} --config {home.config_path} {' '.join(args)}"


@dataclass(frozen=True)
class PrimaryRun:
    at_restore_point: tuple[int, str] | None  # (row count, md5) of pgbench_accounts
    at_end: tuple[int, str]
    last_wal: str


def run_archiving_primary(
    cluster_factory, home: WalqHome, base: Path, *, transactions: int = 400,
    restore_point: str | None = None, archive_timeout: float = 120,
) -> PrimaryRun:
    """A primary archiving through ``walq put-wal``: pgbench, a base backup in ``base``,
    more pgbench (around a named restore point, if given), every WAL handed to walq.

    Returns the data fingerprints and the last WAL it switched to."""
    primary = cluster_factory("primary", conf={
        "archive_mode": "on",
        "archive_command": f"'{walq_command(home, 'put-wal pg1 %p')}'",
    })
    primary.start()
    primary.pgbench_init(1)
    primary.basebackup(base)
    primary.pgbench(transactions)
    at_restore_point = None
    if restore_point:
        primary.psql(f"SELECT pg_create_restore_point('{restore_point}')")
        at_restore_point = primary.accounts_fingerprint()
        primary.pgbench(transactions)
    at_end = primary.accounts_fingerprint()
    last_wal = primary.switch_wal()
    primary.wait_archived(last_wal, timeout=archive_timeout)
    primary.stop()
    return PrimaryRun(at_restore_point, at_end, last_wal)

