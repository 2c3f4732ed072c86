"""walq check against a real cluster: all OK, then each condition broken alone.

The server is archived both ways (archive_command and a streaming receiver),
so every check applies. Each step breaks one thing, asserts that exactly the
matching line(s) turn FAILED and the exit code is 1, then repairs it and waits
for a clean pass (exit 0) before the next step.
"""

from __future__ import annotations

import os
import re
import shutil

from tests.services.homes import WalqHome, walq_command
from tests.services.pg import Cluster, chown_postgres, wait_for
from tests.services.pitr import archived_through
from tests.services.receiver import Receiver, close_segment

LINE = re.compile(r"^pg1: (?P<name>.+?): (?P<status>OK|FAILED|SKIPPED)(?: \((?P<detail>.*)\))?$")


def run_check(home: WalqHome) -> tuple[int, dict[str, tuple[bool, str]]]:
    res = home.run("check", "pg1", timeout=120)
    lines: dict[str, tuple[bool, str]] = {}
    for line in res.stdout.splitlines():
        m = LINE.match(line)
        assert m, f"not a check line: {line!r}"
        lines[m["name"]] = (m["status"] != "FAILED", m["detail"] or "")
    return res.returncode, lines


def failed(lines: dict[str, tuple[bool, str]]) -> set[str]:
    return {name for name, (ok, _) in lines.items() if not ok}


