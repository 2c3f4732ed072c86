"""``walq switch-wal SERVER --archive``: switch, then wait until that WAL is archived.

A real cluster whose archive_command is ``walq put-wal`` hands the closed segment
over; nothing else archives (no cron, no ``walq archive``): in embedded mode
switch-wal archives what arrives while it waits, as Barman's does. When the WAL
never arrives (archive_command succeeds without delivering it) it gives up after
--archive-timeout with one line and exit 1.
"""

from __future__ import annotations

import json

from tests.services.homes import walq_command
from tests.services.pg import chown_postgres, wait_for


def test_switch_wal_archive_waits_for_the_closed_wal(
    cluster_factory, make_home, walq_runnable_by_postgres
) -> None:
    pg = cluster_factory("pg")
    home = make_home({"pg1": {"conninfo": pg.conninfo}})
    pg.configure(
        {"archive_mode": "on", "archive_command": f"'{walq_command(home, 'put-wal', 'pg1', '%p')}'"}
    )
    home.give_to_postgres()
    chown_postgres(home.root)
    pg.start()
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    current = pg.current_wal()

    res = home.run("switch-wal", "pg1", "--archive", "--archive-timeout", "60", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines() == [
        f"The WAL file {current} has been closed on server 'pg1'",
        f"Waiting for the WAL file {current} from server 'pg1' (max: 60 seconds)",
        f"The WAL file {current} has been archived for server 'pg1'",
    ]
    rows = {r["name"]: r for r in json.loads(home.run("list", "pg1", "--json").stdout)}
    assert rows[current]["state"] == "archived"
    assert not (home.incoming() / current).exists()

    # Nothing written since: no switch, and the segment closed last is already archived.
    res = home.run("switch-wal", "pg1", "--archive", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No switch required" in res.stdout
    assert f"The WAL file {current} has been archived" in res.stdout

    # archive_command "succeeds" without handing anything to walq: the wait times out.
    pg.psql("ALTER SYSTEM SET archive_command = 'true'")
    pg.stop()  # a restart, not a reload: the archiver must use the new command for sure
    pg.start()
    pg.psql("INSERT INTO t SELECT generate_series(1, 1000)")
    lost = pg.current_wal()
    res = home.run("switch-wal", "pg1", "--archive", "--archive-timeout", "2", as_pg=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr == (
        f"walq: switch-wal: pg1: the WAL file {lost} has not been archived within 2 seconds "
        "(is archive_command delivering it, and walq archive or the fleet running?)\n"
    )
    assert f"The WAL file {lost} has been closed" in res.stdout


def test_switch_wal_archive_in_a_fleet_waits_for_the_workers(
    fleet_home, cluster_factory, fleet_factory, walq_runnable_by_postgres
) -> None:
    """In fleet mode the workers archive: with none running it archives nothing itself and
    times out; once a worker and beat run, the same command succeeds."""
    pg = cluster_factory("pg")
    home = fleet_home({"pg1": {"conninfo": pg.conninfo}})
    assert home.run("catalog", "init").returncode == 0
    pg.configure(
        {"archive_mode": "on", "archive_command": f"'{walq_command(home, 'put-wal', 'pg1', '%p')}'"}
    )
    home.give_to_postgres()
    pg.start()
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    first = pg.current_wal()
    res = home.run("switch-wal", "pg1", "--archive", "--archive-timeout", "2", as_pg=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"the WAL file {first} has not been archived within 2 seconds" in res.stderr
    assert (home.incoming() / first).exists()  # delivered, and left to the (absent) fleet

    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")
    fleet.beat()
    pg.psql("INSERT INTO t SELECT generate_series(1, 1000)")
    second = pg.current_wal()
    res = home.run("switch-wal", "pg1", "--archive", "--archive-timeout", "120", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr + fleet.logs()
    assert f"The WAL file {second} has been archived for server 'pg1'" in res.stdout

    def states() -> dict[str, str]:
        return {r["name"]: r["state"] for r in json.loads(home.run("list", "--json").stdout)}

    assert states()[second] == "archived"
    wait_for(lambda: states().get(first) == "archived", 60, f"the fleet to archive {first}")
