"""walq.postgres against real clusters: facts, switch-wal, identity, secrets."""

from __future__ import annotations

import json
import shutil

from tests.services.pg import wait_for
from walq.config import ServerConfig
from walq.postgres.client import default_slot_name, fetch_info, mask_conninfo


def server_for(cluster, **extra) -> ServerConfig:
    return ServerConfig(name="pg1", conninfo=cluster.conninfo, **extra)


def test_fetch_info_reads_the_server(cluster_factory):
    pg = cluster_factory("pg").start()
    info = fetch_info(server_for(pg))
    assert info.version_num // 10000 == 15
    assert info.system_identifier == int(
        pg.psql("SELECT system_identifier FROM pg_control_system()")
    )
    assert info.wal_segment_size == 1 << 20
    assert info.archive_mode == "off"
    assert info.in_recovery is False
    assert info.current_wal == pg.current_wal()
    assert info.archiver.failed_count == 0 and not info.archiver.failing
    assert info.slots == [] and info.replication_lag_bytes is None

    pg.psql("SELECT pg_create_physical_replication_slot('walq_pg1', true)")
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    slot = fetch_info(server_for(pg)).slot("walq_pg1")
    assert slot is not None and slot.active is False and slot.retained_bytes > 0


def test_default_slot_names_follow_postgresql_rules():
    assert default_slot_name("pg1") == "walq_pg1"
    assert default_slot_name("DB-main.eu") == "walq_db_main_eu"


def test_switch_wal_command(cluster_factory, make_home):
    pg = cluster_factory("pg").start()
    home = make_home({"pg1": {"conninfo": pg.conninfo}})
    pg.psql("CREATE TABLE t AS SELECT 1 AS x")
    before = pg.current_wal()
    res = home.run("switch-wal", "pg1", check=True)
    assert f"The WAL file {before} has been closed" in res.stdout
    # Right after a switch the server sits at a segment start: nothing to close ...
    res = home.run("switch-wal", "pg1", check=True)
    assert "No switch required" in res.stdout
    # ... unless a checkpoint writes something first.
    insert_wal = "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"
    current = pg.psql(insert_wal)
    res = home.run("switch-wal", "pg1", "--force", check=True)
    assert f"The WAL file {current} has been closed" in res.stdout
    assert pg.psql(insert_wal) > current


def test_wal_from_another_cluster_goes_to_errors(cluster_factory, make_home):
    ours = cluster_factory("ours").start()
    other = cluster_factory("other").start()
    ours_id = int(ours.psql("SELECT system_identifier FROM pg_control_system()"))
    other_id = int(other.psql("SELECT system_identifier FROM pg_control_system()"))
    assert ours_id != other_id
    other.psql("CREATE TABLE t AS SELECT 1 AS x")
    foreign = other.switch_wal()
    home = make_home({"pg1": {"conninfo": ours.conninfo}})
    home.run("archive", "pg1", check=True)  # nothing yet: learns the identity from PostgreSQL
    assert json.loads(home.run("status", "pg1", "--json").stdout)["servers"][0][
        "system_identifier"
    ] == str(ours_id)

    shutil.copy(other.data / "pg_wal" / foreign, home.incoming() / foreign)
    res = home.run("archive", "pg1")
    assert res.returncode == 1
    assert not (home.incoming() / foreign).exists()
    parked = [p.name for p in home.errors().iterdir()]
    assert len(parked) == 1 and parked[0].startswith(foreign)
    failed = json.loads(home.run("list", "pg1", "--failed", "--json").stdout)
    assert [r["name"] for r in failed] == [foreign]
    message = failed[0]["last_error"]
    assert str(ours_id) in message and str(other_id) in message, message
    assert not home.wals().exists() or not any(p.name == foreign for p in home.wals().rglob("*"))


def test_archive_refuses_a_conninfo_pointing_at_another_cluster(cluster_factory, make_home):
    pg = cluster_factory("pg").start()
    real = int(pg.psql("SELECT system_identifier FROM pg_control_system()"))
    home = make_home({"pg1": {"conninfo": pg.conninfo, "system_identifier": 1234567890123}})
    res = home.run("archive", "pg1")
    assert res.returncode == 2
    assert str(real) in res.stderr and "1234567890123" in res.stderr


def test_passwords_never_printed(make_home):
    secret = "s3cr3t-Pa55"
    home = make_home(
        {
            "pg1": {
                "conninfo": f"host=127.0.0.1 port=1 user=walq password={secret} dbname=postgres connect_timeout=2",
                "streaming_archiver": True,
            }
        }
    )
    outputs = [
        home.run("check", "pg1"),
        home.run("status", "pg1"),
        home.run("status", "pg1", "--json"),
        home.run("switch-wal", "pg1"),
        home.run("receive-wal", "pg1", "--create-slot"),
    ]
    for res in outputs:
        assert secret not in res.stdout + res.stderr
    assert "FAILED" in outputs[0].stdout and outputs[0].returncode == 1
    assert outputs[3].returncode == 2 and "cannot connect" in outputs[3].stderr
    assert mask_conninfo(f"postgresql://u:{secret}@h/db") == "postgresql://u:********@h/db"
    assert secret not in mask_conninfo(f"password='{secret} x' host=h")


def test_receiver_without_slot_says_how_to_create_it(cluster_factory, make_home):
    pg = cluster_factory("pg").start()
    home = make_home({"pg1": {"conninfo": pg.conninfo, "streaming_archiver": True}})
    res = home.run("receive-wal", "pg1", timeout=120)
    assert res.returncode == 2
    assert "walq receive-wal --create-slot pg1" in res.stderr
    assert (
        home.run("receive-wal", "pg1", "--create-slot", check=True).stdout.strip()
        == "Replication slot 'walq_pg1' created"
    )
    assert "already exists" in home.run("receive-wal", "pg1", "--create-slot", check=True).stdout
    wait_for(
        lambda: (
            pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walq_pg1'") == "1"
        ),
        30,
        "the slot",
    )
