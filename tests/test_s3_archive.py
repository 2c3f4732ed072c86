"""walq archive to a real S3 server (SeaweedFS), read back by Barman's own cloud tools.

Keys must be exactly barman-cloud's, one object per WAL whatever the codec,
and ``barman-cloud-wal-restore`` (PyPI barman, its own venv) must return every
segment byte-identical. Duplicates follow walq's rule on S3: identical content
(judged by the plain sha256, so it works encrypted too) drops the source;
different content goes to errors/ with a failed catalog row.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.services.homes import WalqHome, spooled
from tests.services.pg import wait_for
from tests.services.s3 import (
    Bucket,
    s3_settings,
)
from walq.catalog import WalState, open_catalog
from walq.chunks import Checksum
from walq.codecs import get_codec
from walq.restore import spool as spool_state
from walq.wal import parse_wal_name

BARMAN_CODECS = ["none", "gzip", "bzip2", "xz", "zstd", "lz4", "snappy"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blake3_of(path: Path) -> str:
    return Checksum("blake3").of([path.read_bytes()]).hexdigest()


def expected_key(name: str, codec: str, prefix: str = "fleet", server: str = "pg1") -> str:
    wal = parse_wal_name(name)
    hash_dir = "" if name.endswith(".history") else f"{wal.hash_dir}/"
    return f"{prefix}/{server}/wals/{hash_dir}{name}{get_codec(codec).extension}"


def barman_restore(
    tool: str, bucket: Bucket, name: str, dest: Path, *extra: str, prefix: str = "fleet"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            tool,
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            bucket.endpoint,
            *extra,
            bucket.url(prefix),
            "pg1",
            name,
            str(dest),
        ],
        capture_output=True,
        text=True,
        env=bucket.server.env(),
        timeout=180,
    )


@pytest.mark.parametrize("codec", BARMAN_CODECS)
def test_barman_cloud_wal_restore_reads_each_codec(
    codec: str, make_home, s3_bucket: Bucket, wal_corpus, barman_cloud_restore: str, workdir: Path
) -> None:
    home: WalqHome = make_home(
        {"pg1": s3_settings(s3_bucket, compression=codec)}, archive_workers=1
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    res = home.run("archive", check=True)
    assert "2 archived" in res.stdout
    assert s3_bucket.object_keys() == sorted(expected_key(n, codec) for n in names)
    assert list(home.incoming().iterdir()) == []
    for name in names:
        dest = workdir / "restored" / name
        dest.parent.mkdir(exist_ok=True)
        out = barman_restore(barman_cloud_restore, s3_bucket, name, dest)
        assert out.returncode == 0, out.stderr
        assert sha(dest) == sha(wal_corpus.path(name))
        # Barman's tools ignore the metadata; walq keeps the plain checksum there.
        meta = s3_bucket.head(expected_key(name, codec))["Metadata"]
        assert meta == {"walq-blake3": blake3_of(wal_corpus.path(name))}


def test_barman_prefetch_history_and_not_found(
    make_home, s3_bucket: Bucket, wal_corpus, barman_cloud_restore: str, workdir: Path
) -> None:
    """A history file at the wals/ root, prefetch over our keys, and exit 1 for a missing WAL."""
    home = make_home(
        {"pg1": s3_settings(s3_bucket, prefix="deep/er", compression="zstd")}, archive_workers=1
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
    tli = int(names[0][:8], 16)
    history = f"{tli + 1:08X}.history"
    history_text = f"{tli}\t0/{int(names[1][16:], 16):X}00000\tno recovery target specified\n"
    (home.incoming() / history).write_text(history_text)
    home.run("archive", check=True)
    assert f"deep/er/pg1/wals/{history}.zst" in s3_bucket.object_keys()
    spool = workdir / "spool"
    dest = workdir / names[0]
    out = barman_restore(
        barman_cloud_restore,
        s3_bucket,
        names[0],
        dest,
        "-p",
        "3",
        "--spool-dir",
        str(spool),
        prefix="deep/er",
    )
    assert out.returncode == 0, out.stderr
    assert sha(dest) == sha(wal_corpus.path(names[0]))
    for name in names[1:3]:
        assert sha(spool / name) == sha(wal_corpus.path(name))
    out = barman_restore(
        barman_cloud_restore, s3_bucket, history, workdir / history, prefix="deep/er"
    )
    assert out.returncode == 0, out.stderr
    assert (workdir / history).read_text() == history_text
    missing = "0000000100000000000000FE"
    out = barman_restore(
        barman_cloud_restore, s3_bucket, missing, workdir / missing, prefix="deep/er"
    )
    assert out.returncode == 1


def test_codec_change_keeps_one_key_and_duplicates_follow_the_rule(
    make_home, s3_bucket: Bucket, wal_corpus, barman_cloud_restore: str, workdir: Path
) -> None:
    seg = wal_corpus.segments[0]
    home = make_home({"pg1": s3_settings(s3_bucket, compression="lz4")}, archive_workers=1)
    wal_corpus.copy_into(home.incoming(), [seg])
    home.run("archive", check=True)
    assert s3_bucket.object_keys() == [expected_key(seg, "lz4")]

    # The operator switches to zstd and the same WAL arrives again (identical bytes).
    home = make_home({"pg1": s3_settings(s3_bucket, compression="zstd")}, archive_workers=1)
    wal_corpus.copy_into(home.incoming(), [seg])
    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 duplicate(s) dropped" in res.stdout
    assert not (home.incoming() / seg).exists()
    assert s3_bucket.object_keys() == [expected_key(seg, "lz4")]  # never a second key for one WAL

    # A different copy of the same WAL (valid header, one byte changed in the body).
    data = bytearray(wal_corpus.path(seg).read_bytes())
    data[len(data) - 100] ^= 0xFF
    (home.incoming() / seg).write_bytes(bytes(data))
    res = home.run("archive")
    assert res.returncode == 1
    assert not (home.incoming() / seg).exists()
    parked = [p.name for p in home.errors().iterdir()]
    assert len(parked) == 1 and parked[0].startswith(seg) and parked[0].endswith(".duplicate")
    assert s3_bucket.object_keys() == [expected_key(seg, "lz4")]
    out = barman_restore(barman_cloud_restore, s3_bucket, seg, workdir / seg)
    assert out.returncode == 0 and sha(workdir / seg) == sha(wal_corpus.path(seg))


def test_adopts_an_identical_object_written_by_another_codec(
    make_home, s3_bucket: Bucket, wal_corpus, workdir: Path
) -> None:
    """An object stored before the catalog heard of it (crash, or barman-cloud-wal-archive):
    identical content is adopted with the object's own codec, so get-wal still decodes it."""
    seg = wal_corpus.segments[1]
    from walq.codecs import compress_chunks

    body = b"".join(compress_chunks([wal_corpus.path(seg).read_bytes()], "gzip"))
    s3_bucket.server.client().put_object(
        Bucket=s3_bucket.name, Key=expected_key(seg, "gzip"), Body=body
    )
    home = make_home({"pg1": s3_settings(s3_bucket, compression="zstd")}, archive_workers=1)
    wal_corpus.copy_into(home.incoming(), [seg])
    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert s3_bucket.object_keys() == [expected_key(seg, "gzip")]
    catalog = open_catalog(home.config)
    try:
        record = catalog.get("pg1", seg)
    finally:
        catalog.close()
    assert record is not None and record.state is WalState.ARCHIVED and record.codec == "gzip"
    dest = workdir / "out"
    assert home.run("get-wal", "pg1", seg, str(dest)).returncode == 0
    assert sha(dest) == sha(wal_corpus.path(seg))


