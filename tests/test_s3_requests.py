"""S3 request counts, seen by the loopback proxy in front of the real SeaweedFS.

- A store that honours ``If-None-Match: *`` (SeaweedFS does): one PUT per stored
  WAL, plus a per-process constant (the probe, one LIST of the hash directory).
- get-wal of an archived WAL: exactly one request, the GET of its key.
- A store that ignores the header (the proxy turns its 412 into 200) or refuses it
  (501): the probe says so and every PUT gets its LIST first, so nothing is
  overwritten and no WAL gets a second key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.services.s3 import Bucket, FaultProxy, s3_settings


def _is_list(method: str, path: str) -> bool:
    return method == "GET" and "list-type=2" in path


def _wal_puts(requests: list[tuple[str, str]]) -> list[str]:
    return [p for m, p in requests if m == "PUT" and "/wals/" in p]


def test_seaweedfs_honours_if_none_match_and_the_probe_leaves_nothing(s3_bucket: Bucket) -> None:
    from walq.config import ServerConfig
    from walq.storage.s3 import S3Storage

    with FaultProxy(s3_bucket.server.ports["s3"], every=0) as proxy:
        st = S3Storage(
            ServerConfig(name="pg1", storage_url=s3_bucket.url(), s3_endpoint_url=proxy.endpoint)
        )
        assert st.conditional_writes() is True
        assert st.conditional_writes() is True  # asked once per process
        assert [m for m, _ in proxy.requests] == ["PUT", "PUT", "DELETE"]
    assert s3_bucket.object_keys() == []


def test_one_request_per_stored_wal_and_per_restored_wal(
    s3_bucket: Bucket, make_home, wal_corpus, workdir: Path
) -> None:
    with FaultProxy(s3_bucket.server.ports["s3"], every=0) as proxy:
        home = make_home(
            {"pg1": s3_settings(s3_bucket, endpoint=proxy.endpoint, compression="zstd")},
            archive_workers=1,
        )
        names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:8])
        res = home.run("archive")
        assert res.returncode == 0, res.stdout + res.stderr
        wal_puts = _wal_puts(proxy.requests)
        assert len(wal_puts) == len(names)
        lists = [p for m, p in proxy.requests if _is_list(m, p)]
        assert len(lists) == 1, proxy.requests  # one hash directory, listed once
        probe = [m for m, p in proxy.requests if ".walq-if-none-match" in p]
        assert probe == ["PUT", "PUT", "DELETE"]  # once per process
        housekeeping = [p for m, p in proxy.requests if m == "GET" and "?uploads" in p]
        assert len(housekeeping) == 1  # the run's one look for stale multipart uploads
        assert len(proxy.requests) == len(names) + 1 + 3 + 1, proxy.requests
        assert len(s3_bucket.object_keys()) == len(names)

        for name in names[:3]:
            proxy.requests.clear()
            out = workdir / f"back-{name}"
            res = home.run("get-wal", "pg1", name, str(out))
            assert res.returncode == 0, res.stderr
            assert proxy.requests == [("GET", proxy.requests[0][1])], proxy.requests
            assert name in proxy.requests[0][1] and "list-type" not in proxy.requests[0][1]
            assert (
                hashlib.sha256(out.read_bytes()).digest()
                == hashlib.sha256(wal_corpus.path(name).read_bytes()).digest()
            )


@pytest.mark.parametrize("mode", ["ignore", "refuse"])
def test_store_without_conditional_writes_gets_a_list_before_every_put(
    mode: str, s3_bucket: Bucket, workdir: Path
) -> None:
    from walq.config import ServerConfig
    from walq.errors import AlreadyStoredError
    from walq.storage import PutRequest
    from walq.storage.s3 import S3Storage

    flags = {"ignore_conditional": True} if mode == "ignore" else {"refuse_conditional": True}
    with FaultProxy(s3_bucket.server.ports["s3"], every=0, **flags) as proxy:
        st = S3Storage(
            ServerConfig(name="pg1", storage_url=s3_bucket.url(), s3_endpoint_url=proxy.endpoint)
        )
        first, second = workdir / "first", workdir / "second"
        first.write_bytes(b"first copy")
        second.write_bytes(b"second copy")
        obj = st.put(PutRequest("000000010000000000000001", first, "none", False, 0.0, "aa" * 32))
        assert st.conditional_writes() is False
        proxy.requests.clear()
        st.put(PutRequest("000000010000000000000002", first, "none", False, 0.0, "aa" * 32))
        st.put(PutRequest("000000010000000000000003", first, "none", False, 0.0, "aa" * 32))
        assert [m for m, _ in proxy.requests] == ["GET", "PUT", "GET", "PUT"]
        assert all(_is_list(m, p) for m, p in proxy.requests if m == "GET")
        for codec in ("none", "gzip"):  # same key, and another extension
            with pytest.raises(AlreadyStoredError):
                st.put(PutRequest(obj.name, second, codec, False, 0.0, "bb" * 32))
        assert s3_bucket.get(obj.key) == b"first copy"
        assert len(s3_bucket.object_keys()) == 3


def test_a_foreign_object_under_another_extension_is_seen_on_the_cheap_path(
    s3_bucket: Bucket, workdir: Path
) -> None:
    """The directory LIST stands in for the per-WAL LIST: barman-cloud's X.gz blocks X.zst."""
    from walq.config import ServerConfig
    from walq.errors import AlreadyStoredError
    from walq.storage import PutRequest
    from walq.storage.s3 import S3Storage

    st = S3Storage(
        ServerConfig(name="pg1", storage_url=s3_bucket.url(), s3_endpoint_url=s3_bucket.endpoint)
    )
    name = "000000010000000000000003"
    foreign = st.key_for(name, "gzip", False)
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key=foreign, Body=b"gz")
    payload = workdir / "p"
    payload.write_bytes(b"zst")
    assert st.conditional_writes() is True
    with pytest.raises(AlreadyStoredError):
        st.put(PutRequest(name, payload, "zstd", False, 0.0, "cc" * 32))
    assert s3_bucket.object_keys() == [foreign]
