"""Point-in-time recovery through walq: archive_command = put-wal, restore_command = get-wal.

A real cluster produces WAL under pgbench; a base backup is restored twice,
once to a named restore point and once to the end of the archive, and each
must reach exactly the data the primary had at that moment.
"""

from __future__ import annotations

from pathlib import Path

from tests.services.homes import WalqHome, walq_command
from tests.services.pitr import (
    recovered,
    recovered_to_restore_point,
    run_past_restore_point_and_archive,
)


def test_pitr_to_restore_point_and_to_end(
    walq_home: WalqHome, cluster_factory, workdir: Path, walq_runnable_by_postgres
) -> None:
    walq_home.run("status", as_pg=True)  # home owned by the postgres user, as in production
    at_restore_point, at_end = run_past_restore_point_and_archive(
        cluster_factory, walq_home, workdir / "base", "walq_rp1"
    )
    assert walq_home.run("verify", "pg1", as_pg=True).returncode == 0

    restore_cmd = f"'{walq_command(walq_home, 'get-wal pg1 %f %p --prefetch 4')}'"
    with recovered_to_restore_point(
        workdir / "to_point", workdir / "base", restore_cmd, "walq_rp1"
    ) as to_point:
        assert to_point.accounts_fingerprint() == at_restore_point

    with recovered(
        workdir / "to_end", workdir / "base", {"restore_command": restore_cmd}
    ) as to_end:
        assert to_end.accounts_fingerprint() == at_end
        assert "restored log file" in to_end.log()
