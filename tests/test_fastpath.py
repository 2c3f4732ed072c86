"""The restore spool fast path: a prefetched WAL is served without the full CLI."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import WalqHome


def test_prefetched_wal_is_served_from_the_spool(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:6])
    walq_home.run("archive", check=True)
    first = walq_home.root / "first"
    walq_home.run("get-wal", "pg1", names[0], str(first), "--prefetch", "3", check=True)
    spool = walq_home.home / "restore-spool" / "pg1"
    assert sorted(p.name for p in spool.iterdir()) == names[1:4]
    for name in names[1:4]:
        dest = walq_home.root / f"out-{name}"
        walq_home.run("get-wal", "pg1", name, str(dest), "--prefetch", "3", check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()
    # the spool hit must not import pydantic (the heavy part of start-up)
    probe = (
        "import sys; from walq.fastpath import spool_hit; "
        f"r = spool_hit(['--config', '{walq_home.config_path}', 'get-wal', 'pg1', '{names[5]}', '/dev/null']); "
        "print(r, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "False"]  # names[5] was not prefetched: falls through, still no pydantic


def test_spool_miss_falls_back_to_the_archive(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    walq_home.run("archive", check=True)
    dest = walq_home.root / "x"
    walq_home.run("get-wal", "pg1", names[1], str(dest), check=True)
    assert dest.read_bytes() == wal_corpus.path(names[1]).read_bytes()
