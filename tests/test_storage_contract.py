"""One contract, every storage backend: LocalStorage and S3Storage (real SeaweedFS).

Each test runs against both backends and states what the Storage protocol
promises: find whatever the extension, never overwrite, one object per WAL,
stream back exactly the stored bytes, list in name order, report a checksum
(or None), pass check().
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from tests.services.s3 import Bucket
from walq.config import ServerConfig
from walq.errors import AlreadyStoredError
from walq.storage import PutRequest, Storage, open_storage

SEG = "000000010000000000000007"
NEXT = "000000010000000000000008"
HIST = "00000002.history"


@pytest.fixture(params=["local", "s3"])
def storage(request, workdir: Path) -> Storage:
    if request.param == "local":
        cfg = ServerConfig(name="pg1", storage_url=f"file://{workdir / 'wals'}")
    else:
        bucket: Bucket = request.getfixturevalue("s3_bucket")
        cfg = ServerConfig(
            name="pg1",
            storage_url=bucket.url("fleet"),
            s3_endpoint_url=bucket.endpoint,
            s3_multipart_threshold=5 << 20,
        )
    return open_storage(cfg)


def payload(workdir: Path, data: bytes, tag: str = "p") -> Path:
    path = workdir / f"payload-{tag}-{hashlib.sha1(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return path


def request(
    workdir: Path,
    name: str,
    data: bytes,
    codec: str = "none",
    encrypted: bool = False,
    checksum: str | None = None,
) -> PutRequest:
    return PutRequest(
        name=name,
        payload=payload(workdir, data),
        codec=codec,
        encrypted=encrypted,
        mtime=1_700_000_000.0,
        checksum=checksum or hashlib.sha256(data).hexdigest(),
    )


def read_all(storage: Storage, obj) -> bytes:
    with storage.open(obj) as f:
        return f.read()


def test_put_find_open_roundtrip(storage: Storage, workdir: Path) -> None:
    assert storage.find(SEG) is None
    data = os.urandom(200_000)
    stored = storage.put(request(workdir, SEG, data, codec="zstd"))
    found = storage.find(SEG)
    assert found is not None and found.name == SEG and found.key == stored.key
    assert found.size == len(data)
    assert read_all(storage, found) == data


def test_never_overwrites(storage: Storage, workdir: Path) -> None:
    first = os.urandom(1000)
    storage.put(request(workdir, SEG, first))
    with pytest.raises(AlreadyStoredError):
        storage.put(request(workdir, SEG, os.urandom(1000)))
    assert read_all(storage, storage.find(SEG)) == first


def test_one_object_per_wal_whatever_the_codec(storage: Storage, workdir: Path) -> None:
    """After a codec change the WAL is still found; a second codec never adds a second object."""
    storage.put(request(workdir, SEG, b"a" * 100, codec="lz4"))
    with pytest.raises(AlreadyStoredError):
        storage.put(request(workdir, SEG, b"a" * 100, codec="zstd"))
    assert [o.name for o in storage.list()] == [SEG]


def test_list_in_name_order_with_history(storage: Storage, workdir: Path) -> None:
    storage.put(request(workdir, NEXT, b"n" * 10, codec="gzip"))
    storage.put(request(workdir, HIST, b"1\t0/3000000\tno recovery target specified\n"))
    storage.put(request(workdir, SEG, b"s" * 10, codec="gzip"))
    assert [o.name for o in storage.list()] == sorted([SEG, NEXT, HIST])
    assert storage.find(HIST) is not None
    assert storage.find("00000003.history") is None


def test_stored_checksum_is_the_plain_sha256_or_none(storage: Storage, workdir: Path) -> None:
    req = request(workdir, SEG, b"payload", checksum="ab" * 32)
    obj = storage.put(req)
    assert storage.stored_checksum(obj, "sha256") in (None, "ab" * 32)
    if storage.url.startswith("s3://"):
        assert storage.stored_checksum(obj, "sha256") == "ab" * 32
    assert storage.stored_checksum(obj, "blake3") is None  # kept under its own algorithm only


def test_stored_checksum_is_kept_per_algorithm(storage: Storage, workdir: Path) -> None:
    req = dataclasses.replace(
        request(workdir, SEG, b"payload", checksum="cd" * 32), checksum_algorithm="blake3"
    )
    obj = storage.put(req)
    assert storage.stored_checksum(obj, "sha256") is None
    assert storage.stored_checksum(obj, "blake3") in (None, "cd" * 32)
    if storage.url.startswith("s3://"):
        assert storage.stored_checksum(obj, "blake3") == "cd" * 32
        assert storage.written_from(obj, req.payload, "cd" * 32, "blake3")
        assert not storage.written_from(obj, req.payload, "cd" * 32, "sha256")


def test_check_passes_on_a_healthy_store(storage: Storage) -> None:
    storage.check()
    assert list(storage.list()) == []  # the probe leaves nothing behind in the archive


def test_multipart_above_threshold(storage: Storage, workdir: Path) -> None:
    """12 MiB crosses the 5 MiB threshold set for S3 here: multipart, same bytes back."""
    data = os.urandom(12 << 20)
    storage.put(request(workdir, SEG, data))
    obj = storage.find(SEG)
    assert obj is not None and obj.size == len(data)
    assert hashlib.sha256(read_all(storage, obj)).digest() == hashlib.sha256(data).digest()
    if storage.url.startswith("s3://"):  # a multipart ETag is "<md5 of md5s>-<parts>"
        etag = storage.client.head_object(Bucket=storage.bucket, Key=obj.key)["ETag"]
        assert etag.strip('"').endswith("-2"), etag
        assert storage.stored_checksum(obj, "sha256") == hashlib.sha256(data).hexdigest()
    with pytest.raises(AlreadyStoredError):
        storage.put(request(workdir, SEG, data))


# --- retention: delete ------------------------------------------------------------------------


def test_delete_removes_objects_and_is_idempotent(storage: Storage, workdir: Path) -> None:
    objs = [
        storage.put(request(workdir, n, n.encode() * 10, codec="zstd")) for n in (SEG, NEXT, HIST)
    ]
    storage.delete(objs[:2])
    assert [o.name for o in storage.list()] == [HIST]
    assert storage.find(SEG) is None and storage.find(NEXT) is None
    storage.delete(objs[:2])  # a rerun after a crash: already gone is not an error
    storage.delete([])
    assert [o.name for o in storage.list()] == [HIST]


def test_delete_refuses_a_key_that_is_not_the_wals(storage: Storage, workdir: Path) -> None:
    from walq.errors import StorageKeyError
    from walq.storage import StoredObject

    obj = storage.put(request(workdir, SEG, b"x" * 100))
    with pytest.raises(StorageKeyError):
        storage.delete([StoredObject(NEXT, obj.key, obj.size)])
    assert storage.find(SEG) is not None


def test_delete_more_than_one_batch(storage: Storage, workdir: Path) -> None:
    """Over 1,000 keys: S3 needs two DeleteObjects requests; local, many hash directories."""
    from walq.storage import StoredObject
    from walq.wal import segment_name

    names = [segment_name(1, n, 1 << 20) for n in range(1, 1102)]  # 1 MiB segments: 5 hash dirs
    objs = []
    for n in names[:3]:
        objs.append(storage.put(request(workdir, n, b"y" * 10)))
    # the rest are keys of WALs never stored: deleting them is a no-op, but they fill the batches
    prefix = objs[0].key[: -len(names[0])]  # wals/<hash dir>/ of the first
    for n in names[3:]:
        objs.append(StoredObject(n, prefix[: -len(n[:16]) - 1] + f"{n[:16]}/{n}", 10))
    storage.delete(objs)
    assert list(storage.list()) == []


def test_local_delete_removes_empty_hash_dirs_only(workdir: Path) -> None:
    from walq.storage.local import LocalStorage

    storage = LocalStorage(workdir / "wals", "pg1")
    a = storage.put(request(workdir, SEG, b"a"))
    b = storage.put(request(workdir, "000000010000000100000001", b"b"))
    barmans = workdir / "wals" / "0000000100000001" / "000000010000000100000002"
    barmans.write_bytes(b"Barman's")  # a file walq has no row for keeps its directory
    storage.delete([a, b])
    assert not (workdir / "wals" / SEG[:16]).exists()
    assert barmans.exists()


def test_xlogdb_rewrite_keeps_other_lines_byte_for_byte(workdir: Path) -> None:
    import fcntl
    import threading

    from walq.storage.local import LocalStorage

    home = workdir / "home"
    home.mkdir()
    storage = LocalStorage(workdir / "wals", "pg1", lock_dir=home)
    objs = [storage.put(request(workdir, n, n.encode())) for n in (SEG, NEXT)]
    for o in objs:
        storage.record_commit(o, 1.5, "zstd", False)
    barman_line = b"000000010000000000000009\t123\t1700000000.0\tgzip\tNone\n"
    with open(storage.xlogdb, "ab") as f:
        f.write(barman_line)
    before = storage.xlogdb.read_bytes()
    lock = home / ".pg1-xlogdb.lock"
    assert lock.exists() and (lock.stat().st_mode & 0o777) == 0o600

    # while someone (Barman) holds the xlogdb lock, neither append nor rewrite gets in
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    t = threading.Thread(target=lambda: (storage.rewrite_xlogdb([SEG]), done.set()))
    t.start()
    assert not done.wait(0.5), "the rewrite waited for Barman's lock"
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(10)
    assert done.is_set()
    after = storage.xlogdb.read_bytes()
    assert after == b"".join(
        ln for ln in before.splitlines(keepends=True) if not ln.startswith(SEG.encode())
    )
    assert barman_line in after and not (workdir / "wals" / ".pg1-xlog.db.walq-rewrite").exists()
    assert storage.rewrite_xlogdb([SEG]) == 0
