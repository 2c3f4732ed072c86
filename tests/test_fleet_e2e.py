"""End to end in fleet mode: a real cluster's WAL archived by three Celery worker
processes (private Redis, PostgreSQL catalog), each WAL exactly once, catalog and
storage in agreement, and a point-in-time restore through ``walq get-wal``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.services.fleet import stored_names, wait_settled
from tests.services.homes import WalqHome, walq_command, xlogdb_names
from tests.services.pg import chown_postgres
from tests.services.pitr import recovered, run_archiving_primary
from walq.catalog import WalState, open_catalog


def test_three_workers_archive_real_wal_once_and_pitr_restores(
    fleet_home, cluster_factory, workdir: Path, fleet_factory, walq_runnable_by_postgres
) -> None:
    home: WalqHome = fleet_home()
    assert home.run("catalog", "init").returncode == 0
    home.give_to_postgres()  # archive_command runs as the postgres user, as in production
    fleet = fleet_factory(home.config_path)
    for name in ("w1", "w2", "w3"):
        fleet.worker(name)
    fleet.beat()

    run = run_archiving_primary(cluster_factory, home, workdir / "base", transactions=1500)
    expected, last = run.at_end, run.last_wal

    catalog = open_catalog(home.config)
    try:
        wait_settled(home, catalog, fleet)
        archived = catalog.archived_names("pg1")
        assert last in archived
        assert len(archived) >= 10, archived
        assert catalog.records("pg1", WalState.FAILED) == []
        # exactly once: one payload, one xlogdb line, one catalog row per WAL
        assert sorted(xlogdb_names(home.wals())) == archived
        assert stored_names(home.wals()) == archived
        busy = [
            p.name for p in fleet.procs if p.name.startswith("w") and "Task walq." in p.output()
        ]
        assert len(busy) >= 2, f"work did not spread over the workers: {busy}"
    finally:
        catalog.close()

    status = home.run("status", "--json", check=True)
    data = json.loads(status.stdout)
    assert data["servers"][0]["watermark"] is not None
    assert set(data["queues"]) == {"walq.scan", "walq.cpu", "walq.io"}

    chown_postgres(home.root)
    assert home.run("verify", "pg1", as_pg=True).returncode == 0
    restore_cmd = f"'{walq_command(home, 'get-wal pg1 %f %p')}'"
    with recovered(
        workdir / "restored", workdir / "base", {"restore_command": restore_cmd}
    ) as restored:
        assert restored.accounts_fingerprint() == expected
