"""Expiry in fleet mode: beat schedules walq.expire_server every expire_interval; a real
cluster's WAL (three pg_basebackups, pgbench between) archived by a Celery worker into a
PostgreSQL catalog, expired under the fenced commit lock while archiving goes on."""

from __future__ import annotations

from pathlib import Path

from tests.services.fleet import (
    celery_client,
    fleet_settings,
    fresh_schema_url,
    pending,
    stored_names,
)
from tests.services.homes import WalqHome, walq_command, xlogdb_names
from tests.services.pg import chown_postgres, wait_for
from tests.services.pitr import recovered
from tests.services.retention import primary_with_three_backups, start_wal
from walq.catalog import WalState, open_catalog


def test_beat_expires_redundancy_2_in_the_fleet(
    make_home,
    cluster_factory,
    workdir: Path,
    redis_server,
    catalog_db,
    fleet_factory,
    walq_runnable_by_postgres,
) -> None:
    home: WalqHome = make_home(
        {"pg1": {"retention_policy": "REDUNDANCY 2"}},
        **fleet_settings(redis_server.url, fresh_schema_url(catalog_db)),
        expire_interval=2.0,
    )
    assert home.run("catalog", "init").returncode == 0
    home.give_to_postgres()
    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")
    fleet.beat()
    backups, at_end = primary_with_three_backups(cluster_factory, home, workdir)
    starts = [start_wal(b) for b in backups]

    catalog = open_catalog(home.config)
    try:

        def expired_as_planned() -> bool:
            if pending(home.incoming()) or catalog.counts("pg1")["claimed"]:
                return False
            rows = catalog.records("pg1")
            expired = {r.name for r in rows if r.state is WalState.EXPIRED}
            return bool(expired) and expired == {r.name for r in rows if r.name[:24] < starts[1]}

        try:
            wait_for(
                expired_as_planned,
                240,
                "beat's expiry to expire everything before the second backup",
                0.5,
            )
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None
        archived = catalog.archived_names("pg1")
        assert starts[1] in archived and starts[2] in archived
        assert all(n[:24] >= starts[1] for n in archived)
        wait_for(lambda: stored_names(home.wals()) == archived, 30, "the objects to go")
        assert sorted(xlogdb_names(home.wals())) == archived
        assert catalog.records("pg1", WalState.FAILED) == []
        reasons = {r.reason for r in catalog.records("pg1", WalState.EXPIRED)}
        assert all(r.startswith("REDUNDANCY 2: timeline 1 kept from ") for r in reasons), reasons
    finally:
        catalog.close()
    assert "walq.expire_server" in fleet.logs()

    # an operator's call with a made-up server is refused, touching nothing
    result = celery_client(home.config_path).send_task("walq.expire_server", args=["ghost"])
    result.get(timeout=60, propagate=False)
    assert result.state == "FAILURE" and "unknown server 'ghost'" in str(result.result)

    chown_postgres(home.root)
    assert home.run("verify", "pg1", as_pg=True).returncode == 0
    restore_cmd = f"'{walq_command(home, 'get-wal pg1 %f %p')}'"
    with recovered(workdir / "restored", backups[1], {"restore_command": restore_cmd}) as restored:
        assert restored.accounts_fingerprint() == at_end