def test_get_wal_list_verify_and_prefetch_on_s3(
    make_home, s3_bucket: Bucket, wal_corpus, workdir: Path
) -> None:
    home = make_home({"pg1": s3_settings(s3_bucket, compression="xz")}, archive_workers=1)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:5])
    home.run("archive", check=True)
    listed = home.run("list", "pg1", check=True).stdout
    assert all(n in listed for n in names) and "archived" in listed
    assert home.run("verify", "pg1", check=True).returncode == 0

    dest = workdir / "pg_wal"
    dest.mkdir()
    res = home.run("get-wal", "pg1", names[0], str(dest / "RECOVERYXLOG"), "--prefetch", "3")
    assert res.returncode == 0, res.stderr
    assert sha(dest / "RECOVERYXLOG") == sha(wal_corpus.path(names[0]))
    spool = home.home / "restore-spool" / "pg1"
    wait_for(
        lambda: spooled(spool) == names[1:4], 60, "the prefetcher to restore the next 3 segments"
    )
    # The next requests are served from the spool, byte-identical, and the spool empties.
    for name in names[1:]:
        assert home.run("get-wal", "pg1", name, str(dest / name), "--prefetch", "3").returncode == 0
        assert sha(dest / name) == sha(wal_corpus.path(name))
    wait_for(
        lambda: spool_state.running_pid(spool) is None,
        60,
        "the prefetcher to exit at the archive's end",
    )
    assert spooled(spool) == []
    missing = home.run("get-wal", "pg1", "0000000100000000000000FE", str(dest / "x"))
    assert missing.returncode == 1

    # verify notices an object that disappears behind walq's back.
    s3_bucket.server.client().delete_object(Bucket=s3_bucket.name, Key=expected_key(names[2], "xz"))
    res = home.run("verify", "pg1")
    assert res.returncode == 1 and names[2] in res.stdout


