"""Expiry in fleet mode: beat schedules walq.expire_server every expire_interval; a real
cluster's WAL (three pg_basebackups, pgbench between) archived by a Celery worker into a
PostgreSQL catalog, on local storage or on S3 (SeaweedFS), expired under the fenced
commit lock while archiving goes on.

On S3 the worker talks to SeaweedFS through a proxy that refuses DeleteObjects without
Content-MD5 (as stores that reject boto3's default CRC32 checksums do): the expiry's
deletes fall back to one DeleteObject per key."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.services.fleet import (
    celery_client,
    fleet_settings,
    fresh_schema_url,
    pending,
)
from tests.services.homes import WalqHome, xlogdb_names
from tests.services.pg import chown_postgres, wait_for
from tests.services.pitr import recovered
from tests.services.retention import (
    primary_with_three_backups,
    recovery_window_would_delete,
    restore_command,
    start_wal,
)
from tests.services.s3 import REGION, Bucket, FaultProxy, s3_settings
from walq.catalog import WalState, open_catalog
from walq.storage import open_storage


def stored_names(home: WalqHome) -> list[str]:
    return sorted(o.name for o in open_storage(home.config.server("pg1")).list())


@pytest.mark.timeout(600)  # three base backups, a fleet, two PITRs: minutes on a busy machine
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_beat_expires_redundancy_2_in_the_fleet(
    backend: str,
    make_home,
    cluster_factory,
    workdir: Path,
    redis_server,
    catalog_db,
    fleet_factory,
    walq_runnable_by_postgres,
    request,
) -> None:
    with contextlib.ExitStack() as stack:
        proxy: FaultProxy | None = None
        settings: dict[str, object] = {}
        if backend == "s3":
            bucket: Bucket = request.getfixturevalue("s3_bucket")
            proxy = stack.enter_context(
                FaultProxy(bucket.server.ports["s3"], every=0, refuse_batch_delete=True)
            )
            settings = s3_settings(
                bucket, endpoint=proxy.endpoint, compression="zstd", s3_region=REGION
            )
        home: WalqHome = make_home(
            {"pg1": {**settings, "retention_policy": "REDUNDANCY 2"}},
            **fleet_settings(redis_server.url, fresh_schema_url(catalog_db)),
            expire_interval=2.0,
        )
        assert home.run("catalog", "init").returncode == 0
        home.give_to_postgres()
        fleet = fleet_factory(home.config_path)
        stack.callback(fleet.stop_all)  # before the proxy goes
        fleet.worker("w1")
        fleet.beat()
        backups, at_end = primary_with_three_backups(cluster_factory, home, workdir)
        starts = [start_wal(b) for b in backups]
        expired_names = _expired_as_planned(home, fleet, starts)

        if proxy is not None:  # the batch was refused once, then one DELETE per expired object
            assert proxy.refused_batches >= 1
            assert proxy.single_deletes == len(expired_names), proxy.single_deletes
            assert "S3 DeleteObjects refused" in fleet.logs(0)
        assert "walq.expire_server" in fleet.logs(0)

        # an operator's call with a made-up server is refused, touching nothing
        result = celery_client(home.config_path).send_task("walq.expire_server", args=["ghost"])
        result.get(timeout=60, propagate=False)
        assert result.state == "FAILURE" and "unknown server 'ghost'" in str(result.result)

        # a recovery window, on the same fleet catalog and storage (dry run, time shifted)
        kept = stored_names(home)
        assert recovery_window_would_delete(home, days=30) == {
            n for n in kept if n[:24] < starts[2]
        }
        assert recovery_window_would_delete(home, days=0) == set()

        chown_postgres(home.root)
        res = home.run("verify", "pg1", as_pg=True)
        assert res.returncode == 0, res.stdout + res.stderr
        restore_cmd = restore_command(home, s3=backend == "s3")
        for i in (1, 2):
            with recovered(
                workdir / f"restored{i}", backups[i], {"restore_command": restore_cmd}
            ) as restored:
                assert restored.accounts_fingerprint() == at_end


def _expired_as_planned(home: WalqHome, fleet, starts: list[str]) -> set[str]:
    """Wait for beat's expiry to expire exactly what precedes the second backup, and its
    objects to go; return the expired names."""
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
        wait_for(lambda: stored_names(home) == archived, 30, "the objects to go")
        if home.config.server("pg1").local_wals_dir is not None:
            assert sorted(xlogdb_names(home.wals())) == archived
        assert catalog.records("pg1", WalState.FAILED) == []
        expired = catalog.records("pg1", WalState.EXPIRED)
        reasons = {r.reason for r in expired}
        assert all(r.startswith("REDUNDANCY 2: timeline 1 kept from ") for r in reasons), reasons
        return {r.name for r in expired}
    finally:
        catalog.close()
