"""S3 faults: nothing is lost, everything is archived once the store is back.

- The real SeaweedFS server is killed in the middle of a batch and started
  again on the same ports and data: the first run leaves the rest in place,
  the next run archives everything (adopting an object whose upload succeeded
  but whose answer was lost).
- 503 and 500 answers on every third request (a loopback proxy, because a
  real server cannot fail on demand): botocore's retries absorb them.
- Wrong credentials, a missing bucket: a clear error without secrets, walq
  check fails, and no source file is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from tests.services.homes import WalqHome
from tests.services.pg import wait_for
from tests.services.s3 import (
    SECRET_KEY,
    Bucket,
    FaultProxy,
    SeaweedS3,
    s3_settings,
    set_aws_env,
)
from tests.services.scratch import fresh_dir
from walq.catalog import WalState, open_catalog
from walq.wal import parse_wal_name


def catalog_state(home: WalqHome) -> dict[str, WalState]:
    catalog = open_catalog(home.config)
    try:
        return {r.name: r.state for r in catalog.records("pg1")}
    finally:
        catalog.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_all_archived_and_exact(home: WalqHome, names: list[str], corpus, workdir: Path) -> None:
    assert list(home.incoming().iterdir()) == []
    assert list(home.errors().iterdir()) == []
    state = catalog_state(home)
    assert all(state.get(n) is WalState.ARCHIVED for n in names), state
    res = home.run("verify", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr
    for name in names:
        out = workdir / f"back-{name}"
        assert home.run("get-wal", "pg1", name, str(out)).returncode == 0
        assert sha(out) == sha(corpus.path(name))


@pytest.fixture
def own_s3(monkeypatch: pytest.MonkeyPatch):
    """A private SeaweedFS this test may kill and restart."""
    root = fresh_dir("s3own")
    server = SeaweedS3(root)
    try:
        server.start()
        set_aws_env(monkeypatch)
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_s3_killed_mid_batch_then_restarted(
    own_s3: SeaweedS3, make_home, wal_corpus, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = Bucket(own_s3, f"walq-{uuid.uuid4().hex[:12]}")
    own_s3.client().create_bucket(Bucket=bucket.name)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail fast while the server is down
    home = make_home(
        {"pg1": s3_settings(bucket, compression="xz", compression_level=6)}, archive_workers=1
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:10])

    proc = home.start("archive", capture=True)
    try:
        wait_for(
            lambda: proc.poll() is not None or bool(bucket.object_keys()), 120, "the first upload"
        )
        # Freeze walq so the server dies while the batch is surely unfinished.
        os.killpg(proc.pid, signal.SIGSTOP)
        own_s3.kill()
        os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "cannot reach the S3 endpoint" in out + err
    state = catalog_state(home)
    left = sorted(p.name for p in home.incoming().iterdir())
    assert left, "the kill should have left part of the batch in incoming/"
    for name in names:  # nothing lost: archived, or still waiting in incoming/
        assert state.get(name) is WalState.ARCHIVED or name in left, name
    assert list(home.errors().iterdir()) == []

    own_s3.start()
    res = home.run("archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert_all_archived_and_exact(home, names, wal_corpus, workdir)
    assert len(bucket.object_keys()) == len(names)


@pytest.mark.parametrize("status", [503, 500])
def test_injected_server_errors_are_retried(
    status: int, s3_bucket: Bucket, make_home, wal_corpus, workdir: Path
) -> None:
    with FaultProxy(s3_bucket.server.ports["s3"], every=3, status=status) as proxy:
        home = make_home(
            {"pg1": s3_settings(s3_bucket, endpoint=proxy.endpoint, compression="zstd")},
            archive_workers=1,
        )
        names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:6])
        res = home.run("archive")
        assert res.returncode == 0, res.stdout + res.stderr
        assert proxy.injected >= 3
        assert_all_archived_and_exact(home, names, wal_corpus, workdir)
    assert len(s3_bucket.object_keys()) == len(names)


def _assert_refused_cleanly(home: WalqHome, names: list[str], expect: str) -> None:
    res = home.run("archive")
    assert res.returncode == 1
    text = res.stdout + res.stderr
    assert expect in text, text
    assert SECRET_KEY not in text and "wrong-secret" not in text
    assert sorted(p.name for p in home.incoming().iterdir()) == names  # nothing removed
    assert list(home.errors().iterdir()) == []
    assert not any(s is WalState.ARCHIVED for s in catalog_state(home).values())
    check = home.run("check", "pg1")
    assert check.returncode == 1
    assert "pg1: storage: FAILED" in check.stdout and expect in check.stdout
    assert (
        SECRET_KEY not in check.stdout + check.stderr
        and "wrong-secret" not in check.stdout + check.stderr
    )


def test_wrong_credentials(
    s3_bucket: Bucket, make_home, wal_corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    home = make_home({"pg1": s3_settings(s3_bucket, compression="zstd")}, archive_workers=1)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    _assert_refused_cleanly(home, names, "credentials were refused")
    assert s3_bucket.object_keys() == []


def test_missing_bucket(
    s3_server: SeaweedS3, make_home, wal_corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_aws_env(monkeypatch)
    missing = Bucket(s3_server, f"walq-missing-{uuid.uuid4().hex[:8]}")
    home = make_home({"pg1": s3_settings(missing, compression="zstd")}, archive_workers=1)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    _assert_refused_cleanly(home, names, "NoSuchBucket")
    assert missing.name not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


def test_no_credentials_at_all(
    s3_bucket: Bucket, make_home, wal_corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    home = make_home({"pg1": s3_settings(s3_bucket, compression="zstd")}, archive_workers=1)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    _assert_refused_cleanly(home, names, "no usable AWS credentials")


def test_check_passes_on_a_healthy_bucket(s3_bucket: Bucket, make_home) -> None:
    home = make_home({"pg1": s3_settings(s3_bucket)})
    res = home.run("check", "pg1")
    assert "pg1: storage: OK" in res.stdout, res.stdout + res.stderr
    assert s3_bucket.object_keys() == []  # the write probe is removed


def test_storage_keys_follow_hash_dirs(s3_bucket: Bucket) -> None:
    """Key layout for every kind of WAL file (barman-cloud's, wal-reference 4.1)."""
    from walq.config import ServerConfig
    from walq.storage.s3 import S3Storage

    st = S3Storage(
        ServerConfig(
            name="pg1", storage_url=f"s3://{s3_bucket.name}", s3_endpoint_url=s3_bucket.endpoint
        )
    )
    seg = "000000010000000000000008"
    assert st.key_for(seg, "zstd", False) == f"pg1/wals/{parse_wal_name(seg).hash_dir}/{seg}.zst"
    assert (
        st.key_for("00000001000000000000001F.partial", "lz4", False)
        == "pg1/wals/0000000100000000/00000001000000000000001F.partial.lz4"
    )
    assert (
        st.key_for("00000001000000000000000A.00000028.backup", "xz", False)
        == "pg1/wals/0000000100000000/00000001000000000000000A.00000028.backup.xz"
    )
    assert st.key_for("00000002.history", "snappy", True) == "pg1/wals/00000002.history.snappy.gpg"
    assert st.key_for(seg, "none", False) == f"pg1/wals/0000000100000000/{seg}"


def test_server_without_conditional_writes_falls_back_to_list_check(
    s3_bucket: Bucket, workdir: Path
) -> None:
    """A server answering 501 to If-None-Match: walq LISTs for the WAL and never overwrites."""
    from walq.config import ServerConfig
    from walq.errors import AlreadyStoredError
    from walq.storage import PutRequest
    from walq.storage.s3 import S3Storage

    with FaultProxy(s3_bucket.server.ports["s3"], every=0, refuse_conditional=True) as proxy:
        st = S3Storage(
            ServerConfig(name="pg1", storage_url=s3_bucket.url(), s3_endpoint_url=proxy.endpoint)
        )
        name = "000000010000000000000001"
        first = workdir / "first"
        first.write_bytes(b"first copy")
        obj = st.put(PutRequest(name, first, "none", False, 0.0, "aa" * 32))
        assert proxy.injected == 1
        second = workdir / "second"
        second.write_bytes(b"second copy")
        with pytest.raises(AlreadyStoredError):
            st.put(PutRequest(name, second, "gzip", False, 0.0, "bb" * 32))
        assert s3_bucket.object_keys() == [obj.key]
        assert s3_bucket.get(obj.key) == b"first copy"


def test_one_client_per_process_reused_and_reset_after_fork(s3_bucket: Bucket) -> None:
    from walq.config import ServerConfig
    from walq.storage.s3 import S3Storage, reset_clients

    cfg = ServerConfig(name="pg1", storage_url=s3_bucket.url(), s3_endpoint_url=s3_bucket.endpoint)
    a, b = S3Storage(cfg), S3Storage(cfg.model_copy(update={"name": "pg2"}))
    old = a.client
    assert old is b.client
    reset_clients()
    assert S3Storage(cfg).client is not old


def test_check_writes_its_probe_with_the_sse_settings(s3_bucket: Bucket, make_home) -> None:
    """A bucket policy may demand SSE; check's probe carries it (and so tries a KMS key too)."""
    home = make_home({"pg1": s3_settings(s3_bucket, s3_sse="AES256")})
    assert "pg1: storage: OK" in home.run("check", "pg1").stdout
    home = make_home(
        {"pg1": s3_settings(s3_bucket, s3_sse="aws:kms", s3_sse_kms_key_id="alias/none")}
    )
    res = home.run("check", "pg1")  # SeaweedFS here has no KMS: the probe is refused
    assert res.returncode == 1 and "pg1: storage: FAILED (S3 write probe" in res.stdout, res.stdout
