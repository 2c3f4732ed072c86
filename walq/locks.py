"""Per-server writer locks with fencing tokens.

Embedded mode uses an flock on ``{home}/.{server}-archive-wal.lock`` (Barman's
own lock name, so walq and Barman on one host never interleave). Every
acquisition yields a token that only grows; the catalog refuses a commit whose
token is older than the newest it has seen (invariant 3). The fleet's Redis
lock implements the same ServerLock protocol.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from walq.errors import LockBusyError, LockHeldError, LockLostError
from walq.fsutil import makedirs_durable, open_private, write_private
from walq.proclife import is_running, proc_start

if TYPE_CHECKING:  # annotations only: importing locks loads neither redis nor pydantic
    import redis

    from walq.config import Config


class ServerLock(Protocol):
    """What every server lock does (FileLock, RedisLock): callers never ask which one."""

    token: int | None

    def acquire(self) -> int:
        """Take the lock or raise LockBusyError; return the fencing token."""
        ...

    def acquire_within(self, seconds: float) -> int:
        """Take the lock, waiting up to ``seconds`` where the lock can wait (a file lock
        does not: it tries once); LockBusyError if still busy."""
        ...

    def extend(self) -> None:
        """Keep a held lock alive (no-op where locks do not expire)."""
        ...

    def progress(self) -> None:
        """Record that the holder moved forward (no-op where nobody reads it)."""
        ...

    def release(self) -> None: ...

    def __enter__(self) -> int: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class FileLock:
    """Non-blocking flock; the token is a counter kept beside the lock file.

    The lock file names its holder: the pid on the first line (what Barman
    reads), then a JSON line with the pid's start time (so a reused pid is not
    mistaken for the holder), when it took the lock and what it runs. The file's
    mtime is the holder's last progress (see progress()). The descriptor is
    close-on-exec; a child forked without exec would share the flock, so walq
    never forks while holding one (the archive pool uses spawn).
    """

    def __init__(
        self,
        home: Path,
        server: str,
        purpose: str = "archive-wal",
        explain_after: float | None = None,
    ) -> None:
        self.path = Path(home) / f".{server}-{purpose}.lock"
        self.explain_after = (
            explain_after  # when set, a busy lock raises LockHeldError naming its holder
        )
        self.counter = Path(home) / f".{server}-{purpose}.fence"
        self.purpose = purpose
        self.token: int | None = None
        self._fd: int | None = None
        self._owner_pid: int | None = None

    def acquire(self) -> int:
        makedirs_durable(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusyError(f"{self.path} is held by another process") from None
        self._record_holder(fd)
        self._fd = fd
        self._owner_pid = os.getpid()
        self.token = self._next_token()
        return self.token

    def acquire_within(self, seconds: float) -> int:
        """Try once (a flock never waits here); with ``explain_after``, a busy lock raises
        LockHeldError naming its holder and whether it progressed within that many seconds."""
        if self.explain_after is None:
            return self.acquire()
        return acquire_or_explain(self, self.explain_after)

    def _record_holder(self, fd: int) -> None:
        pid = os.getpid()
        record = {
            "pid": pid,
            "pid_start": proc_start(pid),
            "since": time.time(),
            "command": self.purpose,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n{json.dumps(record)}\n".encode(), 0)

    def progress(self) -> None:
        """Record that the holder moved forward (the lock file's mtime); a skipped run and
        ``walq check`` tell a working holder from a stuck one by it."""
        if self._fd is not None and self._owner_pid == os.getpid():
            os.utime(self._fd)

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
        """Unlock and close; in a forked child only close: the flock is shared with the
        parent that took it, and LOCK_UN here would free it under the parent."""
        if self._fd is not None:
            if self._owner_pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a busy file lock, and whether that should silence a run that wants it."""

    path: Path
    pid: int | None  # as recorded in the lock file; None if unreadable
    since: float | None
    idle: float  # seconds since the holder last recorded progress
    recorded_alive: bool  # the recorded pid runs and is the process that recorded itself
    open_by: tuple[int, ...]  # processes that have the lock file open now (best effort)
    stall_after: float

    @property
    def healthy(self) -> bool:
        """A live holder that progressed within ``stall_after``: skipping is right."""
        return self.recorded_alive and self.idle <= self.stall_after

    def describe(self) -> str:
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
            if self.since
            else "an unknown time"
        )
        who = f"pid {self.pid}" if self.pid else "an unrecorded process"
        if not self.recorded_alive:
            others = ", ".join(str(p) for p in self.open_by if p != os.getpid()) or "unknown"
            return (
                f"{self.path} is held by a process that is not a live walq archive: the recorded holder "
                f"({who}, since {when}) is gone; processes with the file open: {others}"
            )
        text = f"held by {who} since {when}"
        if self.idle > self.stall_after:
            return f"{text}, no progress for {self.idle:.0f}s, over claim_timeout = {self.stall_after:g}s"
        return f"{text}, last progress {self.idle:.0f}s ago"


