"""Per-server writer locks with fencing tokens.

Embedded mode uses an flock on ``{home}/.{server}-archive-wal.lock`` (Barman's
own lock name, so walq and Barman on one host never interleave). Every
acquisition yields a token that only grows; the catalog refuses a commit whose
token is older than the newest it has seen (invariant 3). The fleet's Redis
lock implements the same ServerLock protocol.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Protocol

from walq.errors import LockBusyError
from walq.fsutil import makedirs_durable, open_private, write_private


class ServerLock(Protocol):
    token: int | None

    def acquire(self) -> int:
        """Take the lock or raise LockBusyError; return the fencing token."""
        ...

    def extend(self) -> None:
        """Keep a held lock alive (no-op where locks do not expire)."""
        ...

    def release(self) -> None: ...

    def __enter__(self) -> int: ...

    def __exit__(self, *exc: object) -> None: ...


class FileLock:
    """Non-blocking flock; the token is a counter kept beside the lock file."""

    def __init__(self, home: Path, server: str, purpose: str = "archive-wal") -> None:
        self.path = Path(home) / f".{server}-{purpose}.lock"
        self.counter = Path(home) / f".{server}-{purpose}.fence"
        self.token: int | None = None
        self._fd: int | None = None

    def acquire(self) -> int:
        makedirs_durable(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusyError(f"{self.path} is held by another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        self.token = self._next_token()
        return self.token

    def _next_token(self) -> int:
        try:
            current = int(self.counter.read_text() or 0)
        except (FileNotFoundError, ValueError):
            current = 0
        tmp = self.counter.with_suffix(".tmp")
        write_private(tmp, str(current + 1))
        os.replace(tmp, self.counter)
        return current + 1

    def extend(self) -> None:
        return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class LockLostError(LockBusyError):
    """A held Redis lock expired or was taken over; the holder must stop writing."""


# KEYS[1] lock, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] ttl ms.
# The token is max(last + 1, Redis TIME in microseconds): it keeps growing when
# Redis restarts empty (no persistence) because time has moved on meanwhile.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local nxt = math.max(last + 1, now)
local token = string.format('%.0f', nxt)
redis.call('SET', KEYS[2], token)
return token
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    """A per-server Redis lock with a TTL, kept alive by a thread while held.

    Every acquisition returns a fencing token that only grows (also across a
    Redis restart, see _ACQUIRE); the catalog refuses commits carrying a token
    older than the newest it has seen. A holder frozen past the TTL (SIGSTOP,
    GC pause, network partition) loses the lock; its late commit is refused.
    """

    def __init__(self, client, server: str, purpose: str = "commit", ttl: float = 60.0) -> None:  # noqa: ANN001 - redis.Redis
        from walq import keys

        self.client = client
        self.key = keys.lock(server, purpose)
        self.fence_key = keys.fence(server, purpose)
        self.ttl_ms = max(1, int(ttl * 1000))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.token: int | None = None
        self.lost = False
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def acquire(self) -> int:
        token = self.client.eval(_ACQUIRE, 2, self.key, self.fence_key, self.owner, self.ttl_ms)
        if token is None:
            raise LockBusyError(f"{self.key} is held by {self.holder() or 'another worker'}")
        self.token = int(token)
        self.lost = False
        self._stop.clear()
        self._keeper = threading.Thread(target=self._keep_alive, name=f"keep {self.key}", daemon=True)
        self._keeper.start()
        return self.token

    def acquire_within(self, seconds: float) -> int:
        """Poll for the lock until ``seconds`` pass (commits are short: waiting beats requeueing)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self.acquire()
            except LockBusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02 + random.random() * 0.08)

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self.extend()
            except LockLostError:
                return
            except Exception:  # noqa: BLE001 - Redis unreachable: the next tick tries again
                continue

    def extend(self) -> None:
        """Push the TTL forward; raise LockLostError if the lock is no longer ours."""
        if self.token is None:
            raise LockLostError(f"{self.key} is not held")
        if not self.client.eval(_EXTEND, 1, self.key, self.owner, self.ttl_ms):
            self.lost = True
            raise LockLostError(f"{self.key} expired or was taken over (token {self.token})")

    def release(self) -> None:
        self._stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=5)
        self._keeper = None
        if self.token is not None:
            try:
                self.client.eval(_RELEASE, 1, self.key, self.owner)
            finally:
                self.token = None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_lock(config, server: str, purpose: str = "commit", client=None) -> ServerLock:  # noqa: ANN001
    """The fleet's Redis lock when a lock/broker URL is configured, else the file lock."""
    url = config.effective_lock_url
    if not url:
        return FileLock(config.home, server, purpose)
    if client is None:
        import redis

        client = redis.Redis.from_url(url)
    return RedisLock(client, server, purpose, config.lock_ttl)
