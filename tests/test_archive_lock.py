"""The archive-wal lock never silences archiving (issue 10, D2).

Real processes only: a `walq archive` whose parent alone is SIGKILLed mid-run
(its pool workers are not), and a live process that holds the real flock but
makes no progress.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services.fleet import RedisServer
from tests.services.homes import WalqHome, xlogdb_names
from tests.services.pg import wait_for
from walq import keys
from walq.errors import LockBusyError
from walq.locks import FileLock, RedisLock
from walq.restore import prefetch
from walq.restore import spool as spool_state


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_parent_alone_then_rerun_archives_everything(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"compression": "xz", "compression_level": 9}}, archive_workers=2)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:40])
    proc = home.start("archive")
    workers: set[int] = set()
    try:
        wait_for(lambda: xlogdb_names(home.wals()), 120, "the first archived WAL")
        workers = _children(proc.pid)
        assert workers, "the run has no pool workers; the test proves nothing"
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as an OOM kill or `kill -9 PID` does
        proc.wait(timeout=30)
        wait_for(
            lambda: not any(_alive(p) for p in workers),
            30,
            f"pool workers {sorted(workers)} to die with their parent",
        )
    finally:
        for pid in workers:  # never leave an orphan behind, whatever happened above
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert os.listdir(home.incoming()), (
        "the batch finished before the kill; the test proves nothing"
    )

    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "skipped" not in res.stdout
    assert os.listdir(home.incoming()) == []
    assert xlogdb_names(home.wals()) == names
    assert home.run("check").returncode == 0


_HOLDER = """
import os, sys, time
from pathlib import Path
from walq.locks import FileLock
lock = FileLock(Path(sys.argv[1]), "pg1")
lock.acquire()
past = time.time() - float(sys.argv[2])
os.utime(lock.path, (past, past))  # its last progress, as the holder recorded it
print("held", flush=True)
sys.stdin.read()  # alive, holding the lock, doing nothing, until the test closes stdin
"""


def _hold_lock(home: WalqHome, idle_for: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home.home), str(idle_for)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=30)


def test_lock_held_without_progress_fails_check_and_archive(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"compression": "zstd"}}, claim_timeout=60)
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    holder = _hold_lock(home, idle_for=3600)
    try:
        res = home.run("check")
        assert res.returncode == 1, res.stdout + res.stderr
        line = next(x for x in res.stdout.splitlines() if "archiver lock" in x)
        assert "FAILED" in line and f"pid {holder.pid}" in line and "no progress for" in line, line

        res = home.run("archive")
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"pid {holder.pid}" in res.stderr and "no progress for" in res.stderr, res.stderr
        assert len(os.listdir(home.incoming())) == 2  # nothing archived under someone else's lock
    finally:
        _release(holder)
    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert os.listdir(home.incoming()) == []
    check = home.run("check")
    assert check.returncode == 0, check.stdout
    assert any("archiver lock" in x and "OK" in x for x in check.stdout.splitlines()), check.stdout


def test_lock_held_by_a_progressing_archive_is_a_quiet_skip(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"compression": "zstd"}})
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    holder = _hold_lock(home, idle_for=0)
    try:
        res = home.run("archive")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "skipped" in res.stdout and f"pid {holder.pid}" in res.stdout, res.stdout
        check = home.run("check")
        line = next(x for x in check.stdout.splitlines() if "archiver lock" in x)
        assert "OK" in line and f"pid {holder.pid}" in line, line
    finally:
        _release(holder)


def test_stale_holder_record_is_reported(make_home, wal_corpus) -> None:
    """A lock held by a process that is not the recorded walq archive (the recorder is dead)."""
    home = make_home({"pg1": {"compression": "zstd"}})
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    holder = _hold_lock(home, idle_for=0)
    try:
        # The recorded holder is replaced by a process that has exited: whoever holds the
        # flock now is not the walq archive the record names.
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        lock_file = home.home / ".pg1-archive-wal.lock"
        dead = int(gone.stdout)
        record = {"pid": dead, "pid_start": "1", "since": time.time(), "command": "archive-wal"}
        lock_file.write_text(f"{dead}\n{json.dumps(record)}\n")
        res = home.run("archive")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "not a live walq archive" in res.stderr and f"pid {dead}" in res.stderr, res.stderr
        assert str(holder.pid) in res.stderr.split("processes with the file open:")[1], res.stderr
        check = home.run("check")
        assert check.returncode == 1
        assert any("archiver lock" in x and "FAILED" in x for x in check.stdout.splitlines()), (
            check.stdout
        )
    finally:
        _release(holder)


def _in_forked_child(action) -> int:  # action: a callable run in the child
    """Run ``action`` in a real forked child (as a daemon or a careless pool would), return its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            action()
        except BaseException:  # the child must never return into pytest
            code = 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_forked_child_releasing_a_file_lock_leaves_the_parent_holding_it(tmp_path: Path) -> None:
    held = FileLock(tmp_path, "pg1")
    held.acquire()
    try:
        assert _in_forked_child(held.release) == 0
        with pytest.raises(LockBusyError):  # LOCK_UN on the shared open file would have freed it
            FileLock(tmp_path, "pg1").acquire()
    finally:
        held.release()
    FileLock(tmp_path, "pg1").acquire()


def test_a_forked_child_releasing_a_redis_lock_leaves_the_parent_holding_it(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    held = RedisLock(client, "pg1", ttl=30)
    held.acquire()
    try:
        assert _in_forked_child(held.release) == 0
        assert client.get(keys.lock("pg1", "commit")).decode() == held.owner
        held.extend()  # still ours
    finally:
        held.release()
    assert client.get(keys.lock("pg1", "commit")) is None


def _open_fds_to(pid: int, target: Path) -> int:
    count = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(fd.path) == str(target):
                count += 1
        except OSError:
            continue
    return count


def test_the_forked_prefetcher_does_not_inherit_the_catalog_connection(
    make_home, wal_corpus
) -> None:
    """get-wal forks its prefetcher: the SQLite catalog must be closed by then (SQLite forbids
    carrying a connection across fork); the prefetcher opens its own."""
    home = make_home({"pg1": {"compression": "zstd"}}, prefetch_idle_timeout=300)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
    home.run("archive", check=True)
    spool = home.home / "restore-spool" / "pg1"
    try:
        home.run("get-wal", "pg1", names[0], str(home.root / "a"), "--prefetch", "2", check=True)
        pid = wait_for(lambda: spool_state.running_pid(spool), 30, "the prefetcher")
        wait_for(
            lambda: (spool / names[2]).is_file(),
            30,
            "the prefetcher's segments (its own catalog is open)",
        )
        assert _open_fds_to(pid, home.config.catalog_path.resolve()) == 1
        assert spool_state.running_pid(spool) == pid
    finally:
        prefetch.stop(spool)


def test_a_pool_worker_whose_parent_died_before_prctl_exits_at_once() -> None:
    """The death signal is armed only from prctl on: a worker started by a parent that is
    already gone (here: its recorded parent is not its parent) must not run on."""
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from walq.proclife import die_with_parent\ndie_with_parent(1)\nprint('still running')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (res.returncode, res.stdout) == (1, "")
    armed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\nfrom walq.proclife import die_with_parent\n"
            "die_with_parent(os.getppid())\nprint('running')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (armed.returncode, armed.stdout) == (0, "running\n")
