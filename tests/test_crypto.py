"""GPG encryption with a real gpg and a throwaway key (tests/services/gpg.py).

Locally the encrypted WAL keeps its bare name and is detected as PGP data, as
Barman does it; on S3 it gets ``.gpg`` after the codec extension. Either way
plain ``gpg --decrypt`` followed by the codec's own tool gives the original
segment, and walq get-wal decrypts with encryption_passphrase_command.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services.codec_tools import decompress_with_tool
from tests.services.gpg import PASSPHRASE, GpgKey, gpg_settings
from tests.services.homes import WalqHome
from tests.services.s3 import Bucket, s3_settings
from walq.catalog import open_catalog
from walq.codecs import get_codec
from walq.wal import parse_wal_name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plain_gpg_then_tool(key: GpgKey, blob: bytes, codec: str) -> bytes:
    """What a user who left walq would run: gpg --decrypt, then the codec's own tool."""
    dec = key.gpg(
        "--pinentry-mode",
        "loopback",
        "--passphrase-fd",
        "0",
        "--decrypt",
        input=PASSPHRASE.encode() + b"\n" + blob,
    )
    data = dec.stdout
    if codec == "none":
        return data
    return decompress_with_tool(codec, data)


def _archive_gpg_on_s3(
    make_home, s3_bucket: Bucket, gpg_env: GpgKey, segment: Path, codec: str = "zstd"
) -> tuple[WalqHome, str]:
    """One WAL archived to S3 by one worker, compressed with ``codec`` then gpg-encrypted."""
    home = make_home(
        {"pg1": s3_settings(s3_bucket, **gpg_settings(gpg_env, compression=codec))},
        archive_workers=1,
    )
    home.incoming().mkdir(parents=True, exist_ok=True)
    shutil.copy2(segment, home.incoming() / segment.name)
    home.run("archive", check=True)
    return home, segment.name


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_local_gpg_bare_name_pgp_data_and_plain_gpg(
    codec: str, gpg_env: GpgKey, make_home, wal_corpus, workdir: Path
) -> None:
    home: WalqHome = make_home({"pg1": gpg_settings(gpg_env, compression=codec)}, archive_workers=1)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    home.run("archive", check=True)
    for name in names:
        stored = home.wals() / parse_wal_name(name).hash_dir / name  # bare name, as Barman
        blob = stored.read_bytes()
        if shutil.which("file"):
            kind = subprocess.run(
                ["file", "--brief", str(stored)], capture_output=True, text=True
            ).stdout.upper()
            assert "PGP" in kind and "ENCRYPTED" in kind, kind  # Barman's detection
        assert PASSPHRASE.encode() not in blob
        assert sha(plain_gpg_then_tool(gpg_env, blob, codec)) == sha(
            wal_corpus.path(name).read_bytes()
        )
    xlogdb = (home.wals() / "pg1-xlog.db").read_text().splitlines()
    assert [line.split("\t")[3:] for line in xlogdb] == [[codec, "gpg"]] * 2
    out = workdir / "restored"
    res = home.run("get-wal", "pg1", names[1], str(out))
    assert res.returncode == 0, res.stderr
    assert sha(out.read_bytes()) == sha(wal_corpus.path(names[1]).read_bytes())
    assert home.run("verify", "pg1", check=True).returncode == 0


