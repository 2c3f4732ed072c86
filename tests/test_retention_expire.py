"""walq expire / walq delete end to end, with real parts.

A real primary archives through ``walq put-wal``; three ``pg_basebackup``s with
pgbench between them; ``walq archive`` (embedded) stores everything on local disk
or on S3 (SeaweedFS). Then REDUNDANCY 2: a dry run changes nothing; an expiry
killed with SIGKILL between the catalog mark and the deletes (a real SIGSTOP at
the fault point, then SIGKILL) loses nothing kept, and the rerun finishes;
exactly the files before the oldest kept backup's start are gone; verify is
clean; PITR from the oldest kept backup reaches the end; ``walq delete --before``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.services.barman import barman_of
from tests.services.homes import WALQ, WalqHome
from tests.services.pg import as_postgres, chown_postgres, wait_for
from tests.services.pitr import recovered
from tests.services.retention import (
    primary_with_three_backups,
    recovery_window_would_delete,
    restore_command,
    start_wal,
)
from tests.services.s3 import REGION, Bucket, FaultProxy, s3_settings
from walq.catalog import WalState
from walq.catalog.sqlite import SqliteCatalog
from walq.config import load_config
from walq.errors import ConfigError

# --- config --------------------------------------------------------------------------------------


def test_retention_policy_per_server_with_a_global_default(make_home) -> None:
    home = make_home(
        {"pg1": {}, "pg2": {"retention_policy": "recovery window of 2 weeks"}},
        retention_policy="REDUNDANCY 3",
    )
    servers = home.config.servers
    assert servers["pg1"].retention_policy == "REDUNDANCY 3"
    assert servers["pg2"].retention_policy == "recovery window of 2 weeks"
    assert servers["pg1"].barman_lock_directory == home.home


@pytest.mark.parametrize("where", ["top", "server"])
def test_a_bad_retention_policy_is_one_line_naming_the_key(make_home, where: str) -> None:
    servers = {"pg1": {"retention_policy": "REDUNDANCY two"}} if where == "server" else {"pg1": {}}
    top = {"retention_policy": "KEEP 3"} if where == "top" else {}
    home = make_home(servers, **top)
    with pytest.raises(ConfigError) as err:
        load_config(home.config_path)
    key = "servers.pg1.retention_policy" if where == "server" else "retention_policy"
    assert f"{key}:" in str(err.value) and "\n" not in str(err.value)
    res = home.run("expire")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and key in res.stderr


# --- S3 batch delete fallback --------------------------------------------------------------------


def test_s3_delete_falls_back_to_single_deletes_when_the_batch_is_refused(
    s3_bucket: Bucket, workdir: Path
) -> None:
    import hashlib

    from walq.config import ServerConfig
    from walq.storage import PutRequest, open_storage

    with FaultProxy(s3_bucket.server.ports["s3"], every=0, refuse_batch_delete=True) as proxy:
        storage = open_storage(
            ServerConfig(
                name="pg1", storage_url=s3_bucket.url("fleet"), s3_endpoint_url=proxy.endpoint
            )
        )
        objs = []
        for n in ("000000010000000000000001", "000000010000000000000002", "00000002.history"):
            p = workdir / n
            p.write_bytes(n.encode())
            objs.append(
                storage.put(
                    PutRequest(n, p, "none", False, 1.0, hashlib.sha256(n.encode()).hexdigest())
                )
            )
        storage.delete(objs[:2])
        assert proxy.refused_batches == 1 and proxy.single_deletes == 2
        assert [o.name for o in storage.list()] == ["00000002.history"]
        storage.delete(objs[2:])  # the refusal is remembered: no second batch attempt
        assert proxy.refused_batches == 1 and proxy.single_deletes == 3
        assert s3_bucket.object_keys("fleet/") == []


# --- real clusters --------------------------------------------------------------------------------

SEG = 1 << 20


def would_go(out: str) -> set[str]:
    return set(re.findall(r"^pg1: would delete ([0-9A-F]{24}\S*)$", out, re.MULTILINE))


def catalog_rows(home: WalqHome) -> dict[str, tuple[str, str | None]]:
    cat = SqliteCatalog(home.config.catalog_path, readonly=True)
    try:
        return {r.name: (r.state.value, r.reason) for r in cat.records("pg1")}
    finally:
        cat.close()


def stored_names(home: WalqHome) -> list[str]:
    from walq.storage import open_storage

    return [o.name for o in open_storage(home.config.server("pg1")).list()]


def xlogdb_names(home: WalqHome) -> list[str] | None:
    path = home.wals() / "pg1-xlog.db"
    return [ln.split("\t")[0] for ln in path.read_text().splitlines()] if path.exists() else None


def snapshot(home: WalqHome) -> tuple:
    xlogdb = home.wals() / "pg1-xlog.db"
    return catalog_rows(home), stored_names(home), xlogdb.read_bytes() if xlogdb.exists() else None


def barman_rebuilds_xlogdb(home: WalqHome, workdir: Path) -> bytes:
    """Barman 3.19 (its own venv) sharing walq's home: `barman rebuild-xlogdb pg1`; its xlogdb."""
    conf = workdir / "barman.conf"
    conf.write_text(
        f"[barman]\nbarman_home = {home.home}\nbarman_user = postgres\nlog_file = {workdir}/barman.log\n\n"
        "[pg1]\ndescription = walq shares this home\nconninfo = host=/nonexistent\n"
        "backup_method = postgres\nstreaming_conninfo = host=/nonexistent\narchiver = on\n"
    )
    chown_postgres(workdir)
    res = subprocess.run(
        [*as_postgres(), str(barman_of()), "-c", str(conf), "rebuild-xlogdb", "pg1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return (home.wals() / "pg1-xlog.db").read_bytes()


def kill_mid_expiry(home: WalqHome, workdir: Path) -> None:
    """Start `walq expire`, freeze it right after the catalog mark (SIGSTOP at the fault
    point), then SIGKILL it: a real kill -9 between (a) and (b)/(c)."""
    faults = workdir / "faults"
    faults.mkdir()
    (faults / "expire-marked").touch()
    chown_postgres(faults)
    chown_postgres(home.root)
    env = dict(os.environ, WALQ_FAULT_DIR=str(faults))
    proc = subprocess.Popen(
        [
            *as_postgres(),
            "env",
            f"WALQ_FAULT_DIR={faults}",
            str(WALQ),
            "--config",
            str(home.config_path),
            "expire",
            "pg1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pid_file = faults / "expire-marked.pid"
    try:
        wait_for(
            lambda: pid_file.exists() or proc.poll() is not None,
            120,
            "expire to reach the fault point",
        )
        assert pid_file.exists(), proc.communicate()
        pid = int(pid_file.read_text())
        wait_for(
            lambda: Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "T",
            10,
            "SIGSTOP",
        )
        os.kill(pid, signal.SIGKILL)
        os.kill(proc.pid, signal.SIGCONT)  # runuser stops itself when its child stops
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_redundancy_2_expires_exactly_what_precedes_the_oldest_kept_backup(
    backend: str,
    make_home,
    cluster_factory,
    workdir: Path,
    walq_runnable_by_postgres,
    request,
) -> None:
    if backend == "s3":
        bucket: Bucket = request.getfixturevalue("s3_bucket")
        settings = s3_settings(bucket, compression="zstd", s3_region=REGION)
    else:
        settings = {"compression": "zstd"}
    home: WalqHome = make_home(
        {"pg1": {**settings, "retention_policy": "REDUNDANCY 2"}}, archive_workers=1
    )
    home.give_to_postgres()
    backups, at_end = primary_with_three_backups(cluster_factory, home, workdir)
    res = home.run("archive", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr

    before = catalog_rows(home)
    names = sorted(before)
    starts = [start_wal(b) for b in backups]
    assert starts == sorted(starts) and all(s in names for s in starts)
    expected = {n for n in names if n[:24] < starts[1]}
    assert any(n.endswith(".backup") for n in expected) and starts[0] in expected

    # --dry-run: every name that would go, and nothing changes
    state = snapshot(home)
    assert recovery_window_would_delete(home, days=30) == {n for n in names if n[:24] < starts[2]}
    assert recovery_window_would_delete(home, days=0) == {n for n in names if n[:24] < starts[0]}
    res = home.run("expire", "--dry-run", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(would_go(res.stdout)) == expected
    assert "REDUNDANCY 2: 3 base backup(s) known, 2 retained" in res.stdout
    assert snapshot(home) == state

    # kill -9 between the catalog mark and the deletes: rows expired, every object still there
    kill_mid_expiry(home, workdir)
    rows = catalog_rows(home)
    assert {n for n, (st, _) in rows.items() if st == "expired"} == expected
    assert stored_names(home) == state[1], "nothing was deleted yet"
    assert all(rows[n][0] == "archived" for n in names if n not in expected), (
        "nothing kept was touched"
    )
    res = home.run("verify", "pg1", as_pg=True)
    assert res.returncode == 1 and "expired but still in storage" in res.stdout, res.stdout

    # the rerun finishes the job
    res = home.run("expire", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"finished an interrupted expiry: {len(expected)} object(s)" in res.stdout
    rows = catalog_rows(home)
    assert {n for n, (st, _) in rows.items() if st == "expired"} == expected
    assert all(
        reason.startswith("REDUNDANCY 2: timeline 1 kept from " + starts[1])
        for st, reason in rows.values()
        if st == "expired"
    )
    kept = sorted(n for n in names if n not in expected)
    assert stored_names(home) == kept
    if backend == "local":
        assert xlogdb_names(home) == kept
        ours = (home.wals() / "pg1-xlog.db").read_bytes()
        assert barman_rebuilds_xlogdb(home, workdir) == ours, (
            "Barman's rebuild-xlogdb gives walq's xlogdb"
        )
        assert not any(p.is_dir() and not any(p.iterdir()) for p in home.wals().iterdir()), (
            "empty hash dirs"
        )
    res = home.run("verify", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    status = json.loads(home.run("status", "pg1", "--json", as_pg=True, check=True).stdout)[
        "servers"
    ][0]
    window = status["retention"]
    assert window["policy"] == "REDUNDANCY 2" and window["base_backups"] == 2
    assert window["expired"] == len(expected) and window["oldest_restorable"]["wal"] == starts[1]
    assert window["newest_restorable"]["wal"] == max(n for n in kept if len(n) == 24)
    assert status["gaps"] == []
    res = home.run("expire", "pg1", as_pg=True)  # nothing more to do
    assert res.returncode == 0 and "deleted 0 file(s)" in res.stdout, res.stdout

    # PITR from every kept backup (the oldest first) still reaches the end of the archive
    restore_cmd = restore_command(home, s3=backend == "s3")
    for i in (1, 2):
        with recovered(
            workdir / f"to_end{i}", backups[i], {"restore_command": restore_cmd}
        ) as to_end:
            assert to_end.accounts_fingerprint() == at_end

    # delete --before the newest backup's start: whatever the policy
    res = home.run("delete", "pg1", "--before", starts[2], "--dry-run", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    gone = {n for n in kept if n[:24] < starts[2]}
    assert set(would_go(res.stdout)) == gone
    assert stored_names(home) == kept
    res = home.run("delete", "pg1", "--before", starts[2], as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert stored_names(home) == sorted(set(kept) - gone)
    assert home.run("verify", "pg1", as_pg=True).returncode == 0
    res = home.run("delete", "pg1", "--before", "000000010000000F000000FF", as_pg=True)
    assert res.returncode == 1 and "not in the archive" in res.stdout
    assert stored_names(home) == sorted(set(kept) - gone)


def test_expire_refuses_without_a_backup_and_deletes_nothing(make_home, wal_corpus) -> None:
    home: WalqHome = make_home({"pg1": {"retention_policy": "REDUNDANCY 1"}})
    home.incoming().mkdir(parents=True)
    wal_corpus.copy_into(
        home.incoming(), [n for n in wal_corpus.segments if not n.endswith(".backup")][:6]
    )
    assert home.run("archive").returncode == 0
    before = snapshot(home)
    assert len(before[1]) == 6
    res = home.run("expire")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refused: no base backup is known" in res.stdout
    assert snapshot(home) == before
    assert all(state == WalState.ARCHIVED.value for state, _ in before[0].values())


def test_expire_without_a_policy_is_nothing_to_do(make_home) -> None:
    home: WalqHome = make_home({"pg1": {}})
    res = home.run("expire")
    assert res.returncode == 0 and "no retention_policy" in res.stdout, res.stdout + res.stderr


def test_nothing_archived_is_nothing_to_do_and_a_bad_walname_is_an_error(make_home) -> None:
    home: WalqHome = make_home({"pg1": {"retention_policy": "REDUNDANCY 1"}})
    res = home.run("expire", "pg1")
    assert res.returncode == 0 and "nothing archived" in res.stdout, res.stdout + res.stderr
    for bad in ("nonsense", "00000002.history", "000000010000000000000001.partial"):
        res = home.run("delete", "pg1", "--before", bad)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (bad, res.stderr)
    res = home.run("expire", "ghost")
    assert res.returncode == 2 and "unknown server 'ghost'" in res.stderr


def test_a_wal_arriving_again_after_expiry_is_judged_as_a_duplicate(make_home, wal_corpus) -> None:
    """Archived, expired (object deleted), then the same name arrives again: an identical
    copy is dropped, a different one parked in errors/; nothing is stored again."""
    from walq.storage import open_storage

    home: WalqHome = make_home({"pg1": {}})
    segs = wal_corpus.segments
    wal_corpus.copy_into(home.incoming(), segs[:3])
    assert home.run("archive").returncode == 0
    cat = SqliteCatalog(home.config.catalog_path)
    try:
        assert cat.mark_expired("pg1", segs[:2], "test") == segs[:2]
    finally:
        cat.close()
    storage = open_storage(home.config.server("pg1"))
    storage.delete([storage.find(n) for n in segs[:2]])
    wal_corpus.copy_into(home.incoming(), segs[:1])
    data = wal_corpus.path(segs[1]).read_bytes()
    (home.incoming() / segs[1]).write_bytes(
        data[:-1] + bytes([data[-1] ^ 1])
    )  # same name, other bytes
    res = home.run("archive")
    assert "1 duplicate(s) dropped" in res.stdout, res.stdout + res.stderr
    assert list(home.incoming().iterdir()) == []
    assert [p.name.split(".")[0] for p in home.errors().iterdir()] == [segs[1]]
    assert storage.find(segs[0]) is None and storage.find(segs[1]) is None
    assert catalog_rows(home)[segs[0]][0] == "expired"


def test_status_names_a_backup_it_cannot_read_and_does_not_count_it(make_home, wal_corpus) -> None:
    from tests.test_retention_core import backup_file

    home: WalqHome = make_home({"pg1": {"compression": "none"}})
    segs = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:6])
    first = int(segs[0][16:], 16)
    backups = []
    for start in (first + 1, first + 3):  # backup history files in PostgreSQL's format
        name, text = backup_file(1, start, start + 1)
        (home.incoming() / name).write_bytes(text)
        backups.append(name)
    assert home.run("archive").returncode == 0

    def window() -> dict:
        res = home.run("status", "pg1", "--json", check=True)
        return json.loads(res.stdout)["servers"][0]["retention"]

    assert window()["base_backups"] == len(backups) and window()["backup_problems"] == []
    home.stored(backups[0]).unlink()  # the catalog still says archived
    win = window()
    assert win["base_backups"] == len(backups) - 1
    assert [p.split(":")[0] for p in win["backup_problems"]] == [backups[0]]
    res = home.run("status", "pg1", check=True)
    assert f"unreadable backup: {backups[0]}: cannot be read back" in res.stdout, res.stdout
