"""Storage keys are checked in one place (each backend's ``validate_key``), by the
writers (task arguments, commit) and by every reader: a catalog row whose
storage_key is absolute, climbs out with '..', or names another WAL makes get-wal
exit 2 with one line, serving nothing, and verify report it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.services.homes import WalqHome
from tests.services.pg import wait_for
from walq.config import load_config
from walq.errors import StorageKeyError
from walq.restore.spool import running_pid
from walq.storage.local import LocalStorage
from walq.storage.s3 import S3Storage

W = "000000010000000000000007"
PASSWD = Path("/etc/passwd")


def _forge_row(home: WalqHome, name: str, key: str) -> None:
    """What a forged commit used to leave: the row points at /etc/passwd's bytes."""
    data = PASSWD.read_bytes()
    with sqlite3.connect(home.config.catalog_path) as db:
        db.execute(
            "UPDATE wal SET storage_key=?, size=?, stored_size=?, checksum=?, codec='none', encryption='none' "
            "WHERE server='pg1' AND name=?",
            (key, len(data), len(data), hashlib.sha256(data).hexdigest(), name),
        )


@pytest.mark.parametrize(
    "key",
    [
        str(PASSWD),
        "../../../../../../../../etc/passwd",
        "0000000100000000/../../../../../../../../etc/passwd",
        "0000000100000000/000000010000000000000001",
    ],
)
def test_get_wal_refuses_a_forged_storage_key(
    walq_home: WalqHome, wal_corpus, workdir: Path, key: str
) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    walq_home.run("archive", check=True)
    _forge_row(walq_home, names[1], key)
    dest = workdir / "restored"
    res = walq_home.run("get-wal", "pg1", names[1], str(dest))
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "storage key" in lines[0] and names[1] in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not dest.exists() and list(workdir.glob(".restored*")) == []
    res = walq_home.run("verify", "pg1")
    assert res.returncode == 1 and f"{names[1]}: catalog row refused" in res.stdout, res.stdout
    assert walq_home.run("get-wal", "pg1", names[0], str(dest)).returncode == 0, (
        "other rows still restore"
    )


def test_local_validate_key(tmp_path: Path) -> None:
    wals = tmp_path / "wals"
    storage = LocalStorage(wals, "pg1")
    assert storage.validate_key(W, f"0000000100000000/{W}") == f"0000000100000000/{W}"
    assert storage.validate_key("00000002.history", "00000002.history") == "00000002.history"
    for bad in (
        f"/{W}",
        str(wals / "0000000100000000" / W),
        f"0000000100000000/../0000000100000000/{W}",
        f"0000000100000000/{W}.zst",
        "0000000100000000/000000010000000000000008",
        f"./0000000100000000/{W}",
        "x" * 100_000,
    ):
        with pytest.raises(StorageKeyError):
            storage.validate_key(W, bad)
    # the right name, through a symlinked hash directory that leads out of wals/
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    wals.mkdir()
    (wals / "0000000100000000").symlink_to(outside)
    with pytest.raises(StorageKeyError, match="resolves to"):
        storage.validate_key(W, f"0000000100000000/{W}")


def test_s3_validate_key(walq_home: WalqHome) -> None:
    text = walq_home.config_path.read_text().replace(
        "[servers.pg1]", '[servers.pg1]\nstorage_url = "s3://bucket/path"'
    )
    walq_home.config_path.write_text(text)
    storage = S3Storage(load_config(walq_home.config_path).server("pg1"))
    base = "path/pg1/wals/"
    for good in (
        f"{base}0000000100000000/{W}",
        f"{base}0000000100000000/{W}.zst",
        f"{base}0000000100000000/{W}.zst.gpg",
        f"{base}0000000100000000/{W}.gpg",
        f"{base}00000002.history.gz",
    ):
        name = good.rsplit("/", 1)[1].split(".")[0] if "history" not in good else "00000002.history"
        assert storage.validate_key(name, good) == good
    for bad in (
        f"/{base}0000000100000000/{W}",
        f"other/pg1/wals/0000000100000000/{W}",
        f"path/pg2/wals/0000000100000000/{W}",
        f"{base}0000000100000000/../{W}",
        f"{base}0000000100000000/{W}.zst.zst",
        f"{base}0000000100000000/{W}.exe",
        f"{base}0000000100000000/000000010000000000000008.zst",
        f"{base}{W}",
        f"{base}0000000100000000/x/{W}",
        "/etc/passwd",
    ):
        with pytest.raises(StorageKeyError):
            storage.validate_key(W, bad)


def test_the_prefetcher_never_spools_a_forged_row(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:4])
    walq_home.run("archive", check=True)
    _forge_row(walq_home, names[2], str(PASSWD))
    res = walq_home.run("get-wal", "pg1", names[0], str(workdir / "first"), "--prefetch", "3")
    assert res.returncode == 0, res.stderr
    spool = walq_home.home / "restore-spool" / "pg1"
    wait_for(lambda: running_pid(spool) is None, 60, "the prefetcher to finish")
    assert not (spool / names[2]).exists(), "a forged row was prefetched"
    res = walq_home.run("get-wal", "pg1", names[2], str(workdir / "third"), "--prefetch", "3")
    assert res.returncode == 2 and "storage key" in res.stderr, (res.returncode, res.stderr)
    assert not (workdir / "third").exists()
