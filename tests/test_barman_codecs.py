"""Which Barman versions read every codec walq writes locally (README: Sharing a home with Barman).

walq keeps Barman's local layout, so `barman get-wal` serves walq's archive. A Barman
that does not know a codec does not fail: it returns the still-compressed bytes with
exit 0, which PostgreSQL then rejects mid-recovery. Each claimed version is installed
in its own venv (scripts/barman-venv.sh) and asked for one real segment per codec.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.services.barman import barman_of
from tests.services.homes import WalqHome

CODECS = ["none", "gzip", "bzip2", "xz", "zstd", "lz4", "snappy"]

# version -> the codecs whose WAL it returns still compressed (exit 0 all the same)
CLAIMS = {
    "3.11.1": {"xz", "zstd", "lz4", "snappy"},
    "3.13.0": {"snappy"},
    "3.14.0": set(),  # the first release that reads every walq codec
    "3.19.1": set(),  # the version wal-reference.md describes
}


@pytest.mark.parametrize("version", sorted(CLAIMS))
def test_barman_get_wal_reads_walq_codecs(
    version: str, make_home, workdir: Path, wal_corpus
) -> None:
    barman = barman_of(version)
    home: WalqHome = make_home({f"c{c}": {"compression": c} for c in CODECS})
    seg = wal_corpus.segments[3]
    for c in CODECS:
        wal_corpus.copy_into(home.incoming(f"c{c}"), [seg])
    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    conf = workdir / "barman.conf"
    conf.write_text(
        f"[barman]\nbarman_home = {home.home}\nbarman_user = root\nlog_file = {workdir}/barman.log\n\n"
        + "".join(
            f"[c{c}]\ndescription = walq codec {c}\nconninfo = host=/nonexistent\nbackup_method = postgres\n"
            "streaming_conninfo = host=/nonexistent\narchiver = on\n\n"
            for c in CODECS
        )
    )
    want = wal_corpus.path(seg).read_bytes()
    unread = set()
    for c in CODECS:
        got = subprocess.run(
            [str(barman), "-c", str(conf), "get-wal", f"c{c}", seg],
            capture_output=True,
            timeout=120,
        )
        assert got.returncode == 0, got.stderr
        if got.stdout != want:
            unread.add(c)
    assert unread == CLAIMS[version]
