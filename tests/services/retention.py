"""Retention tests' real parts: a primary archiving through walq with three base backups,
and what the embedded and fleet expiry tests both check (recovery window, restore command)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.services.homes import WalqHome, walq_command
from tests.services.s3 import ACCESS_KEY, REGION, SECRET_KEY


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


def recovery_window_would_delete(home: WalqHome, days: int, server: str = "pg1") -> set[str]:
    """`RECOVERY WINDOW OF 1 DAYS`, dry run, as if ``days`` days had passed: the window keeps
    the backups that ended within it and the newest one that ended before it."""
    from datetime import UTC, datetime, timedelta

    from walq.retention.expire import expire_server

    config = home.config
    settings = config.servers[server].model_copy(
        update={"retention_policy": "RECOVERY WINDOW OF 1 DAYS"}
    )
    config = config.model_copy(update={"servers": {**config.servers, server: settings}})
    result = expire_server(
        config, server, dry_run=True, now=datetime.now(UTC) + timedelta(days=days)
    )
    assert result.refused is None, result.refused
    return set(result.to_delete)


def restore_command(home: WalqHome, s3: bool, server: str = "pg1") -> str:
    """restore_command for a recovered cluster: walq get-wal (with the test S3 identity)."""
    env = (
        f"env AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} "
        f"AWS_DEFAULT_REGION={REGION} AWS_CONFIG_FILE=/dev/null "
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null "
        if s3
        else ""
    )
    return f"'{env}{walq_command(home, f'get-wal {server} %f %p')}'"
