"""Both halves of point-in-time recovery through walq: a primary archiving through
``walq put-wal`` (and waiting for its archiver), a base backup, and a cluster
recovered from it with ``walq get-wal`` as restore_command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.homes import WalqHome, walq_command
from tests.services.pg import Cluster, chown_postgres, wait_for


@dataclass(frozen=True)
class PrimaryRun:
    at_restore_point: tuple[int, str] | None  # (row count, md5) of pgbench_accounts
    at_end: tuple[int, str]
    last_wal: str


def run_archiving_primary(
    cluster_factory,
    home: WalqHome,
    base: Path,
    *,
    transactions: int = 400,
    restore_point: str | None = None,
    archive_timeout: float = 120,
) -> PrimaryRun:
    """A primary archiving through ``walq put-wal``: pgbench, a base backup in ``base``,
    more pgbench (around a named restore point, if given), every WAL handed to walq.

    Returns the data fingerprints and the last WAL it switched to."""
    primary = cluster_factory(
        "primary",
        conf={
            "archive_mode": "on",
            "archive_command": f"'{walq_command(home, 'put-wal pg1 %p')}'",
        },
    )
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


def run_past_restore_point_and_archive(
    cluster_factory, home: WalqHome, base: Path, restore_point: str
) -> tuple[tuple[int, str], tuple[int, str]]:
    """``run_archiving_primary`` around a named restore point, then ``walq archive`` as the
    postgres user. Returns the data at the restore point and at the end, which differ."""
    run = run_archiving_primary(cluster_factory, home, base, restore_point=restore_point)
    at_restore_point, at_end = run.at_restore_point, run.at_end
    assert at_restore_point is not None and at_end != at_restore_point

    res = home.run("archive", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return at_restore_point, at_end


def archived_through(cluster: Cluster, name: str) -> None:
    """Wait until PostgreSQL's archiver has handed ``name`` (and everything before) to walq."""

    def done() -> bool:
        last = cluster.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        ready = cluster.psql(
            "SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready'"
        )
        return last >= name and ready == "0"

    wait_for(done, 120, f"archive_command to archive {name}\n{cluster.log()}", interval=0.2)


def restore_from_archive(
    cluster_root: Path, source: Cluster, home: WalqHome, conf: dict[str, str] | None = None
) -> Cluster:
    """A cluster recovered from ``source``'s base backup (taken earlier into cluster_root/data)."""
    restored = Cluster(cluster_root)
    chown_postgres(home.root)
    restored.configure(
        {
            "port": str(restored.port),
            "unix_socket_directories": f"'{restored.root}'",
            "restore_command": f"'{walq_command(home, 'get-wal', 'pg1', '%f', '%p')}'",
            "archive_mode": "off",
            **(conf or {}),
        }
    )
    restored._run(["touch", str(restored.data / "recovery.signal")])
    restored.start()
    wait_for(
        lambda: restored.psql("SELECT pg_is_in_recovery()") == "f",
        180,
        f"the restored cluster to finish recovery\n{restored.log()}",
        interval=0.5,
    )
    return restored


def take_backup(source: Cluster, root: Path) -> None:
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    chown_postgres(root)
    source.basebackup(root / "data")


@contextmanager
def recovered(root: Path, base: Path, conf: dict[str, str]) -> Iterator[Cluster]:
    """A copy of the base backup ``base`` in ``root``, recovered with ``conf``
    (restore_command, recovery targets) and promoted; stopped on leaving."""
    cluster = Cluster(root).restore_from(base, conf)
    cluster.start()
    try:
        cluster.wait_promoted()
        yield cluster
    finally:
        cluster.stop("immediate")


def recovered_to_restore_point(
    root: Path, base: Path, restore_command: str, restore_point: str
) -> AbstractContextManager[Cluster]:
    """``recovered`` up to a named restore point, then promoted."""
    return recovered(
        root,
        base,
        {
            "restore_command": restore_command,
            "recovery_target_name": f"'{restore_point}'",
            "recovery_target_action": "'promote'",
        },
    )
