"""walq archive on real WAL: the happy path, Barman's layout, and every kind of bad input.

Each bad-input case puts good WAL beside the bad file and checks that the good
WAL is archived, the bad file is reported by name and parked (or left) as the
rules say, and nothing else in the archive changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.services.homes import WalqHome
from walq.catalog import WalState, open_catalog
from walq.codecs import detect
from walq.fsutil import OWNED_MARKER


def _digest_tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and ".walq-tmp" not in p.parts
    }


def _archived(home: WalqHome) -> list[str]:
    catalog = open_catalog(home.config)
    try:
        return catalog.archived_names("pg1")
    finally:
        catalog.close()


def test_archive_real_wal_in_barman_layout(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:8])
    res = walq_home.run("archive", check=True)
    assert "8 archived" in res.stdout
    assert _archived(walq_home) == names
    assert os.listdir(walq_home.incoming()) == []
    xlogdb = (walq_home.wals() / "pg1-xlog.db").read_text().splitlines()
    assert [line.split("\t")[0] for line in xlogdb] == names  # sorted, once each
    for line, name in zip(xlogdb, names, strict=True):
        fields = line.split("\t")
        stored = walq_home.wals() / name[:16] / name  # bare name inside the hash dir
        assert len(fields) == 5 and fields[3] == "zstd" and fields[4] == "None"
        assert int(fields[1]) == stored.stat().st_size
        assert detect(stored.read_bytes()[:10]) == "zstd"
        assert float(fields[2]) == pytest.approx(wal_corpus.path(name).stat().st_mtime, abs=1e-3)
    assert walq_home.run("verify", "pg1").returncode == 0


def test_get_wal_is_byte_identical_and_missing_is_exit_1(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:3])
    walq_home.run("archive", check=True)
    dest = workdir / "restored"
    res = walq_home.run("get-wal", "pg1", names[1], str(dest))
    assert res.returncode == 0, res.stderr
    assert dest.read_bytes() == wal_corpus.path(names[1]).read_bytes()
    res = walq_home.run("get-wal", "pg1", "00000002.history", str(workdir / "h"))
    assert res.returncode == 1 and "not in the archive" in res.stderr
    assert not (workdir / "h").exists()


def test_corrupted_archive_copy_is_refused_by_get_wal(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    name = wal_corpus.segments[0]
    stored = walq_home.archive_for_tampering(wal_corpus.path(name))
    from walq.codecs import compress_chunks

    tampered = bytearray(wal_corpus.path(name).read_bytes())
    tampered[5000] ^= 0xFF
    stored.write_bytes(b"".join(compress_chunks([bytes(tampered)], "zstd")))
    dest = workdir / "out"
    res = walq_home.run("get-wal", "pg1", name, str(dest))
    assert res.returncode == 2 and "checksum" in res.stderr
    assert not dest.exists() and not list(workdir.glob(".out.*"))
    assert walq_home.run("verify", "pg1").returncode == 1


def _bad_case(home: WalqHome, wal_corpus, make_bad) -> tuple[object, list[str], str]:
    """Archive 3 good WALs, then 2 more beside one bad file; return (result, good, bad name)."""
    first = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[10:13])
    home.run("archive", check=True)
    before = _digest_tree(home.wals())
    good = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[13:15])
    bad_name = make_bad(home.incoming())
    res = home.run("archive")
    after = _digest_tree(home.wals())
    for key, digest in before.items():
        if not key.endswith("-xlog.db"):
            assert after[key] == digest, f"{key} changed"
    assert set(_archived(home)) >= set(first + good)
    return res, good, bad_name


def _drop_other_cluster_wal(wal_corpus, incoming: Path) -> str:
    """A segment from the second cluster whose name the main corpus run does not use."""
    other = next(n for n in wal_corpus.other_cluster if n not in wal_corpus.segments[10:15])
    shutil.copy(wal_corpus.directory / "other" / other, incoming / other)
    return other


def _errors(home: WalqHome) -> list[str]:
    return sorted(os.listdir(home.errors())) if home.errors().exists() else []


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage", "magic"),
        ("truncated", "truncated"),
        ("zero_length", "empty file"),
        ("other_cluster", "another cluster"),
        ("renamed", "page address"),
    ],
)
def test_invalid_content_goes_to_errors(
    case: str, reason: str, walq_home: WalqHome, wal_corpus
) -> None:
    def make_bad(incoming: Path) -> str:
        name = wal_corpus.segments[20]
        if case == "garbage":
            (incoming / name).write_bytes(os.urandom(1 << 20))
        elif case == "truncated":
            (incoming / name).write_bytes(wal_corpus.path(name).read_bytes()[:300_000])
        elif case == "zero_length":
            (incoming / name).write_bytes(b"")
        elif case == "other_cluster":
            return _drop_other_cluster_wal(wal_corpus, incoming)
        elif case == "renamed":
            shutil.copy(wal_corpus.path(wal_corpus.segments[21]), incoming / name)
        return name

    res, _, bad = _bad_case(walq_home, wal_corpus, make_bad)
    assert res.returncode == 1
    assert bad in res.stdout and reason in res.stdout
    parked = [e for e in _errors(walq_home) if e.startswith(bad)]
    assert len(parked) == 1 and parked[0].endswith(".error")
    assert bad not in _archived(walq_home)
    catalog = open_catalog(walq_home.config)
    try:
        row = catalog.get("pg1", bad)
        assert row is not None and row.state is WalState.FAILED and reason in (row.last_error or "")
    finally:
        catalog.close()
    listed = walq_home.run("list", "pg1", "--failed")
    assert bad in listed.stdout


def test_other_cluster_message_names_both_identifiers(walq_home: WalqHome, wal_corpus) -> None:
    res, _, _ = _bad_case(
        walq_home, wal_corpus, lambda incoming: _drop_other_cluster_wal(wal_corpus, incoming)
    )
    assert str(wal_corpus.system_identifier) in res.stdout


def test_symlink_and_unknown_files_go_to_errors_untouched(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    target = workdir / "precious"
    target.write_bytes(b"do not touch")

    def make_bad(incoming: Path) -> str:
        os.symlink(target, incoming / wal_corpus.segments[20])
        (incoming / "notes.txt").write_text("hello")
        return wal_corpus.segments[20]

    res, _, bad = _bad_case(walq_home, wal_corpus, make_bad)
    assert res.returncode == 1
    errors = _errors(walq_home)
    assert any(e.startswith(bad) and e.endswith(".unknown") for e in errors)
    assert any(e.startswith("notes.txt.") and e.endswith(".unknown") for e in errors)
    assert target.read_bytes() == b"do not touch"
    assert "notes.txt" in res.stderr


def test_identical_duplicate_is_dropped(walq_home: WalqHome, wal_corpus) -> None:
    def make_bad(incoming: Path) -> str:
        name = wal_corpus.segments[11]  # already archived
        shutil.copy2(wal_corpus.path(name), incoming / name)
        return name

    res, _, bad = _bad_case(walq_home, wal_corpus, make_bad)
    assert res.returncode == 0, res.stdout
    assert f"{bad} duplicate" in res.stdout
    assert _errors(walq_home) == [] and os.listdir(walq_home.incoming()) == []
    lines = (walq_home.wals() / "pg1-xlog.db").read_text().splitlines()
    assert sum(1 for line in lines if line.startswith(bad)) == 1


def test_different_duplicate_goes_to_errors(walq_home: WalqHome, wal_corpus) -> None:
    def make_bad(incoming: Path) -> str:
        name = wal_corpus.segments[11]  # already archived
        data = bytearray(wal_corpus.path(name).read_bytes())
        data[600_000] ^= 0x55
        (incoming / name).write_bytes(bytes(data))
        return name

    res, _, bad = _bad_case(walq_home, wal_corpus, make_bad)
    assert res.returncode == 1 and bad in res.stdout
    assert any(e.startswith(bad) and e.endswith(".duplicate") for e in _errors(walq_home))
    dest = walq_home.root / "check"
    walq_home.run("get-wal", "pg1", bad, str(dest), check=True)
    assert dest.read_bytes() == wal_corpus.path(bad).read_bytes()  # the archive kept the first copy


def test_unreadable_file_is_reported_and_left_in_place(
    walq_home: WalqHome, wal_corpus, walq_runnable_by_postgres
) -> None:
    good = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    bad = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[2:3])[0]
    walq_home.run("status", as_pg=True)  # chown the tree to postgres
    os.chown(walq_home.incoming() / bad, 0, 0)
    os.chmod(walq_home.incoming() / bad, 0o000)
    res = (
        walq_home.run("archive", as_pg=False)
        if os.geteuid() != 0
        else _run_as_pg(walq_home, "archive")
    )
    assert res.returncode == 1
    assert bad in res.stdout and "Permission denied" in res.stdout
    assert (walq_home.incoming() / bad).exists()
    assert set(good) <= set(_archived(walq_home))
    os.chmod(walq_home.incoming() / bad, 0o644)
    res = _run_as_pg(walq_home, "archive")
    assert res.returncode == 0, res.stdout
    assert bad in _archived(walq_home)


def _run_as_pg(home: WalqHome, *args: str):
    import subprocess

    from tests.services.homes import WALQ
    from tests.services.pg import as_postgres

    return subprocess.run(
        [*as_postgres(), str(WALQ), "--config", str(home.config_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["archive", "../etc"],
        ["archive", "pg1/x"],
        ["archive", "nosuch"],
        ["get-wal", "pg1", "../000000010000000000000001", "/tmp/x"],
        ["get-wal", "pg1", "000000010000000000000001/..", "/tmp/x"],
        ["get-wal", "..", "000000010000000000000001", "/tmp/x"],
        ["put-wal", "pg1", "/etc/passwd"],
        ["retry", "pg1", "../../x"],
        ["list", "a/b"],
    ],
)
def test_bad_command_line_arguments(argv: list[str], walq_home: WalqHome) -> None:
    before = _digest_tree(walq_home.home)
    res = walq_home.run(*argv)
    assert res.returncode == 2, res
    err = res.stderr.strip()
    assert err.startswith("walq: ") and len(err.splitlines()) == 1
    assert any(part in err for part in argv[1:]) or "unknown server" in err
    assert _digest_tree(walq_home.home) == before


def test_put_wal_is_atomic_and_idempotent(walq_home: WalqHome, wal_corpus) -> None:
    name = wal_corpus.segments[0]
    src = wal_corpus.path(name)
    assert walq_home.run("put-wal", "pg1", str(src)).returncode == 0
    assert (walq_home.incoming() / name).read_bytes() == src.read_bytes()
    assert walq_home.run("put-wal", "pg1", str(src)).returncode == 0  # identical: success
    other = walq_home.root / name
    data = bytearray(src.read_bytes())
    data[1000] ^= 1
    other.write_bytes(bytes(data))
    res = walq_home.run("put-wal", "pg1", str(other))
    assert res.returncode == 1 and "different content" in res.stderr
    assert (walq_home.incoming() / name).read_bytes() == src.read_bytes()
    assert [p for p in os.listdir(walq_home.incoming()) if p.startswith(".")] == []


@pytest.mark.parametrize("codec", ["none", "gzip", "bzip2", "xz", "lz4", "snappy", "zstd"])
def test_every_codec_archives_and_restores(codec: str, make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"compression": codec}})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    home.run("archive", check=True)
    line = (home.wals() / "pg1-xlog.db").read_text().splitlines()[0].split("\t")
    assert line[3] == (codec if codec != "none" else "None")
    for name in names:
        dest = home.root / f"out-{name}"
        home.run("get-wal", "pg1", name, str(dest), check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()


def test_precompressed_incoming_keeps_its_codec(walq_home: WalqHome, wal_corpus) -> None:
    import gzip

    name = wal_corpus.segments[4]
    (walq_home.incoming()).mkdir(parents=True, exist_ok=True)
    (walq_home.incoming() / name).write_bytes(gzip.compress(wal_corpus.path(name).read_bytes()))
    walq_home.run("archive", check=True)
    line = (walq_home.wals() / "pg1-xlog.db").read_text().split("\t")
    assert line[3] == "gzip"
    dest = walq_home.root / "out"
    walq_home.run("get-wal", "pg1", name, str(dest), check=True)
    assert dest.read_bytes() == wal_corpus.path(name).read_bytes()


def test_codec_none_stores_the_read_inode_without_a_second_copy(make_home, wal_corpus) -> None:
    """compression = none: the archived file is the very inode walq read and checksummed
    (a hard link, no second copy written), byte-identical, and get-wal verifies it."""
    home = make_home({"pg1": {"compression": "none"}})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    inodes = {n: (home.incoming() / n).stat().st_ino for n in names}
    home.run("archive", check=True)
    for name in names:
        stored = home.wals() / name[:16] / name
        assert stored.stat().st_ino == inodes[name] and stored.stat().st_nlink == 1
        assert not (home.incoming() / name).exists()
        dest = home.root / f"out-{name}"
        home.run("get-wal", "pg1", name, str(dest), check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()
    assert not [
        p for p in (home.home / "spool").rglob("*") if p.is_file() and p.name != OWNED_MARKER
    ]
