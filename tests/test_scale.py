"""The issue's scale check: 1,000 real 1 MiB segments archived, then verified clean."""

from __future__ import annotations

import os
from pathlib import Path

from tests.services.homes import WalqHome
from walq.catalog import open_catalog


def test_thousand_real_segments_archive_and_verify(
    walq_home: WalqHome, cluster_factory, workdir: Path
) -> None:
    incoming = walq_home.incoming()
    incoming.mkdir(parents=True)
    os.chmod(walq_home.root, 0o777)
    os.chmod(walq_home.home, 0o777)
    os.chmod(walq_home.server_dir(), 0o777)
    os.chmod(incoming, 0o777)
    # cp through a dot-name then rename, so a scan never sees a half-copied file
    cluster = cluster_factory(
        "bulk",
        conf={
            "archive_mode": "on",
            "archive_command": f"'cp %p {incoming}/.%f.cp && mv {incoming}/.%f.cp {incoming}/%f'",
            "max_wal_size": "256MB",
        },
    )
    cluster.start()
    cluster.psql("CREATE TABLE bulk (id int, pad text)")
    while len(os.listdir(incoming)) < 1000:
        cluster.psql(
            "INSERT INTO bulk SELECT g, repeat(md5(g::text), 28) FROM generate_series(1, 100000) g"
        )
        cluster.switch_wal()
    last = cluster.switch_wal()
    cluster.wait_archived(last, timeout=300)
    cluster.stop()
    count = len([n for n in os.listdir(incoming) if not n.startswith(".")])
    assert count >= 1000

    res = walq_home.run("archive", timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    catalog = open_catalog(walq_home.config)
    try:
        assert len(catalog.archived_names("pg1")) == count
    finally:
        catalog.close()
    res = walq_home.run("verify", "pg1", timeout=900)
    assert res.returncode == 0, res.stdout[-2000:]
    assert f"{count} WAL(s) read back, 0 problem(s)" in res.stdout
    status = walq_home.run("status", "pg1", "--json", check=True)
    assert '"gaps": []' in status.stdout
