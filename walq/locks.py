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
from pathlib import Path
from types import TracebackType
from typing import Protocol

from walq.errors import LockBusyError


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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
        tmp.write_text(str(current + 1))
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
