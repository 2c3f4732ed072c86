"""Barman 3.19.1 sharing walq's home for real: Barman takes the base backups
(``backup_method = postgres`` against a throwaway cluster) and runs its own retention
(``barman delete``), walq archives the WAL (``put-wal`` then ``walq archive``).

* `walq status` counts Barman's backups as `walq expire` discovers them: a backup
  Barman describes is counted once, as Barman says (WAITING_FOR_WALS: not yet; DONE:
  counted), next to a backup only walq's ``.backup`` file describes (a plain
  pg_basebackup);
* after `barman delete pg1 oldest` (Barman removes the backup and every WAL before the
  remaining oldest backup), `walq verify` fails until `walq catalog resync` marks
  exactly those rows expired; then verify is clean and `walq check` is OK.

Barman's own incoming directory is a separate, empty one: walq alone archives
(README, "Sharing a home with Barman").
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.services.barman import barman_of
from tests.services.homes import WalqHome, walq_command
from tests.services.pg import as_postgres, chown_postgres
from walq.catalog import WalState
from walq.catalog.sqlite import SqliteCatalog
from walq.report.jsontime import iso_utc
from walq.retention.backups import BackupInfo, parse_barman_info, read_barman_backup_infos
from walq.storage import open_storage


class SharingBarman:
    """Barman 3.19.1 (the shared test venv) configured on walq's home, run as postgres."""

    def __init__(self, home: WalqHome, workdir: Path, conninfo: str, streaming: str) -> None:
        self.barman = barman_of()
        self.home = home
        self.conf = workdir / "barman.conf"
        own = workdir / "barman-own"  # Barman's incoming/streaming/errors: never walq's
        for sub in ("incoming", "streaming", "errors"):
            (own / sub).mkdir(parents=True)
        self.conf.write_text(
            f"[barman]\nbarman_home = {home.home}\nbarman_user = postgres\n"
            f"log_file = {workdir}/barman.log\n\n"
            "[pg1]\ndescription = Barman for base backups, walq for WAL\n"
            f"conninfo = {conninfo}\nstreaming_conninfo = {streaming}\n"
            "backup_method = postgres\nimmediate_checkpoint = true\narchiver = on\nstreaming_archiver = off\n"
            f"incoming_wals_directory = {own}/incoming\n"
            f"streaming_wals_directory = {own}/streaming\nerrors_directory = {own}/errors\n"
        )
        chown_postgres(workdir)

    def __call__(self, *args: str) -> str:
        chown_postgres(self.home.root)
        res = subprocess.run(
            [*as_postgres(), str(self.barman), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, f"barman {' '.join(args)}: {res.stdout}\n{res.stderr}"
        return res.stdout

    def backups(self) -> list[BackupInfo]:
        infos = read_barman_backup_infos(str(self.home.server_dir()))
        return [parse_barman_info(backup_id, content) for backup_id, content in infos]


def window(home: WalqHome) -> dict:
    res = home.run("status", "pg1", "--json", as_pg=True, check=True)
    return json.loads(res.stdout)["servers"][0]["retention"]


def catalog_states(home: WalqHome) -> dict[str, WalState]:
    cat = SqliteCatalog(home.config.catalog_path, readonly=True)
    try:
        return {r.name: r.state for r in cat.records("pg1")}
    finally:
        cat.close()


def stored_names(home: WalqHome) -> list[str]:
    return sorted(o.name for o in open_storage(home.config.server("pg1")).list())


@pytest.mark.timeout(600)  # a cluster, three base backups, Barman: minutes on a busy machine
def test_status_counts_barmans_backups_and_resync_follows_barman_delete(
    make_home, cluster_factory, workdir: Path, walq_runnable_by_postgres
) -> None:
    home: WalqHome = make_home({"pg1": {"compression": "zstd"}})
    home.give_to_postgres()
    primary = cluster_factory(
        "primary",
        conf={"archive_mode": "on", "archive_command": f"'{walq_command(home, 'put-wal pg1 %p')}'"},
    )
    barman = SharingBarman(
        home,
        workdir,
        primary.conninfo,
        f"host={primary.root} port={primary.port} user=postgres",
    )
    primary.start()
    primary.pgbench_init(1)

    def walq_archives_everything() -> None:
        last = primary.switch_wal()
        primary.wait_archived(last, timeout=120)
        home.run("archive", as_pg=True, check=True)

    walq_archives_everything()  # Barman wants WAL archived before its first backup

    def barman_backup() -> BackupInfo:
        """`barman backup`; walq archives its WAL; `barman check-backup` sees them: DONE."""
        known = {b.name for b in barman.backups()}
        barman("backup", "pg1")
        (new,) = [b for b in barman.backups() if b.name not in known]
        assert new.barman_status == "WAITING_FOR_WALS", new  # walq has not archived the end yet
        walq_archives_everything()
        # walq has the backup's .backup file, but Barman says it is not finished: not counted
        assert window(home)["base_backups"] == len(known)
        barman("check-backup", "pg1", new.name)
        (done,) = [b for b in barman.backups() if b.name == new.name]
        assert done.barman_status == "DONE", done
        assert window(home)["base_backups"] == len(known) + 1
        return done

    first = barman_backup()
    primary.pgbench(300)
    second = barman_backup()
    primary.pgbench(300)
    primary.basebackup(workdir / "plain" / "data")  # walq's .backup file alone describes it
    primary.pgbench(100)
    walq_archives_everything()

    names = sorted(catalog_states(home))
    assert sum(n.endswith(".backup") for n in names) == 3
    win = window(home)
    assert win["base_backups"] == 3 and win["backup_problems"] == []
    assert win["oldest_restorable"] == {
        "wal": first.start_wal,
        "time": iso_utc(first.stop_time.timestamp()),  # Barman's end_time: its description wins
    }

    # Barman's own retention: the oldest backup and every WAL before the next one go
    barman("delete", "pg1", "oldest")
    assert [b.name for b in barman.backups()] == [second.name]
    gone = {n for n in names if not n.endswith(".history") and n[:24] < second.start_wal}
    assert first.start_wal in gone and any(n.endswith(".backup") for n in gone)
    assert stored_names(home) == sorted(set(names) - gone)
    res = home.run("verify", "pg1", as_pg=True)
    assert res.returncode == 1 and "missing from storage" in res.stdout, res.stdout

    res = home.run("catalog", "resync", "pg1", "--dry-run", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"would adopt 0 object(s), would expire {len(gone)} row(s); 0 lost" in res.stdout
    res = home.run("catalog", "resync", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    states = catalog_states(home)
    assert {n for n, s in states.items() if s is WalState.EXPIRED} == gone
    assert all(states[n] is WalState.ARCHIVED for n in names if n not in gone)
    res = home.run("verify", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = home.run("check", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr

    win = window(home)
    assert win["base_backups"] == 2 and win["expired"] == len(gone)
    assert win["oldest_restorable"] == {
        "wal": second.start_wal,
        "time": iso_utc(second.stop_time.timestamp()),
    }
    # Barman's rebuild-xlogdb agrees with the xlogdb walq's resync left
    xlogdb = (home.wals() / "pg1-xlog.db").read_bytes()
    barman("rebuild-xlogdb", "pg1")
    assert (home.wals() / "pg1-xlog.db").read_bytes() == xlogdb
