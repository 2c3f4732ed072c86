"""The fenced Redis lock (real Redis) and the file lock behind one protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.fleet import RedisServer
from tests.services.pg import wait_for
from walq import keys
from walq.errors import LockBusyError
from walq.locks import FileLock, LockLostError, RedisLock


def test_file_lock_tokens_grow(tmp_path: Path) -> None:
    a, b = FileLock(tmp_path, "pg1"), FileLock(tmp_path, "pg1")
    t1 = a.acquire()
    with pytest.raises(LockBusyError):
        b.acquire()
    a.release()
    assert b.acquire() > t1
    b.release()


def test_redis_lock_exclusive_and_tokens_grow(redis_server: RedisServer) -> None:
    client = redis_server.client()
    a, b = RedisLock(client, "pg1", ttl=30), RedisLock(client, "pg1", ttl=30)
    t1 = a.acquire()
    with pytest.raises(LockBusyError, match="held by"):
        b.acquire()
    assert RedisLock(client, "pg2", ttl=30).acquire() > 0, "locks are per server"
    a.release()
    t2 = b.acquire()
    assert t2 > t1
    b.release()
    assert client.get(keys.lock("pg1", "commit")) is None


def test_redis_lock_is_extended_while_held(redis_server: RedisServer) -> None:
    client = redis_server.client()
    lock = RedisLock(client, "pg1", ttl=0.6)
    lock.acquire()
    key = keys.lock("pg1", "commit")
    # The keeper thread must refresh the TTL several times over two lifetimes.
    refreshed = []
    wait_for(
        lambda: refreshed.append(client.pttl(key)) or len(refreshed) > 40 and client.exists(key),
        10,
        "the lock to survive past its TTL",
    )
    assert client.get(key).decode() == lock.owner
    lock.release()


def test_expired_holder_loses_and_new_token_is_newer(redis_server: RedisServer) -> None:
    client = redis_server.client()
    stale = RedisLock(client, "pg1", ttl=0.3)
    t1 = stale.acquire()
    stale._stop.set()  # simulate a frozen holder: no more extensions
    fresh = RedisLock(client, "pg1", ttl=30)
    t2 = wait_for(lambda: _try(fresh), 10, "the stale lock to expire")
    assert t2 > t1
    with pytest.raises(LockLostError):
        stale.extend()
    stale.release()  # releasing a lost lock must not delete the new holder's key
    assert client.get(keys.lock("pg1", "commit")).decode() == fresh.owner
    fresh.release()


def test_tokens_keep_growing_across_redis_restart(redis_server: RedisServer) -> None:
    lock = RedisLock(redis_server.client(), "pg1", ttl=30)
    before = lock.acquire()
    lock.release()
    redis_server.restart()  # no persistence: the fence counter is gone
    assert redis_server.client().get(keys.fence("pg1", "commit")) is None
    after = RedisLock(redis_server.client(), "pg1", ttl=30).acquire()
    assert after > before


def _try(lock: RedisLock) -> int | None:
    try:
        return lock.acquire()
    except LockBusyError:
        return None


def test_walq_archive_with_a_fleet_config_takes_the_fenced_commit_lock(
    make_home, wal_corpus, redis_server: RedisServer
) -> None:
    """A manual `walq archive` in a fleet setup must not interleave with Celery commits."""
    import redis as redis_lib

    from walq.archive.embedded import writer_lock

    home = make_home({"pg1": {}}, lock_url=redis_server.url, lock_ttl=2)
    lock = writer_lock(home.config, "pg1")
    assert isinstance(lock, RedisLock)
    holder = RedisLock(redis_lib.Redis.from_url(redis_server.url), "pg1", "commit", ttl=60)
    holder.acquire()
    try:
        wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
        res = home.run("archive", timeout=120)
        assert "holds the lock; skipped" in res.stdout  # waited, then gave way to the fleet
        assert (home.incoming() / wal_corpus.segments[0]).exists()
    finally:
        holder.release()
    res = home.run("archive", check=True)
    assert "1 archived" in res.stdout