@pytest.mark.parametrize("codec", ["none", "gzip", "bzip2", "xz", "zstd", "lz4"])
def test_s3_gpg_key_suffix_and_plain_gpg(
    codec: str, gpg_env: GpgKey, s3_bucket: Bucket, make_home, wal_corpus, workdir: Path
) -> None:
    home, name = _archive_gpg_on_s3(
        make_home, s3_bucket, gpg_env, wal_corpus.path(wal_corpus.segments[3]), codec
    )
    key = f"fleet/pg1/wals/{parse_wal_name(name).hash_dir}/{name}{get_codec(codec).extension}.gpg"
    assert s3_bucket.object_keys() == [key]
    blob = s3_bucket.get(key)
    original = wal_corpus.path(name).read_bytes()
    assert sha(plain_gpg_then_tool(gpg_env, blob, codec)) == sha(original)
    out = workdir / "restored"
    res = home.run("get-wal", "pg1", name, str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == original


def test_s3_encrypted_duplicate_is_judged_by_plain_checksum(
    gpg_env: GpgKey, s3_bucket: Bucket, make_home, wal_corpus
) -> None:
    """gpg output differs on every run; the plain sha256 still recognises the same WAL."""
    home, name = _archive_gpg_on_s3(
        make_home, s3_bucket, gpg_env, wal_corpus.path(wal_corpus.segments[4])
    )
    before = s3_bucket.object_keys()
    # Same WAL again, after a crash lost the catalog row: fresh catalog, same bucket.
    (home.home / "catalog.sqlite").unlink()
    wal_corpus.copy_into(home.incoming(), [name])
    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (home.incoming() / name).exists() and list(home.errors().iterdir()) == []
    assert s3_bucket.object_keys() == before


def test_get_wal_with_wrong_passphrase_fails_clearly(
    gpg_env: GpgKey, make_home, wal_corpus, workdir: Path
) -> None:
    home = make_home({"pg1": gpg_settings(gpg_env, compression="lz4")}, archive_workers=1)
    name = wal_corpus.segments[5]
    wal_corpus.copy_into(home.incoming(), [name])
    home.run("archive", check=True)
    wrong = workdir / "wrong"
    wrong.write_text("not-the-passphrase-xyzzy\n")
    home = make_home(
        {
            "pg1": gpg_settings(
                gpg_env, compression="lz4", encryption_passphrase_command=f"cat {wrong}"
            )
        },
        archive_workers=1,
    )
    res = home.run("get-wal", "pg1", name, str(workdir / "out"))
    assert res.returncode == 2
    assert "Bad passphrase" in res.stderr
    assert "xyzzy" not in res.stderr + res.stdout and PASSPHRASE not in res.stderr + res.stdout
    assert not (workdir / "out").exists()
    check = home.run("check", "pg1")
    assert check.returncode == 1 and "encryption key: FAILED" in check.stdout


def test_check_reports_a_usable_key(gpg_env: GpgKey, make_home) -> None:
    home = make_home({"pg1": gpg_settings(gpg_env)})
    res = home.run("check", "pg1")
    assert "pg1: encryption key: OK" in res.stdout, res.stdout + res.stderr
    assert PASSPHRASE not in res.stdout + res.stderr


def test_unusable_key_leaves_every_source_in_place(gpg_env: GpgKey, make_home, wal_corpus) -> None:
    home = make_home(
        {
            "pg1": {
                "encryption": "gpg",
                "encryption_key_id": "nobody@example.invalid",
                "compression": "zstd",
            }
        },
        archive_workers=1,
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    res = home.run("archive")
    assert res.returncode == 1
    assert "nobody@example.invalid" in res.stdout + res.stderr
    assert sorted(p.name for p in home.incoming().iterdir()) == names
    assert not (home.wals() / parse_wal_name(names[0]).hash_dir / names[0]).exists()
    check = home.run("check", "pg1")
    assert check.returncode == 1 and "encryption key: FAILED" in check.stdout
    assert "missing or unusable" in check.stdout
    catalog = open_catalog(home.config)
    try:
        assert catalog.archived_names("pg1") == []
    finally:
        catalog.close()


def test_barman_cloud_does_not_serve_gpg_objects(
    gpg_env: GpgKey,
    s3_bucket: Bucket,
    make_home,
    wal_corpus,
    barman_cloud_restore: str,
    workdir: Path,
) -> None:
    """What the README says: Barman's cloud restore cannot read (and so never serves) .gpg objects."""
    home, name = _archive_gpg_on_s3(
        make_home, s3_bucket, gpg_env, wal_corpus.path(wal_corpus.segments[6])
    )
    res = subprocess.run(
        [
            barman_cloud_restore,
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            s3_bucket.endpoint,
            s3_bucket.url(),
            "pg1",
            name,
            str(workdir / name),
        ],
        capture_output=True,
        text=True,
        env=s3_bucket.server.env(),
        timeout=180,
    )
    assert res.returncode == 1 and not (workdir / name).exists()


def test_decrypt_streams_and_stops_cleanly(gpg_env: GpgKey, workdir: Path) -> None:
    """In-process: 6 MiB through gpg both ways in bounded pieces; a reader that stops early
    leaves no gpg behind; the passphrase command runs once per process."""
    import os

    from walq.config import ServerConfig
    from walq.crypto import decrypt_chunks, encrypt_file, forget_passphrases

    counter = workdir / "runs"
    cfg = ServerConfig(
        name="pg1",
        encryption="gpg",
        encryption_key_id=gpg_env.fingerprint,
        encryption_passphrase_command=f"echo x >> {counter}; {gpg_env.passphrase_command}",
    )
    forget_passphrases()
    src, dst = workdir / "plain", workdir / "plain.gpg"
    data = os.urandom(6 << 20)
    src.write_bytes(data)
    encrypt_file(src, dst, cfg)
    assert dst.read_bytes()[0] in (0x84, 0x85, 0xC1) and data[:4096] not in dst.read_bytes()

    def chunks():
        with open(dst, "rb") as f:
            while piece := f.read(1 << 20):
                yield piece

    pieces = list(decrypt_chunks(chunks(), cfg))
    assert max(len(p) for p in pieces) <= 256 << 10 and b"".join(pieces) == data
    gen = decrypt_chunks(chunks(), cfg)
    assert next(gen)
    gen.close()  # kills gpg; must not hang or leak
    assert counter.read_text().count("x") == 1
