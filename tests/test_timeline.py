"""A timeline switch archived into the same server entry, and restored across it.

Cluster A archives timeline 1 through archive_command. A base backup of A is
restored from walq's archive up to a restore point in the middle of a segment
and promoted (timeline 2) with its archive_command
pointing at the same walq server: the 00000002.history file, the old
timeline's .partial and the new timeline's segments are archived (the first
segment of timeline 2 carries the parent TLI in its header: accepted). A second
restore of the same backup then follows timeline 1 into timeline 2 through
get-wal alone and reaches the promoted cluster's data.
"""

from __future__ import annotations

import json
import os
import struct

from tests.services.homes import walq_command
from tests.services.pg import Cluster, chown_postgres, wait_for
from tests.services.pitr import archived_through, restore_from_archive, take_backup
from tests.services.receiver import Receiver, close_segment
from walq.wal import lsn_to_segment, parse_lsn, parse_wal_name


def header_tli(path) -> int:
    return struct.unpack_from("<HHI", path.read_bytes(), 0)[2]


def test_timeline_switch_is_archived_and_restorable(
    cluster_factory, make_home, workdir, walq_runnable_by_postgres
):
    a = cluster_factory("a")
    home = make_home({"pg1": {"conninfo": a.conninfo, "compression": "lz4"}})
    put_wal = f"'{walq_command(home, 'put-wal', 'pg1', '%p')}'"
    a.configure({"archive_mode": "on", "archive_command": put_wal})
    home.run("archive", "pg1", as_pg=True, check=True)  # creates the directories, owned by postgres
    a.start()
    a.pgbench_init(1)
    take_backup(a, workdir / "b")
    take_backup(a, workdir / "c")
    a.pgbench(200)
    expected_a = a.accounts_fingerprint()
    a.psql("SELECT pg_create_restore_point('walq_before')")
    a.pgbench(200)  # timeline 1 goes on past the restore point; B will not see this
    assert a.accounts_fingerprint() != expected_a
    closed_a = a.switch_wal()
    archived_through(a, closed_a)
    a.stop()
    res = home.run("archive", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr

    # B: restored from the archive, promoted to timeline 2, archiving into the same entry.
    b = restore_from_archive(
        workdir / "b",
        a,
        home,
        {
            "archive_mode": "on",
            "archive_command": put_wal,
            "recovery_target_name": "'walq_before'",
            "recovery_target_action": "'promote'",
        },
    )
    try:
        assert b.accounts_fingerprint() == expected_a
        assert b.current_wal().startswith("00000002")
        b.pgbench(200)
        expected_b = b.accounts_fingerprint()
        closed_b = b.switch_wal()
        assert closed_b.startswith("00000002")
        archived_through(b, closed_b)
        history = (b.data / "pg_wal" / "00000002.history").read_bytes()
    finally:
        b.stop("immediate")
    res = home.run("archive", "pg1", as_pg=True)
    assert res.returncode == 0, res.stdout + res.stderr

    wals = home.wals()
    assert (wals / "00000002.history").is_file()  # history files sit in the root of wals/
    names = {p.name for d in wals.iterdir() if d.is_dir() for p in d.iterdir()}
    switch_seg = min(n for n in names if n.startswith("00000002") and len(n) == 24)
    switchpoint = parse_lsn(history.decode().split("\t")[1])
    assert lsn_to_segment(2, switchpoint, 1 << 20) == switch_seg
    assert switchpoint % (1 << 20)  # the switch is inside a segment: it exists under both TLIs
    # (B restored the TLI 1 copy from the archive, so PostgreSQL does not archive a .partial of it)
    assert f"00000001{switch_seg[8:]}" in names
    assert closed_b in names and closed_a in names

    # get-wal serves both timelines and the history file, byte-exact.
    out = workdir / "out"
    out.mkdir()
    for name in ("00000002.history", closed_a, switch_seg, closed_b):
        res = home.run("get-wal", "pg1", name, str(out / name))
        assert res.returncode == 0, res.stderr
    assert (out / "00000002.history").read_bytes() == history
    assert header_tli(out / closed_a) == 1
    assert header_tli(out / switch_seg) == 1  # first segment of TLI 2 carries the parent TLI
    assert header_tli(out / closed_b) == 2
    assert (out / closed_b).stat().st_size == 1 << 20
    assert home.run("get-wal", "pg1", "00000003.history", str(out / "x")).returncode == 1

    st = json.loads(home.run("status", "pg1", "--json", check=True).stdout)["servers"][0]
    assert st["gaps"] == [] and st["failed"] == [], st
    assert {t["tli"] for t in st["timelines"]} >= {1, 2}

    # C: the same base backup follows timeline 1 into timeline 2 through get-wal alone.
    c = restore_from_archive(workdir / "c", a, home, {"recovery_target_timeline": "'latest'"})
    try:
        assert c.accounts_fingerprint() == expected_b
        assert c.current_wal().startswith("00000003")
        assert parse_wal_name(c.current_wal()).tli == 3
    finally:
        c.stop("immediate")
    assert not os.path.exists(home.incoming() / closed_b)


def test_streamed_standby_promotion_archives_both_timelines(cluster_factory, make_home, workdir):
    """pg_receivewal on a standby follows its promotion: the old timeline's last file stays
    .partial and is archived under that name (it is no longer the newest), the history
    file lands in the root of wals/, and the new timeline is archived and served."""
    primary = cluster_factory("primary").start()
    primary.pgbench_init(1)
    standby = Cluster(workdir / "standby")
    standby.root.mkdir()
    os.chmod(standby.root, 0o755)
    chown_postgres(standby.root)
    primary._run(
        [
            "pg_basebackup",
            "-h",
            str(primary.root),
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(standby.data),
            "-X",
            "stream",
            "-R",
            "--no-sync",
            "-c",
            "fast",
        ]
    )
    standby.configure({"port": str(standby.port), "unix_socket_directories": f"'{standby.root}'"})
    standby.start()
    try:
        wait_for(
            lambda: (
                standby.psql("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")
                == "1"
            ),
            120,
            "the standby to stream",
            interval=0.2,
        )
        home = make_home(
            {"pg1": {"conninfo": standby.conninfo, "archiver": False, "streaming_archiver": True}}
        )
        home.run("receive-wal", "pg1", "--create-slot", check=True)
        with Receiver(home) as rec:
            rec.wait_streaming()
            primary.pgbench(200)
            primary.switch_wal()
            primary.pgbench(100)
            primary.stop()  # a clean shutdown sends the standby everything
            standby._run([str(standby.bindir / "pg_ctl"), "-D", str(standby.data), "-w", "promote"])
            wait_for(
                lambda: standby.psql("SELECT pg_is_in_recovery()") == "f", 120, "the promotion"
            )
            standby.pgbench(100)
            closed = close_segment(standby, rec.streaming)
            assert closed.startswith("00000002")
            files = sorted(n for n in os.listdir(rec.streaming) if not n.startswith("."))
            old_partials = [n for n in files if n.startswith("00000001") and n.endswith(".partial")]
            assert len(old_partials) == 1 and "00000002.history" in files, files
            res = home.run("archive", "pg1")
            assert res.returncode == 0, res.stdout + res.stderr
            left = [n for n in os.listdir(rec.streaming) if not n.startswith(".")]
            assert (
                len(left) == 1 and left[0].startswith("00000002") and left[0].endswith(".partial")
            ), left
    finally:
        standby.stop("immediate")
    wals = home.wals()
    assert (wals / "00000002.history").is_file()
    old = old_partials[0]
    assert (wals / old[:16] / old).is_file()  # archived under its .partial name
    assert (wals / closed[:16] / closed).is_file()
    out = workdir / "out"
    out.mkdir()
    for name in ("00000002.history", closed):
        assert home.run("get-wal", "pg1", name, str(out / name)).returncode == 0
    assert header_tli(out / closed) == 2
    assert home.run("verify", "pg1").returncode == 0