def expect_failed(home: WalqHome, *names: str) -> dict[str, tuple[bool, str]]:
    """Exactly ``names`` fail (waiting out a receiver that is still reconnecting), exit code 1."""
    seen: dict = {}

    def settled() -> bool:
        seen["code"], seen["lines"] = run_check(home)
        return failed(seen["lines"]) == set(names)

    try:
        wait_for(settled, 120, f"exactly {names} to fail", interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last check: {seen}") from None
    assert seen["code"] == 1
    return seen["lines"]


def wait_all_ok(home: WalqHome) -> dict[str, tuple[bool, str]]:
    seen: dict = {}

    def ok() -> bool:
        code, lines = run_check(home)
        seen["lines"] = lines
        return code == 0 and not failed(lines)

    try:
        wait_for(ok, 180, "walq check to pass", interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last check: {seen}") from None
    return seen["lines"]


def activity_and_switch(cluster: Cluster) -> str:
    cluster.psql("CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)")
    return cluster.switch_wal()


def test_check_each_condition(cluster_factory, make_home, walq_runnable_by_postgres):
    pg = cluster_factory("pg")
    home = make_home(
        {"pg1": {"conninfo": pg.conninfo, "archiver": True, "streaming_archiver": True}},
        archive_lag_maximum="1 hour",  # WAL waits between steps here; test_check_progress.py
    )
    put_wal = f"'{walq_command(home, 'put-wal', 'pg1', '%p')}'"
    pg.configure({"archive_mode": "on", "archive_command": put_wal})
    home.run("archive", "pg1", check=True)  # creates the directories
    chown_postgres(home.root)  # archive_command (postgres) writes into incoming/
    pg.start()
    home.run("receive-wal", "pg1", "--create-slot", check=True)
    config_text = home.config_path.read_text()
    rec = Receiver(home).start()
    try:
        rec.wait_streaming()
        closed = close_segment(pg, rec.streaming)
        archived_through(pg, closed)
        res = home.run("archive", "pg1")
        assert res.returncode == 0, res.stdout + res.stderr

        # All conditions hold.
        lines = wait_all_ok(home)
        for name in (
            "PostgreSQL reachable",
            "archive_mode on",
            "archive_command uses walq",
            "no archiver failures",
            "replication slot",
            "receiver running",
            "storage",
            "incoming_dir writable",
            "streaming_dir writable",
            "errors_dir writable",
            "no gaps",
            "no failed WALs",
            "system identifier matches",
        ):
            assert lines[name][0], (name, lines)

        # PostgreSQL down.
        pg.stop()
        expect_failed(home, "PostgreSQL reachable")
        pg.start()
        wait_all_ok(home)

        # archive_mode off.
        pg.psql("ALTER SYSTEM SET archive_mode = off")
        pg.stop()
        pg.start()
        lines = expect_failed(home, "archive_mode on")
        assert "archive_mode = off" in lines["archive_mode on"][1]
        pg.psql("ALTER SYSTEM SET archive_mode = on")
        pg.stop()
        pg.start()
        wait_all_ok(home)

        # archive_command not calling walq.
        pg.psql("ALTER SYSTEM SET archive_command = 'cp %p /nonexistent/%f'")
        pg.psql("SELECT pg_reload_conf()")
        wait_for(lambda: pg.psql("SHOW archive_command").startswith("cp "), 30, "the reload")
        expect_failed(home, "archive_command uses walq")

        # ... and failing: that command cannot succeed.
        def archiver_failed() -> bool:
            if int(pg.psql("SELECT failed_count FROM pg_stat_archiver")) > 0:
                return True
            activity_and_switch(pg)  # give the archiver something to fail on
            return False

        wait_for(archiver_failed, 60, "an archiver failure", interval=0.5)
        lines = expect_failed(home, "archive_command uses walq", "no archiver failures")
        assert "failure" in lines["no archiver failures"][1]
        pg.psql(f"ALTER SYSTEM SET archive_command = {put_wal}")
        pg.psql("SELECT pg_reload_conf()")
        wait_all_ok(home)  # the archiver retries with walq and succeeds

        # Receiver stopped: its slot goes inactive.
        assert rec.stop() == 0
        expect_failed(home, "receiver running", "replication slot")
        # Slot dropped as well.
        pg.psql("SELECT pg_drop_replication_slot('walq_pg1')")
        lines = expect_failed(home, "receiver running", "replication slot")
        assert "does not exist" in lines["replication slot"][1]
        home.run("receive-wal", "pg1", "--create-slot", check=True)
        rec = Receiver(home).start()
        rec.wait_streaming()
        wait_all_ok(home)

        # Storage unreachable, then a source directory not writable (config edits).
        home.config_path.write_text(config_text + 'storage_url = "file:///dev/null/wals"\n')
        expect_failed(home, "storage")
        home.config_path.write_text(config_text + 'incoming_dir = "/dev/null/incoming"\n')
        expect_failed(home, "incoming_dir writable")
        # The configured system identifier is not PostgreSQL's.
        home.config_path.write_text(config_text + "system_identifier = 1234567890\n")
        lines = expect_failed(home, "system identifier matches")
        assert "1234567890" in lines["system identifier matches"][1]
        home.config_path.write_text(config_text)
        wait_all_ok(home)

        # A gap: one segment missing from both source directories when archive runs.
        names = [activity_and_switch(pg) for _ in range(3)]
        archived_through(pg, names[-1])
        close_segment(pg, rec.streaming)
        aside = home.root / "aside"
        aside.mkdir()
        missing = names[1]
        for d in (home.incoming(), rec.streaming):
            if (d / missing).exists():
                shutil.move(d / missing, aside / f"{d.name}-{missing}")
        assert home.run("archive", "pg1").returncode == 0
        lines = expect_failed(home, "no gaps")
        assert missing in lines["no gaps"][1]
        shutil.move(aside / f"incoming-{missing}", home.incoming() / missing)
        assert home.run("archive", "pg1").returncode == 0
        wait_all_ok(home)

        # A failed WAL: garbage under a valid name goes to errors/ and the catalog.
        junk = home.incoming() / "000000010000000000000FFE"
        junk.write_bytes(os.urandom(1 << 20))
        assert home.run("archive", "pg1").returncode == 1
        lines = expect_failed(home, "no failed WALs", "errors directory empty")
        assert "000000010000000000000FFE" in lines["no failed WALs"][1]
    finally:
        rec.stop()