def test_sse_storage_class_and_tags_on_every_upload(
    make_home, s3_bucket: Bucket, wal_corpus
) -> None:
    home = make_home(
        {
            "pg1": s3_settings(
                s3_bucket,
                compression="zstd",
                s3_sse="AES256",
                s3_storage_class="STANDARD_IA",
                s3_tags={"team": "db", "retention": "30d"},
            )
        },
        archive_workers=1,
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    home.run("archive", check=True)
    client = s3_bucket.server.client()
    for name in names:
        key = expected_key(name, "zstd")
        head = s3_bucket.head(key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["StorageClass"] == "STANDARD_IA"
        tags = {
            t["Key"]: t["Value"]
            for t in client.get_object_tagging(Bucket=s3_bucket.name, Key=key)["TagSet"]
        }
        assert tags == {"team": "db", "retention": "30d"}
    assert home.run("verify", "pg1", check=True).returncode == 0


def test_kms_key_id_and_checksum_are_sent(s3_bucket: Bucket, workdir: Path) -> None:
    """SeaweedFS here has no KMS, so this checks what walq sends, and that the refusal is clear."""
    from walq.config import ServerConfig
    from walq.errors import StorageError
    from walq.storage import PutRequest
    from walq.storage import s3 as s3mod
    from walq.storage.s3 import S3Storage

    storage = S3Storage(
        ServerConfig(
            name="pg1",
            storage_url=s3_bucket.url(),
            s3_endpoint_url=s3_bucket.endpoint,
            s3_sse="aws:kms",
            s3_sse_kms_key_id="alias/walq-test",
        )
    )
    sent: list[dict] = []
    storage.client.meta.events.register(
        "before-call.s3.PutObject", lambda params, **kw: sent.append(params)
    )
    payload = workdir / "p"
    payload.write_bytes(b"x" * 1000)
    req = PutRequest("000000010000000000000001", payload, "none", False, 0.0, "cd" * 32)
    with pytest.raises(StorageError) as err:
        storage.put(req)
    assert "InternalError" in str(err.value) or "KMS" in str(err.value)
    headers = next(p for p in sent if "/wals/" in p["url_path"])["headers"]
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/walq-test"
    assert headers["If-None-Match"] == "*"
    assert headers["x-amz-checksum-crc32"] == s3mod.crc32_b64(payload)
    assert "x-amz-checksum-sha256" not in headers  # CRC32 of the payload, not a second SHA-256
    assert headers["x-amz-meta-walq-sha256"] == "cd" * 32


def test_server_verifies_the_upload_checksum(s3_bucket: Bucket, workdir: Path, monkeypatch) -> None:
    """Bytes that change between checksum and upload are refused by the server, never stored."""
    import walq.storage.s3 as s3mod
    from walq.config import ServerConfig
    from walq.errors import StorageError
    from walq.storage import PutRequest

    storage = s3mod.S3Storage(
        ServerConfig(name="pg1", storage_url=s3_bucket.url(), s3_endpoint_url=s3_bucket.endpoint)
    )
    payload = workdir / "p"
    payload.write_bytes(b"y" * 5000)
    real = s3mod.crc32_b64
    monkeypatch.setattr(
        s3mod, "crc32_b64", lambda p: "AAAAAA==" if real(p) != "AAAAAA==" else "AAAAAQ=="
    )
    with pytest.raises(StorageError):
        storage.put(PutRequest("000000010000000000000001", payload, "none", False, 0.0, "ef" * 32))
    assert s3_bucket.object_keys() == []
