"""The restore spool and its fast path: a prefetched WAL is served without the full CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import WalqHome
from tests.services.pg import wait_for
from walq import prefetch


def spooled(spool: Path) -> list[str]:
    """The segments waiting in the spool (not the prefetcher's own dot-files)."""
    return sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) if spool.is_dir() else []


def test_prefetched_wal_is_served_from_the_spool(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:6])
    walq_home.run("archive", check=True)
    spool = walq_home.home / "restore-spool" / "pg1"
    walq_home.run("get-wal", "pg1", names[0], str(walq_home.root / "first"), "--prefetch", "3", check=True)
    wait_for(lambda: spooled(spool) == names[1:4], 30, "the prefetcher to restore the next 3 segments")
    for name in names[1:]:
        dest = walq_home.root / f"out-{name}"
        walq_home.run("get-wal", "pg1", name, str(dest), "--prefetch", "3", check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()
    # it stops at the end of the archive, says so, and leaves nothing behind
    wait_for(lambda: prefetch.running_pid(spool) is None, 30, "the prefetcher to exit at the archive's end")
    assert (spool / prefetch.END_NAME).read_text().split()[0] > names[-1]
    assert spooled(spool) == []
    assert not list(spool.glob(".*.walq-*"))
    # the spool hit must not import pydantic (the heavy part of start-up)
    probe = (
        "import sys; from walq.fastpath import spool_hit; "
        f"r = spool_hit(['--config', '{walq_home.config_path}', 'get-wal', 'pg1', '{names[5]}', '/dev/null']); "
        "print(r, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "False"]  # names[5] is not in the spool: falls through, still no pydantic


def test_spool_miss_falls_back_to_the_archive(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    walq_home.run("archive", check=True)
    dest = walq_home.root / "x"
    walq_home.run("get-wal", "pg1", names[1], str(dest), check=True)
    assert dest.read_bytes() == wal_corpus.path(names[1]).read_bytes()
    assert not (walq_home.home / "restore-spool" / "pg1" / prefetch.LOCK_NAME).exists()  # no --prefetch: no prefetcher
