"""The fleet storing to a real S3 server (SeaweedFS), with the pools split the way
operators run them: scans and CPU work on prefork, store and commit on threads.
Each WAL is stored once and comes back byte for byte through ``walq get-wal``."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tests.services.fleet import (
    pending,
)
from tests.services.pg import wait_for
from tests.services.s3 import Bucket, s3_settings
from walq.catalog import WalState, open_catalog


def test_fleet_archives_to_s3_with_prefork_and_thread_pools(
    fleet_home, workdir: Path, wal_corpus, fleet_factory, s3_bucket: Bucket
) -> None:
    home = fleet_home({"pg1": s3_settings(s3_bucket, compression="lz4")})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:10])
    fleet = fleet_factory(home.config_path)
    fleet.worker("cpu", queues="walq.cpu")
    io = fleet.worker("io", pool="threads", concurrency=3, queues="walq.scan,walq.io")
    fleet.beat()
    catalog = open_catalog(home.config)
    try:
        try:
            wait_for(
                lambda: catalog.archived_names("pg1") == names and not pending(home.incoming()),
                180,
                "every WAL on S3",
                0.25,
            )
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None
        assert catalog.records("pg1", WalState.FAILED) == []
        keys = [k for k in s3_bucket.object_keys("fleet/pg1/wals/") if k.endswith(".lz4")]
        assert sorted(k.rsplit("/", 1)[1].removesuffix(".lz4") for k in keys) == names
    finally:
        catalog.close()
    assert "walq.commit_server[" in io.output(), "group commits ran on the thread pool"
    for name in names[:3] + names[-2:]:
        dest = workdir / f"restored-{name}"
        res = home.run("get-wal", "pg1", name, str(dest))
        assert res.returncode == 0, res.stderr
        assert filecmp.cmp(dest, wal_corpus.path(name), shallow=False)
