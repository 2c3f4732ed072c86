"""One contract, every storage backend: LocalStorage and S3Storage (real SeaweedFS).

Each test runs against both backends and states what the Storage protocol
promises: find whatever the extension, never overwrite, one object per WAL,
stream back exactly the stored bytes, list in name order, report a checksum
(or None), pass check().
"""

from __future__ import annotations

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
    assert storage.stored_checksum(obj) in (None, "ab" * 32)
    if storage.url.startswith("s3://"):
        assert storage.stored_checksum(obj) == "ab" * 32


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
        assert storage.stored_checksum(obj) == hashlib.sha256(data).hexdigest()
    with pytest.raises(AlreadyStoredError):
        storage.put(request(workdir, SEG, data))
