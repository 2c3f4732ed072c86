"""get-wal --partial: the end of a stream for a segment the archive does not hold.

The first tests use real WAL (the corpus) laid out as pg_receivewal leaves it;
the last one recovers a streaming-only cluster, its receiver killed with -9
mid-segment, to the last transaction the receiver flushed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

from tests.services.homes import WalqHome, walq_command
from tests.services.pg import Cluster, wait_for
from tests.services.pitr import restore_from_archive, take_backup
from tests.services.receiver import Receiver, streaming_home, wait_gone
from walq.restore.spool_hit import spool_hit


def streaming(home: WalqHome) -> Path:
    path = home.server_dir() / "streaming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def archived_names(home: WalqHome) -> list[str]:
    rows = json.loads(home.run("list", "pg1", "--json", check=True).stdout)
    return sorted(r["name"] for r in rows if r["state"] == "archived")


def get_wal(home: WalqHome, name: str, dest: Path, *flags: str):
    return home.run("get-wal", "pg1", name, str(dest), *flags)


def test_streaming_partial_is_served_only_with_the_flag(walq_home: WalqHome, wal_corpus) -> None:
    first, held = wal_corpus.segments[:2]
    wal_corpus.copy_into(walq_home.incoming(), [first])
    walq_home.run("archive", check=True)  # the archive learns the cluster and its segment size
    partial = streaming(walq_home) / f"{held}.partial"
    partial.write_bytes(wal_corpus.path(held).read_bytes())
    dest = walq_home.root / "RECOVERYXLOG"

    res = get_wal(walq_home, held, dest)  # without the flag nothing changes
    assert res.returncode == 1 and "not in the archive" in res.stderr
    assert not dest.exists()

    res = get_wal(walq_home, held, dest, "--partial")
    assert res.returncode == 0, res.stderr
    assert dest.read_bytes() == partial.read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert f"served {held} from {partial}" in res.stderr
    assert partial.exists()  # the receiver's file is left alone
    assert not list(dest.parent.glob(f".{dest.name}.walq-*"))

    # an archived segment is still served from the archive, flag or not
    res = get_wal(walq_home, first, dest, "-P")
    assert res.returncode == 0 and "end of the stream" not in res.stderr
    assert dest.read_bytes() == wal_corpus.path(first).read_bytes()

    # past the end of the stream: not available, quickly, as PostgreSQL expects
    res = get_wal(walq_home, wal_corpus.segments[2], dest, "--partial")
    assert res.returncode == 1 and "nor a .partial" in res.stderr
    # history files and other names are not affected by the flag
    assert get_wal(walq_home, "00000002.history", dest, "--partial").returncode == 1


def test_a_partial_without_wal_yet_is_not_available(walq_home: WalqHome, wal_corpus) -> None:
    name = wal_corpus.segments[0]
    partial = streaming(walq_home) / f"{name}.partial"
    dest = walq_home.root / "out"
    for content in (b"", b"\0" * (1 << 20)):  # truncated by the receiver; just padded
        partial.write_bytes(content)
        res = get_wal(walq_home, name, dest, "--partial")
        assert res.returncode == 1, res.stderr
        assert not dest.exists()


def test_a_streamed_file_of_another_cluster_is_refused(walq_home: WalqHome, wal_corpus) -> None:
    other = wal_corpus.other_cluster[0]
    mine = next(name for name in wal_corpus.segments if name != other)
    wal_corpus.copy_into(walq_home.incoming(), [mine])
    walq_home.run("archive", check=True)  # the archive learns its cluster's identifier
    (streaming(walq_home) / f"{other}.partial").write_bytes(
        (wal_corpus.directory / "other" / other).read_bytes()
    )
    dest = walq_home.root / "out"
    res = get_wal(walq_home, other, dest, "--partial")
    assert res.returncode == 2 and "another cluster" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not dest.exists() and not list(dest.parent.glob(".out.walq-*"))


def test_an_archived_partial_is_served_from_the_archive(walq_home: WalqHome, wal_corpus) -> None:
    """After a timeline switch the scan archives older .partial files under their own names;
    --partial serves such a segment's .partial from the archive (verified, decompressed)."""
    older, newest = wal_corpus.segments[3], wal_corpus.segments[5]
    directory = streaming(walq_home)
    for name in (older, newest):
        (directory / f"{name}.partial").write_bytes(wal_corpus.path(name).read_bytes())
    walq_home.run("archive", check=True)
    assert f"{older}.partial" in archived_names(walq_home)
    assert sorted(os.listdir(directory)) == [f"{newest}.partial"]  # the newest stays back

    dest = walq_home.root / "out"
    res = get_wal(walq_home, older, dest, "--partial")
    assert res.returncode == 0, res.stderr
    assert f"from the archived {older}.partial" in res.stderr
    assert dest.read_bytes() == wal_corpus.path(older).read_bytes()
    res = get_wal(walq_home, older, walq_home.root / "plain")  # without the flag: not served
    assert res.returncode == 1


