"""walq.fleet without a broker: the scan's claim decisions and the four stages,
called directly (SQLite catalog, file lock), as the Celery tasks call them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.services.catalog_rows import archived_info
from tests.services.homes import WalqHome, xlogdb_names
from tests.services.pg import wait_for
from walq.catalog import WalState
from walq.errors import FencedError
from walq.fleet import stages as fleet
from walq.fsutil import OWNED_MARKER


def _run_chain(rt: fleet.Runtime, job: dict) -> fleet.Outcome:
    prepared = fleet.encrypt_stage(rt, fleet.compress_stage(rt, job))
    return fleet.commit_stage(rt, fleet.store_stage(rt, prepared))


@pytest.fixture
def home(make_home) -> WalqHome:
    return make_home(claim_timeout=0.5)


def test_scan_claims_once_and_reenqueues_only_stalled(home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    rt = fleet.Runtime(home.config)
    jobs = fleet.scan_server(rt, "pg1")
    assert [j["wal"] for j in jobs] == names
    assert fleet.scan_server(rt, "pg1") == [], "claimed WALs are not enqueued twice"
    # progress (a stage starting) keeps a claim alive; only the others stall and come back
    again = wait_for(
        lambda: (rt.catalog.extend("pg1", names[0], 60), fleet.scan_server(rt, "pg1"))[1],
        10,
        "stalled claims to be re-enqueued",
    )
    assert [j["wal"] for j in again] == names[1:]
    rt.close()


def test_stages_archive_and_a_second_chain_is_harmless(home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    rt = fleet.Runtime(home.config)
    jobs = fleet.scan_server(rt, "pg1")
    first = fleet.compress_stage(rt, jobs[0])
    stored = fleet.store_stage(rt, fleet.encrypt_stage(rt, first))
    # a duplicate chain for the same WAL (a re-enqueue after a stall) runs to the end first
    duplicate = dict(jobs[0], chain="f" * 32)
    assert _run_chain(rt, duplicate).status == "archived"
    assert fleet.commit_stage(rt, stored).status == "duplicate"
    assert _run_chain(rt, jobs[1]).status == "archived"
    assert rt.catalog.archived_names("pg1") == names
    assert xlogdb_names(home.wals()) == names
    assert list(home.incoming().iterdir()) == []
    assert os.listdir(home.home / "spool" / "pg1") == [OWNED_MARKER], "chain spools are cleaned up"
    rt.close()


def test_stale_fence_is_refused_and_writes_nothing(home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    rt = fleet.Runtime(home.config)
    job = fleet.scan_server(rt, "pg1")[0]
    stored = fleet.store_stage(rt, fleet.encrypt_stage(rt, fleet.compress_stage(rt, job)))
    rt.catalog.claim("pg9", "000000010000000000000001", "/in/x", 60)
    rt.catalog.mark_archived(
        "pg9", "000000010000000000000001", _info(), fence=1
    )  # other server: no effect
    lock = rt.lock("pg1", "commit")
    newer = lock.acquire() + 1000
    lock.release()
    rt.catalog.claim("pg1", "00000001000000000000FFFF", "/in/x", 60)
    rt.catalog.mark_archived(
        "pg1", "00000001000000000000FFFF", _info(), fence=newer
    )  # a newer holder
    with pytest.raises(FencedError):
        fleet.commit_stage(rt, stored)
    assert rt.catalog.get("pg1", names[0]).state is WalState.CLAIMED
    assert xlogdb_names(home.wals()) == []
    assert (home.incoming() / names[0]).exists()
    rt.close()


def test_give_up_marks_failed_with_reason_and_retry_reclaims(home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    rt = fleet.Runtime(home.config)
    job = fleet.scan_server(rt, "pg1")[0]
    fleet.give_up(rt, job, OSError("disk on fire"), 9)
    record = rt.catalog.get("pg1", names[0])
    assert (
        record.state is WalState.FAILED
        and "gave up after 9 attempts: disk on fire" in record.last_error
    )
    assert fleet.scan_server(rt, "pg1") == [], "failed WALs wait for an operator"
    retried = fleet.retry_wal(rt, "pg1", names[0])
    assert retried and retried["wal"] == names[0]
    assert _run_chain(rt, retried).status == "archived"
    rt.close()


def _info():
    return archived_info(mtime=time.time())


def test_a_superseded_chain_stops_quietly(home: WalqHome, wal_corpus) -> None:
    """A chain whose spool was swept must not fail the WAL another chain now owns."""
    import shutil

    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    rt = fleet.Runtime(home.config)
    job = fleet.scan_server(rt, "pg1")[0]
    prepared = fleet.compress_stage(rt, job)
    shutil.rmtree(Path(prepared["payload"]).parent)
    with pytest.raises(fleet.AlreadyDone):
        fleet.store_stage(rt, prepared)
    assert rt.catalog.get("pg1", names[0]).state is WalState.CLAIMED
    assert (home.incoming() / names[0]).exists()
    rt.close()


def test_checksum_algorithm_rides_the_chain_and_old_rows_judge_copies(
    make_home, wal_corpus
) -> None:
    """The chain's job carries the algorithm prepare used and commit records it; a copy of
    a WAL whose row predates the column (sha256) is judged by sha256: identical dropped,
    different parked."""
    import sqlite3

    home = make_home({"pg1": {"checksum": "sha256"}}, claim_timeout=0.5)
    old = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    rt = fleet.Runtime(home.config)
    for job in fleet.scan_server(rt, "pg1"):
        assert _run_chain(rt, job).status == "archived"
    assert {r.checksum_algorithm for r in rt.catalog.records("pg1")} == {"sha256"}
    rt.close()
    with sqlite3.connect(home.config.catalog_path) as db:  # as an older walq left them
        db.execute("UPDATE wal SET checksum_algorithm = NULL")

    home = make_home({"pg1": {}}, claim_timeout=0.5)  # checksum left to its default
    rt = fleet.Runtime(home.config)
    new = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[2:3])
    (job,) = fleet.scan_server(rt, "pg1")
    prepared = fleet.compress_stage(rt, job)
    assert prepared["checksum_algorithm"] == "blake3"
    assert _run_chain(rt, job).status == "archived"
    assert rt.catalog.get("pg1", new[0]).checksum_algorithm == "blake3"

    same, other = old
    (home.incoming() / same).write_bytes(wal_corpus.path(same).read_bytes())
    changed = bytearray(wal_corpus.path(other).read_bytes())
    changed[600_000] ^= 0x55
    (home.incoming() / other).write_bytes(bytes(changed))
    assert fleet.scan_server(rt, "pg1") == []  # both settled as leftovers of archived rows
    assert list(home.incoming().iterdir()) == []
    parked = os.listdir(home.errors())
    assert len(parked) == 1 and parked[0].startswith(other) and parked[0].endswith(".duplicate")
    assert [rt.catalog.get("pg1", n).state for n in old] == [WalState.ARCHIVED] * 2
    assert xlogdb_names(home.wals()) == old + new
    rt.close()


def test_store_links_the_compressed_spool_file_into_the_archive(home: WalqHome, wal_corpus) -> None:
    """Spool and wals/ on one file system: store writes no second copy of the payload."""
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    rt = fleet.Runtime(home.config)
    prepared = fleet.encrypt_stage(rt, fleet.compress_stage(rt, fleet.scan_server(rt, "pg1")[0]))
    spooled = os.lstat(prepared["payload"])
    stored = fleet.store_stage(rt, prepared)
    in_archive = os.lstat(home.wals() / stored["key"])
    assert (in_archive.st_dev, in_archive.st_ino) == (spooled.st_dev, spooled.st_ino)
    assert fleet.commit_stage(rt, stored).status == "archived"
    assert os.lstat(home.wals() / stored["key"]).st_nlink == 1, "the spool's name is gone"
    rt.close()