def _read_holder(path: Path) -> tuple[int | None, str | None, float | None]:
    try:
        text = path.read_text()
    except OSError:
        return None, None, None
    first, _, rest = text.partition("\n")
    try:
        pid: int | None = int(first)
    except ValueError:
        pid = None
    try:
        record = json.loads(rest) if rest.strip() else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict) or record.get("pid") not in (None, pid):
        record = {}
    start = record.get("pid_start")
    since = record.get("since")
    return (
        pid,
        start if isinstance(start, str) else None,
        since if isinstance(since, int | float) else None,
    )


def _open_by(path: Path) -> tuple[int, ...]:
    """Pids that have ``path`` open (those /proc lets us see): an flock's possible holders."""
    try:
        target = os.stat(path)
    except OSError:
        return ()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    st = os.stat(fd.path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    found.append(int(entry))
                    break
    return tuple(found)


def inspect_holder(path: Path, stall_after: float) -> LockHolder:
    """Describe the holder recorded in a busy lock file."""
    pid, start, since = _read_holder(path)
    try:
        idle = max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        idle = 0.0
    alive = pid is not None and is_running(pid, start)
    return LockHolder(path, pid, since, idle, alive, () if alive else _open_by(path), stall_after)


def is_locked(path: Path) -> bool:
    """Whether a process holds the flock on ``path``, probed without keeping it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def acquire_or_explain(lock: FileLock, stall_after: float) -> int:
    """Take ``lock``, or raise LockHeldError naming its holder and whether it is healthy."""
    try:
        return lock.acquire()
    except LockBusyError:
        holder = busy_holder(lock, stall_after)
        if holder is not None:
            raise LockHeldError(holder) from None
    try:
        return lock.acquire()  # it was freed while we looked
    except LockBusyError:
        raise LockHeldError(inspect_holder(lock.path, stall_after)) from None


def busy_holder(
    lock: FileLock, stall_after: float, settle_seconds: float = 2.0
) -> LockHolder | None:
    """After acquire() found ``lock`` busy: its holder, or None if it got free meanwhile.

    A healthy holder is returned at once. Anything else is looked at again for
    up to ``settle_seconds``: a holder that is still writing its record, or a
    ``walq check`` probing the lock for a moment, is not a stale lock.
    """
    deadline = time.monotonic() + settle_seconds
    while True:
        holder = inspect_holder(lock.path, stall_after)
        if holder.healthy or time.monotonic() >= deadline:
            return holder
        if not is_locked(lock.path):
            return None
        time.sleep(0.05)


# KEYS[1] lock, KEYS[2] fence counter, KEYS[3] waiters flag; ARGV[1] owner, ARGV[2] ttl ms.
# The token is max(last + 1, Redis TIME in microseconds): it keeps growing when
# Redis restarts empty (no persistence) because time has moved on meanwhile.
# A busy lock sets the waiters flag (for one TTL), so release knows to wake a waiter.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) end
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
# KEYS[1] lock, KEYS[2] waiters flag, KEYS[3] wake-up list; ARGV[1] owner, ARGV[2] ttl ms.
# Only while someone waits does a release push a wake-up (one, kept at most one deep).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('RPUSH', KEYS[3], '1')
    redis.call('LTRIM', KEYS[3], -1, -1)
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
  return 1
end
return 0
"""
MAX_BLOCK = 5.0  # seconds one BLPOP waits for a wake-up (well under the client's socket timeout)
_scripts: weakref.WeakKeyDictionary[Any, tuple[Any, Any, Any]] = weakref.WeakKeyDictionary()


def _lock_scripts(client: redis.Redis) -> tuple[Any, Any, Any]:
    """The lock's Lua scripts, registered once per client: EVALSHA, never the script text."""
    found = _scripts.get(client)
    if found is None:
        acquire, extend, release = (
            client.register_script(t) for t in (_ACQUIRE, _EXTEND, _RELEASE)
        )
        found = _scripts[client] = (acquire, extend, release)
    return found


class RedisLock:
    """A per-server Redis lock with a TTL, kept alive by a thread while held.

    The owner id names the acquiring process; a forked child that inherited
    the object neither extends nor releases the parent's lock (the keeper
    thread does not cross a fork either). Every acquisition returns a fencing token that only grows (also across a
    Redis restart, see _ACQUIRE); the catalog refuses commits carrying a token
    older than the newest it has seen. A holder frozen past the TTL (SIGSTOP,
    GC pause, network partition) loses the lock; its late commit is refused.
    A waiter blocks on a wake-up list (BLPOP) that a release pushes to, not in a
    sleep loop; a holder that dies wakes nobody, so a wait never blocks past the TTL.
    """

    def __init__(
        self, client: redis.Redis, server: str, purpose: str = "commit", ttl: float = 60.0
    ) -> None:
        from walq import keys

        self.client = client
        self.key = keys.lock(server, purpose)
        self.fence_key = keys.fence(server, purpose)
        self.waiters_key = keys.lock_waiters(server, purpose)
        self.wake_key = keys.lock_wakeup(server, purpose)
        self.ttl_ms = max(1, int(ttl * 1000))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.token: int | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._acquire, self._extend, self._release = _lock_scripts(client)

    def acquire(self) -> int:
        return self._try(wait=False)

    def _try(self, *, wait: bool) -> int:
        token = self._acquire(
            keys=[self.key, self.fence_key, self.waiters_key],
            args=[self.owner, self.ttl_ms, "1" if wait else "0"],
        )
        if token is None:
            raise LockBusyError(f"{self.key} is held by {self.holder() or 'another worker'}")
        self.token = int(token)
        self._owner_pid = os.getpid()
        self._stop.clear()
        self._keeper = threading.Thread(
            target=self._keep_alive, name=f"keep {self.key}", daemon=True
        )
        self._keeper.start()
        return self.token

    def acquire_within(self, seconds: float) -> int:
        """Wait up to ``seconds`` for the lock (commits are short: waiting beats requeueing),
        woken by the holder's release; a holder that died frees it at its TTL."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self._try(wait=True)
            except LockBusyError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                block = min(left, MAX_BLOCK, self.ttl_ms / 1000)
                self.client.blpop([self.wake_key], timeout=max(block, 0.01))

    def progress(self) -> None:
        """Nothing to record: the keeper thread's renewals are this lock's sign of life."""

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self.extend()
            except LockLostError:
                return
            except Exception:  # Redis unreachable: the next tick tries again
                continue

    def extend(self) -> None:
        """Push the TTL forward; raise LockLostError if the lock is no longer ours."""
        if self.token is None or self._owner_pid != os.getpid():
            raise LockLostError(f"{self.key} is not held by this process")
        if not self._extend(keys=[self.key], args=[self.owner, self.ttl_ms]):
            raise LockLostError(f"{self.key} expired or was taken over (token {self.token})")

    def release(self) -> None:
        self._stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=5)
        self._keeper = None
        if (
            self._owner_pid != os.getpid()
        ):  # a forked copy: the lock (and its owner id) is the parent's
            self.token = None
        if self.token is not None:
            try:
                self._release(
                    keys=[self.key, self.waiters_key, self.wake_key], args=[self.owner, self.ttl_ms]
                )
            finally:
                self.token = None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_lock(
    config: Config, server: str, purpose: str = "commit", client: redis.Redis | None = None
) -> ServerLock:
    """The fleet's Redis lock when a lock/broker URL is configured, else the file lock."""
    url = config.effective_lock_url
    if not url:
        return FileLock(config.home, server, purpose)
    if client is None:
        import redis

        client = redis.Redis.from_url(url)
    return RedisLock(client, server, purpose, config.lock_ttl)
