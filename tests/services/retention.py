"""Retention tests' real parts: a primary archiving through walq with three base backups."""

from __future__ import annotations

import re
from pathlib import Path

from tests.services.homes import WalqHome, walq_command


def start_wal(backup: Path) -> str:
    """The backup's START WAL file, from the backup_label pg_basebackup wrote (independent of walq)."""
    text = (backup / "backup_label").read_text()
    return re.search(r"START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", text).group(1)


def primary_with_three_backups(
    cluster_factory, home: WalqHome, workdir: Path
) -> tuple[list[Path], tuple]:
    """A primary archiving through ``walq put-wal``: three pg_basebackups (workdir/b0..b2/data)
    with pgbench between them, more pgbench, every WAL handed to walq, stopped.
    Returns the backups' data directories and the data's fingerprint at the end."""
    primary = cluster_factory(
        "primary",
        conf={"archive_mode": "on", "archive_command": f"'{walq_command(home, 'put-wal pg1 %p')}'"},
    )
    primary.start()
    primary.pgbench_init(1)
    backups = []
    for i in range(3):
        if i:
            primary.pgbench(300)
        backups.append(workdir / f"b{i}" / "data")
        primary.basebackup(backups[-1])
    primary.pgbench(200)
    at_end = primary.accounts_fingerprint()
    last = primary.switch_wal()
    primary.wait_archived(last, timeout=120)
    primary.stop()
    return backups, at_end
