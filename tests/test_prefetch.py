"""get-wal's background prefetcher (walq.restore.prefetch) with real storage and real WAL.

Recovery that jumps (a new timeline, a restart elsewhere) replaces the prefetcher
and drops what it had fetched; a prefetcher that went idle is restarted by the
next spool hit; a call for a segment the prefetcher is downloading waits for it
instead of downloading it twice (an S3 download held open by a proxy).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.services.homes import WALQ, WalqHome, spooled
from tests.services.pg import wait_for
from tests.services.s3 import FaultProxy, s3_settings
from walq.restore import prefetch
from walq.restore import spool as spool_state


@pytest.fixture
def stop_prefetchers(workdir: Path):
    spools: list[Path] = []
    yield spools.append
    for spool in spools:
        prefetch.stop(spool)


def test_a_jump_replaces_the_prefetcher_and_drops_its_segments(
    walq_home: WalqHome, wal_corpus, stop_prefetchers
) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:8])
    walq_home.run("archive", check=True)
    spool = walq_home.home / "restore-spool" / "pg1"
    stop_prefetchers(spool)
    walq_home.run(
        "get-wal", "pg1", names[0], str(walq_home.root / "a"), "--prefetch", "2", check=True
    )
    wait_for(lambda: spooled(spool) == names[1:3], 30, "the first prefetcher's segments")
    first = spool_state.running_pid(spool)
    assert first
    dest = walq_home.root / "b"
    walq_home.run("get-wal", "pg1", names[5], str(dest), "--prefetch", "2", check=True)
    assert dest.read_bytes() == wal_corpus.path(names[5]).read_bytes()
    wait_for(
        lambda: spooled(spool) == names[6:8], 30, "the replacement's segments, and nothing stale"
    )
    assert spool_state.running_pid(spool) not in (None, first)


def test_an_idle_prefetcher_is_restarted_by_the_next_spool_hit(
    make_home, wal_corpus, stop_prefetchers
) -> None:
    home = make_home({"pg1": {"compression": "lz4"}}, prefetch_idle_timeout=0.2)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:6])
    home.run("archive", check=True)
    spool = home.home / "restore-spool" / "pg1"
    stop_prefetchers(spool)
    home.run("get-wal", "pg1", names[0], str(home.root / "a"), "--prefetch", "2", check=True)
    wait_for(
        lambda: spooled(spool) == names[1:3] and spool_state.running_pid(spool) is None,
        30,
        "the prefetcher to fill the spool and exit idle",
    )
    dest = home.root / "b"
    home.run("get-wal", "pg1", names[1], str(dest), "--prefetch", "2", check=True)  # the fast path
    assert dest.read_bytes() == wal_corpus.path(names[1]).read_bytes()
    wait_for(
        lambda: spooled(spool) == names[2:4],
        60,
        "a prefetcher started by the spool hit to fetch names[3]",
    )


def test_a_call_waits_for_the_segment_in_flight(
    s3_bucket, make_home, wal_corpus, stop_prefetchers
) -> None:
    with FaultProxy(s3_bucket.server.ports["s3"], every=0) as proxy:
        home = make_home(
            {"pg1": s3_settings(s3_bucket, endpoint=proxy.endpoint, compression="zstd")}
        )
        names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
        home.run("archive", check=True)
        spool = home.home / "restore-spool" / "pg1"
        stop_prefetchers(spool)
        proxy.hold = names[1]  # the prefetcher's download of names[1] stalls until released
        home.run("get-wal", "pg1", names[0], str(home.root / "a"), "--prefetch", "2", check=True)
        wait_for(
            lambda: any(names[1] in g for g in proxy.gets), 30, "the prefetcher to ask for names[1]"
        )
        dest = home.root / "b"
        call = subprocess.Popen(
            [
                str(WALQ),
                "--config",
                str(home.config_path),
                "get-wal",
                "pg1",
                names[1],
                str(dest),
                "--prefetch",
                "2",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = call.stderr.readline()  # type: ignore[union-attr]
            assert f"{names[1]} is being prefetched; waiting for it" in line
        finally:
            proxy.released.set()
            call.wait(timeout=120)
        assert call.returncode == 0
        assert dest.read_bytes() == wal_corpus.path(names[1]).read_bytes()
        downloads = [g for g in proxy.gets if names[1] in g and "list-type" not in g]
        assert len(downloads) == 1, proxy.gets  # the waiting call did not download it again
