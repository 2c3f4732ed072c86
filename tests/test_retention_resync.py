"""walq catalog resync with real parts: real WAL, walq and Barman 3.19 archiving into
one home, files deleted behind walq's back; resync adopts what Barman archived (read
back and validated), marks what was deleted below the oldest kept segment, and
reports a hole above it as lost (check fails)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.services.barman import barman_of
from tests.services.homes import WalqHome
from walq.catalog import WalState
from walq.catalog.sqlite import SqliteCatalog
from walq.chunks import Checksum


def barman(home: WalqHome, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    conf = workdir / "barman.conf"
    if not conf.exists():
        conf.write_text(
            f"[barman]\nbarman_home = {home.home}\nbarman_user = root\nlog_file = {workdir}/barman.log\n\n"
            "[pg1]\ndescription = shares walq's home\nconninfo = host=/nonexistent\n"
            "backup_method = postgres\nstreaming_conninfo = host=/nonexistent\narchiver = on\n"
            "compression = gzip\n"
        )
    res = subprocess.run(
        [str(barman_of()), "-c", str(conf), *args], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def rows(home: WalqHome) -> dict:
    cat = SqliteCatalog(home.config.catalog_path, readonly=True)
    try:
        return {r.name: r for r in cat.records("pg1")}
    finally:
        cat.close()


def listing(home: WalqHome) -> list[str]:
    return sorted(p.name for p in home.wals().rglob("*") if p.is_file() and len(p.name) == 24)


def test_resync_adopts_barmans_objects_and_marks_what_others_deleted(
    make_home, workdir: Path, wal_corpus
) -> None:
    home: WalqHome = make_home({"pg1": {"compression": "zstd"}})
    segs = wal_corpus.segments
    wal_corpus.copy_into(home.incoming(), segs[:10])
    assert home.run("archive").returncode == 0
    # Barman archives the next five into the same tree (its own gzip, its own xlogdb lines)
    wal_corpus.copy_into(home.incoming(), segs[10:15])
    barman(home, workdir, "archive-wal", "pg1")
    assert listing(home) == segs[:15] and not list(home.incoming().iterdir())
    # a retention tool deletes the three oldest behind walq's back
    for name in segs[:3]:
        (home.wals() / name[:16] / name).unlink()
    res = home.run("verify", "pg1")
    assert (
        res.returncode == 1
        and "missing from storage" in res.stdout
        and "not in the catalog" in res.stdout
    )

    before = (rows(home), (home.wals() / "pg1-xlog.db").read_bytes())
    res = home.run("catalog", "resync", "pg1", "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "would adopt 5 object(s), would expire 3 row(s); 0 lost, 0 refused" in res.stdout
    assert (rows(home), (home.wals() / "pg1-xlog.db").read_bytes()) == before

    res = home.run("catalog", "resync", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
    after = rows(home)
    for name in segs[10:15]:
        r = after[name]
        assert r.state is WalState.ARCHIVED and r.codec == "gzip" and r.encryption == "none"
        assert r.checksum_algorithm == "blake3"
        assert r.checksum == Checksum("blake3").of([wal_corpus.path(name).read_bytes()]).hexdigest()
    assert {n for n, r in after.items() if r.state is WalState.EXPIRED} == set(segs[:3])
    res = home.run("verify", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
    xlogdb = (home.wals() / "pg1-xlog.db").read_bytes()
    assert [ln.split(b"\t")[0].decode() for ln in xlogdb.splitlines()] == segs[3:15]
    barman(home, workdir, "rebuild-xlogdb", "pg1")
    assert (home.wals() / "pg1-xlog.db").read_bytes() == xlogdb

    # idempotent
    res = home.run("catalog", "resync", "pg1")
    assert res.returncode == 0 and "adopt 0 object(s), expire 0 row(s); 0 lost" in res.stdout, (
        res.stdout
    )

    # a hole above the oldest kept segment is a loss, not an expiry; check fails on it
    (home.wals() / segs[7][:16] / segs[7]).unlink()
    res = home.run("catalog", "resync", "pg1")
    assert res.returncode == 1 and f"LOST {segs[7]}" in res.stdout, res.stdout
    assert rows(home)[segs[7]].state is WalState.ARCHIVED
    res = home.run("check", "pg1")
    assert res.returncode == 1 and "no lost WALs: FAILED" in res.stdout, res.stdout


def test_resync_refuses_an_object_that_is_not_sound_wal(make_home, wal_corpus) -> None:
    home: WalqHome = make_home({"pg1": {"compression": "none"}})
    segs = wal_corpus.segments
    wal_corpus.copy_into(home.incoming(), segs[:3])
    assert home.run("archive").returncode == 0
    hashdir = home.wals() / segs[3][:16]
    (hashdir / segs[3]).write_bytes(
        wal_corpus.path(segs[4]).read_bytes()
    )  # renamed: wrong page address
    foreign = next(
        n for n in wal_corpus.other_cluster if n not in segs[:4]
    )  # same name space, other cluster
    (home.wals() / foreign[:16]).mkdir(exist_ok=True)
    (home.wals() / foreign[:16] / foreign).write_bytes(
        (wal_corpus.directory / "other" / foreign).read_bytes()
    )
    (home.wals() / "00000002.history").write_bytes(b"not a history file\n")
    res = home.run("catalog", "resync", "pg1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"refused {segs[3]}: page address" in res.stdout
    assert f"refused {foreign}: system identifier" in res.stdout
    assert "refused 00000002.history: history line 1" in res.stdout
    assert not {segs[3], foreign, "00000002.history"} & set(rows(home))


def test_resync_on_s3_adopts_what_barman_cloud_archived(
    make_home, s3_bucket, barman_cloud_restore: str, wal_corpus, workdir: Path
) -> None:
    """barman-cloud-wal-archive (Barman 3.19) uploads into walq's prefix; an object is
    deleted behind walq's back; resync adopts the first (codec from the key) and marks the second."""
    from tests.services.s3 import s3_settings

    home: WalqHome = make_home({"pg1": s3_settings(s3_bucket, compression="zstd")})
    segs = wal_corpus.segments
    wal_corpus.copy_into(home.incoming(), segs[:5])
    assert home.run("archive").returncode == 0
    archive_wal = Path(barman_cloud_restore).parent / "barman-cloud-wal-archive"
    for name in segs[5:7]:
        res = subprocess.run(
            [
                str(archive_wal),
                "--endpoint-url",
                s3_bucket.endpoint,
                "--lz4",
                s3_bucket.url("fleet"),
                "pg1",
                str(wal_corpus.path(name)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=s3_bucket.server.env(),
        )
        assert res.returncode == 0, res.stderr
    first = next(k for k in s3_bucket.object_keys("fleet/") if segs[0] in k)
    s3_bucket.server.client().delete_object(Bucket=s3_bucket.name, Key=first)

    res = home.run("catalog", "resync", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "adopt 2 object(s), expire 1 row(s); 0 lost, 0 refused" in res.stdout
    after = rows(home)
    for name in segs[5:7]:
        r = after[name]
        assert r.state is WalState.ARCHIVED and r.codec == "lz4" and r.storage_key.endswith(".lz4")
        assert r.checksum_algorithm == "blake3"
        assert r.checksum == Checksum("blake3").of([wal_corpus.path(name).read_bytes()]).hexdigest()
    assert after[segs[0]].state is WalState.EXPIRED
    res = home.run("verify", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
