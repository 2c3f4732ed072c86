"""The verifying checksum per catalog row (walq.checksums): BLAKE3 for new WAL by default,
SHA-256 when the config asks, and rows of either kind (or of a walq that recorded no
algorithm: SHA-256) restored, verified and compared as duplicates side by side."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

from tests.services.homes import WalqHome
from walq.catalog import WalRecord, open_catalog
from walq.chunks import Checksum
from walq.codecs import compress_chunks


def rows(home: WalqHome) -> dict[str, WalRecord]:
    catalog = open_catalog(home.config)
    try:
        return {r.name: r for r in catalog.records("pg1")}
    finally:
        catalog.close()


def blake3_hex(path: Path) -> str:
    return Checksum("blake3").of([path.read_bytes()]).hexdigest()


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forget_algorithms(home: WalqHome) -> None:
    """What a walq that recorded no algorithm left: the column NULL (read as sha256)."""
    with sqlite3.connect(home.config.catalog_path) as db:
        db.execute("UPDATE wal SET checksum_algorithm = NULL")


def sha256_era_and_blake3_rows(make_home, wal_corpus) -> tuple[WalqHome, list[str], list[str]]:
    """Two WALs archived with SHA-256 by a walq that did not record the algorithm, then
    two with the default (BLAKE3) once the config no longer pins SHA-256."""
    segs = wal_corpus.segments
    home = make_home({"pg1": {"checksum": "sha256"}})
    old = wal_corpus.copy_into(home.incoming(), segs[:2])
    home.run("archive", check=True)
    forget_algorithms(home)
    home = make_home({"pg1": {}})  # the same home; checksum left to its default
    new = wal_corpus.copy_into(home.incoming(), segs[2:4])
    home.run("archive", check=True)
    return home, old, new


def test_default_is_blake3_and_sha256_config_still_writes_sha256(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"checksum": "sha256"}})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    home.run("archive", check=True)
    found = rows(home)
    for name in names:
        assert found[name].checksum_algorithm == "sha256"
        assert found[name].checksum == sha256_hex(wal_corpus.path(name))
    home = make_home({"pg1": {}})
    more = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[2:3])
    home.run("archive", check=True)
    row = rows(home)[more[0]]
    assert row.checksum_algorithm == "blake3"
    assert row.checksum == blake3_hex(wal_corpus.path(more[0]))
    assert row.checksum != sha256_hex(wal_corpus.path(more[0]))
    assert home.run("verify", "pg1").returncode == 0


def test_sha256_era_rows_restore_and_verify_beside_blake3_rows(
    make_home, wal_corpus, workdir: Path
) -> None:
    home, old, new = sha256_era_and_blake3_rows(make_home, wal_corpus)
    found = rows(home)
    assert [found[n].checksum_algorithm for n in old + new] == [None, None, "blake3", "blake3"]
    assert [found[n].checksum for n in old] == [sha256_hex(wal_corpus.path(n)) for n in old]
    assert [found[n].checksum for n in new] == [blake3_hex(wal_corpus.path(n)) for n in new]
    for name in old + new:
        dest = workdir / f"out-{name}"
        home.run("get-wal", "pg1", name, str(dest), check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()
    res = home.run("verify", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr

    # Each kind of row still catches a corrupt object, by its own algorithm.
    for name in (old[1], new[1]):
        tampered = bytearray(wal_corpus.path(name).read_bytes())
        tampered[5000] ^= 0xFF
        stored = home.stored(name)
        stored.chmod(0o644)
        stored.write_bytes(b"".join(compress_chunks([bytes(tampered)], "zstd")))
        dest = workdir / f"bad-{name}"
        res = home.run("get-wal", "pg1", name, str(dest))
        assert res.returncode == 2 and "checksum" in res.stderr, res.stderr
        assert not dest.exists()
    res = home.run("verify", "pg1")
    assert res.returncode == 1
    assert f"{old[1]}: checksum mismatch" in res.stdout + res.stderr
    assert f"{new[1]}: checksum mismatch" in res.stdout + res.stderr
    assert f"{old[0]}: checksum" not in res.stdout + res.stderr


def test_a_copy_of_a_sha256_era_wal_is_judged_by_sha256(
    make_home, wal_corpus, workdir: Path
) -> None:
    """A WAL arriving again under BLAKE3 is compared with its SHA-256 row: identical is a
    duplicate (source dropped), different is parked in errors/, and the archive keeps
    the first copy."""
    home, old, _ = sha256_era_and_blake3_rows(make_home, wal_corpus)
    same, other = old
    shutil.copy2(wal_corpus.path(same), home.incoming() / same)
    data = bytearray(wal_corpus.path(other).read_bytes())
    data[600_000] ^= 0x55
    (home.incoming() / other).write_bytes(bytes(data))
    res = home.run("archive")
    assert res.returncode == 1, res.stdout
    assert f"{same} duplicate" in res.stdout
    assert os.listdir(home.incoming()) == []
    parked = os.listdir(home.errors())
    assert len(parked) == 1 and parked[0].startswith(other) and parked[0].endswith(".duplicate")
    found = rows(home)
    assert [found[n].checksum_algorithm for n in old] == [None, None]  # rows untouched
    dest = workdir / "kept"
    home.run("get-wal", "pg1", other, str(dest), check=True)
    assert dest.read_bytes() == wal_corpus.path(other).read_bytes()


def test_barman_xlogdb_lines_carry_no_walq_checksum(make_home, wal_corpus) -> None:
    """Barman's xlogdb line is name, size, time, compression, encryption: nothing of
    walq's checksum, so the algorithm changes nothing Barman reads."""
    home = make_home({"pg1": {}})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    home.run("archive", check=True)
    lines = (home.wals() / "pg1-xlog.db").read_text().splitlines()
    digests = {blake3_hex(wal_corpus.path(n)) for n in names}
    assert [line.split("\t")[0] for line in lines] == names
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == 5 and not digests & set(fields)
