"""walq receive-wal end to end: a real pg_receivewal streaming a real cluster.

The clusters here run with archive_mode = off: the receiver is the only way
WAL reaches walq, so a PITR restore from the archive proves the streaming
path (receiver + the scan's keep-last rule + archive) loses nothing.
"""

from __future__ import annotations

import json
import os
import signal

from tests.services.homes import WalqHome
from tests.services.pg import wait_for
from tests.services.pitr import restore_from_archive, take_backup
from tests.services.receiver import Receiver, close_segment, streaming_home, wait_gone
from walq.postgres.receiver import truncate_wrong_partial
from walq.wal import parse_wal_name

SEG = 1 << 20


def status(home: WalqHome) -> dict:
    res = home.run("status", "pg1", "--json", check=True)
    return json.loads(res.stdout)["servers"][0]


def archive_through(home: WalqHome, last: str) -> dict:
    """Run walq archive; the archive must hold every segment up to ``last`` with no gap."""
    res = home.run("archive", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
    st = status(home)
    assert st["gaps"] == [], st["gaps"]
    assert st["failed"] == []
    assert st["watermark"] is not None and st["watermark"] >= last, (st["watermark"], last)
    return st


def test_streamed_archive_restores_to_the_same_data(
    cluster_factory, make_home, workdir, walq_runnable_by_postgres
):
    src = cluster_factory("src").start()
    assert src.psql("SHOW archive_mode") == "off"
    home = streaming_home(make_home, src)
    with Receiver(home) as rec:
        rec.wait_streaming()
        src.pgbench_init(1)
        take_backup(src, workdir / "restored")
        src.pgbench(300)
        expected = src.accounts_fingerprint()
        last = close_segment(src, rec.streaming)
        st = archive_through(home, last)
        # the keep-last rule: the newest .partial stays for pg_receivewal
        left = sorted(os.listdir(rec.streaming))
        assert [n for n in left if not n.startswith(".")] and all(
            n.endswith(".partial") for n in left if not n.startswith(".")
        ), left
        assert st["receiver"]["running"] and st["receiver"]["state"] == "streaming"
        assert st["postgres"]["slot"]["active"] is True
        assert st["postgres"]["replication_lag_bytes"] is not None
        text = home.run("status", "pg1", check=True).stdout
        assert "receiver:         streaming" in text and "replication lag:" in text, text
        assert rec.stop() == 0
    assert rec.state()["state"] == "stopped"
    restored = restore_from_archive(workdir / "restored", src, home)
    try:
        assert restored.accounts_fingerprint() == expected
    finally:
        restored.stop("immediate")


def test_receiver_survives_kill_and_cluster_restart(
    cluster_factory, make_home, workdir, walq_runnable_by_postgres
):
    src = cluster_factory("src").start()
    home = streaming_home(make_home, src)
    rec = Receiver(home).start()
    try:
        child = rec.wait_streaming()
        first = sorted(n for n in os.listdir(rec.streaming) if n.endswith(".partial"))[0][:24]
        src.pgbench_init(1)
        take_backup(src, workdir / "restored")

        # 1. pg_receivewal killed with -9: the supervisor starts another one.
        os.kill(child, signal.SIGKILL)
        child = rec.wait_streaming(not_child=child)
        assert rec.state()["restarts"] >= 1
        assert rec.state()["last_exit_code"] == -signal.SIGKILL

        # 2. Only one receiver per server: a second one is refused at once.
        second = home.run("receive-wal", "pg1", timeout=60)
        assert second.returncode == 1 and "already running" in second.stderr

        # 3. The cluster restarts while streaming: the receiver reconnects by itself.
        src.pgbench(200)
        src.stop("fast")
        src.start()
        child = rec.wait_streaming(not_child=child, timeout=180)
        src.pgbench(200)

        # 4. The supervisor itself killed with -9: its child goes too (no orphan holds
        #    the slot) and a new supervisor resumes from the slot.
        os.kill(rec.proc.pid, signal.SIGKILL)
        rec.proc.wait(timeout=30)
        wait_gone(child, 60, "the orphaned pg_receivewal to exit")
        rec = Receiver(home).start()
        child = rec.wait_streaming(not_child=child)
        active_pid = src.psql(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'walq_pg1'"
        )
        assert int(active_pid) > 0  # the walsender serving our slot
        src.pgbench(200)
        expected = src.accounts_fingerprint()
        last = close_segment(src, rec.streaming)
        archive_through(home, last)
    finally:
        rec.stop()
    names = [
        r
        for r in json.loads(home.run("list", "pg1", "--json", check=True).stdout)
        if r["state"] == "archived"
    ]
    segments = sorted(r["name"] for r in names if len(r["name"]) == 24)
    assert segments[0] <= first and segments[-1] >= last
    wanted = {
        f"{1:08X}{0:08X}{i:08X}"
        for i in range(parse_wal_name(first).seg, parse_wal_name(last).seg + 1)
    }
    assert wanted <= set(segments), sorted(wanted - set(segments))
    assert home.run("verify", "pg1").returncode == 0
    # Nothing lost: the backup taken before the kills, replayed from the archive, has all of it.
    restored = restore_from_archive(workdir / "restored", src, home)
    try:
        assert restored.accounts_fingerprint() == expected
    finally:
        restored.stop("immediate")


def test_wrong_size_partial_is_truncated(tmp_path):
    streaming = tmp_path / "streaming"
    streaming.mkdir()
    (streaming / "000000010000000000000003").write_bytes(b"\1" * SEG)
    (streaming / "000000010000000000000004.partial").write_bytes(b"\0" * SEG)
    (streaming / "000000010000000000000005.partial").write_bytes(b"\0" * 4096)
    note = truncate_wrong_partial(streaming, SEG)
    assert note and "000000010000000000000005.partial" in note
    assert (streaming / "000000010000000000000005.partial").stat().st_size == 0
    assert (streaming / "000000010000000000000004.partial").stat().st_size == SEG
    assert truncate_wrong_partial(streaming, SEG) is None  # 0 bytes is fine


def test_receiver_truncates_and_resumes_a_wrong_size_partial(cluster_factory, make_home):
    src = cluster_factory("src").start()
    home = streaming_home(make_home, src)
    current = src.current_wal()
    streaming = home.server_dir() / "streaming"
    streaming.mkdir(parents=True, exist_ok=True)
    partial = streaming / f"{current}.partial"
    partial.write_bytes(b"\0" * 12345)
    with Receiver(home) as rec:
        rec.wait_streaming()
        assert "truncated" in rec.log()
        wait_for(
            lambda: partial.exists() and partial.stat().st_size == SEG,
            60,
            "pg_receivewal to re-pad the partial",
        )


def test_reset(cluster_factory, make_home):
    src = cluster_factory("src").start()
    home = streaming_home(make_home, src)
    streaming = home.server_dir() / "streaming"
    streaming.mkdir(parents=True, exist_ok=True)
    current = src.current_wal()

    ahead = streaming / "000000010000000000000FF0.partial"
    ahead.write_bytes(b"")
    res = home.run("receive-wal", "pg1", "--reset")
    assert res.returncode == 1 and "ahead of PostgreSQL" in res.stderr
    assert sorted(os.listdir(streaming)) == [ahead.name]  # nothing changed
    ahead.unlink()

    old = streaming / "000000010000000000000001.partial"
    old.write_bytes(b"\0" * SEG)
    res = home.run("receive-wal", "pg1", "--reset")
    assert res.returncode == 0, res.stderr
    assert not old.exists()
    reset_to = streaming / f"{current}.partial"  # the slot has no restart_lsn yet: current
    assert reset_to.exists() and reset_to.stat().st_size == 0

    res = home.run("receive-wal", "pg1", "--reset")
    assert res.returncode == 0 and "Nothing to do" in res.stdout
