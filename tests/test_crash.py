"""Kill -9 of walq archive mid-batch: every WAL ends up archived exactly once, none lost.

The real-kill test is next to a deterministic one for the narrowest window
(stored but not yet committed), which a SIGKILL hits only by chance.
"""

from __future__ import annotations

import lzma
import os
import signal
from pathlib import Path

from tests.services.homes import WalqHome, xlogdb_names
from tests.services.pg import wait_for
from walq.archive.job import new_job as PrepareJob
from walq.archive.steps import prepare
from walq.catalog import open_catalog
from walq.fsutil import OWNED_MARKER
from walq.storage import PutRequest, open_storage


def _stored_files(home: WalqHome) -> list[Path]:
    return sorted(p for p in home.wals().glob("*/*") if p.parent.name != ".walq-tmp")


def test_kill_9_mid_batch_then_rerun(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"compression": "xz", "compression_level": 6}}, archive_workers=2)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:30])
    proc = home.start("archive")
    try:
        wait_for(lambda: len(xlogdb_names(home.wals())) >= 4, 120, "a few commits")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    left = set(os.listdir(home.incoming()))
    assert left, "the batch finished before the kill; the test proves nothing"
    stored = {p.name: p for p in _stored_files(home)}
    assert set(names) == left | set(stored)  # nothing lost: each WAL is in incoming or archived
    for name, path in stored.items():  # nothing half-written in the archive
        assert lzma.decompress(path.read_bytes()) == wal_corpus.path(name).read_bytes()

    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert os.listdir(home.incoming()) == []
    assert xlogdb_names(home.wals()) == names  # once each, in order
    assert sorted(p.name for p in _stored_files(home)) == names
    assert os.listdir(home.wals() / ".walq-tmp") == [OWNED_MARKER]  # nothing but walq's marker
    assert os.listdir(home.home / "spool" / "pg1") == [OWNED_MARKER]
    assert home.run("verify", "pg1").returncode == 0


def test_stored_but_uncommitted_wal_is_adopted(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:3])
    walq_home.run("status")  # creates nothing but proves the config loads
    config = walq_home.config
    server = config.server("pg1")
    # Simulate a crash right after storage.put(): the object exists, no catalog row, no xlogdb line.
    spool = walq_home.root / "spool"
    prepared = prepare(
        PrepareJob(
            "pg1", names[1], str(walq_home.incoming() / names[1]), "incoming", str(spool), "zstd"
        )
    )
    open_storage(server).put(
        PutRequest(
            names[1], Path(prepared.payload), "zstd", False, prepared.mtime, prepared.checksum
        )
    )
    res = walq_home.run("archive")
    assert res.returncode == 0, res.stdout
    assert f"{names[1]} archived" in res.stdout and "recovered" in res.stdout
    assert xlogdb_names(walq_home.wals()) == names
    catalog = open_catalog(config)
    try:
        assert catalog.archived_names("pg1") == names
    finally:
        catalog.close()
    assert walq_home.run("verify", "pg1").returncode == 0