def test_spool_hit_accepts_the_flag(walq_home: WalqHome, tmp_path: Path) -> None:
    """The fast path serves a spooled (archived, complete) segment with or without --partial."""
    name = "000000010000000000000007"
    spool = walq_home.home / "restore-spool" / "pg1"
    spool.mkdir(parents=True)
    (spool / name).write_bytes(b"segment")
    argv = ["--config", str(walq_home.config_path), "get-wal", "pg1", name]
    assert spool_hit([*argv, str(tmp_path / "a"), "--partial"]) == 0
    assert (tmp_path / "a").read_bytes() == b"segment"
    (spool / name).write_bytes(b"segment")
    assert spool_hit([*argv, str(tmp_path / "b"), "--bogus"]) is None  # the full CLI explains


# ------------------------------------------------------------------ end to end


def kill_receiver(rec: Receiver) -> None:
    """kill -9 of pg_receivewal in the middle of its segment, and of its supervisor, which is
    stopped first so that it cannot start another pg_receivewal."""
    assert rec.proc is not None
    child = rec.state()["child_pid"]
    os.kill(rec.proc.pid, signal.SIGSTOP)
    os.kill(child, signal.SIGKILL)
    os.kill(rec.proc.pid, signal.SIGKILL)
    rec.proc.wait(timeout=30)
    wait_gone(child, 30, "pg_receivewal to die")


def test_streaming_only_archive_recovers_to_the_last_flushed_transaction(
    cluster_factory, make_home, workdir, walq_runnable_by_postgres
) -> None:
    # The receiver is a synchronous standby: pg_receivewal flushes (and reports flush_lsn)
    # after every message, not only when a segment ends, so "flushed" is observable.
    src = cluster_factory("src", conf={"synchronous_standby_names": "'walq_receive_wal'"}).start()
    assert src.psql("SHOW archive_mode") == "off"
    home = streaming_home(make_home, src, compression="lz4")
    rec = Receiver(home).start()
    try:
        rec.wait_streaming()
        take_backup(src, workdir / "restored")
        src.psql("CREATE TABLE t (v int)")
        src.pgbench_init(1)  # a few segments of WAL before the rows of interest
        src.psql("SELECT pg_switch_wal()")
        for batch in range(5):
            src.psql(
                f"INSERT INTO t SELECT g FROM generate_series({batch * 10 + 1}, {batch * 10 + 10}) g"
            )
        last_lsn = src.psql("SELECT pg_current_wal_lsn()")
        segment = src.psql(f"SELECT pg_walfile_name('{last_lsn}')")
        wait_for(
            lambda: (
                src.psql(
                    f"SELECT flush_lsn >= '{last_lsn}' FROM pg_stat_replication "
                    "WHERE application_name = 'walq_receive_wal'"
                )
                == "t"
            ),
            60,
            "the receiver to flush the last transaction",
        )
        assert (rec.streaming / f"{segment}.partial").exists()  # mid-segment
        kill_receiver(rec)
    finally:
        if rec.proc is not None and rec.proc.poll() is None:
            rec.stop()
    src.stop("immediate")  # the primary is lost

    res = home.run("archive", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert segment not in archived_names(home)  # held back: only --partial can serve it
    assert (rec.streaming / f"{segment}.partial").exists()

    restore = f"'{walq_command(home, 'get-wal', 'pg1', '%f', '%p', '--partial')}'"
    restored: Cluster = restore_from_archive(
        workdir / "restored",
        src,
        home,
        conf={"restore_command": restore, "synchronous_standby_names": "''"},
    )
    try:
        assert restored.psql("SELECT count(*), max(v) FROM t") == "50|50"
        assert restored.accounts_fingerprint()[0] == 100000
        assert f"served {segment}" in restored.log()
    finally:
        restored.stop("immediate")
