"""The restore spool's coordination files, shared by the prefetcher
(walq.restore.prefetch) and get-wal's spool hit (walq.restore.spool_hit), which
must stay cheap to import: only os, sys, time and fcntl here.

- ``.prefetch.lock``: held (flock) by the live prefetcher, with its pid inside;
- ``.prefetch.inflight``: the segments it is fetching now, one per line;
- ``.prefetch.end``: the last prefetcher stopped at the archive's end;
- ``.prefetch.log``: the prefetcher's stderr.
"""

# no `from __future__ import annotations`: one import fewer per restore_command call
import fcntl
import os
import sys
import time

LOCK_NAME = ".prefetch.lock"
INFLIGHT_NAME = ".prefetch.inflight"
END_NAME = ".prefetch.end"
LOG_NAME = ".prefetch.log"
MAX_PREFETCH = (
    256  # segments ahead: a window, a deque and a spool file each; beyond this only memory grows
)
POLL_SECONDS = (
    0.01  # how often the prefetcher looks for consumed files, and a waiting call for its file
)


def parse_prefetch(text: str) -> int:
    """``--prefetch N``: an integer from 0 (off) to MAX_PREFETCH; ValueError saying so otherwise."""
    value = text.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_PREFETCH:
        shown = repr(text) if len(text) <= 40 else f"{text[:40]!r}…({len(text)} characters)"
        raise ValueError(f"must be an integer from 0 to {MAX_PREFETCH} (got {shown})")
    return int(value)


def running_pid(spool: str | os.PathLike[str]) -> int | None:
    """The live prefetcher's pid (-1 if unreadable), or None when no process holds the lock."""
    try:
        fd = os.open(os.path.join(spool, LOCK_NAME), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isascii() and text.isdigit() else -1
        return None
    finally:
        os.close(fd)


def inflight(spool: str | os.PathLike[str]) -> set[str]:
    try:
        with open(os.path.join(spool, INFLIGHT_NAME)) as f:
            return set(f.read().split())
    except OSError:
        return set()


def wait_for_inflight(
    spool: str | os.PathLike[str], name: str, deadline_seconds: float = 120.0
) -> bool:
    """If the prefetcher is fetching ``name``, say so and wait until it lands.

    True once ``name`` is in the spool; False when it is not being fetched,
    the prefetcher died, or the deadline passed (the caller fetches it itself).
    """
    target = os.path.join(spool, name)
    deadline = time.monotonic() + deadline_seconds
    announced = False
    while time.monotonic() < deadline:
        if os.path.isfile(target):
            return True
        if name not in inflight(spool) or running_pid(spool) is None:
            return os.path.isfile(target)
        if not announced:
            print(f"walq: {name} is being prefetched; waiting for it", file=sys.stderr, flush=True)
            announced = True
        time.sleep(POLL_SECONDS)
    return False


def detach(spool: str | os.PathLike[str]) -> bool:
    """Double-fork a daemon: False in the caller (at once), True in the daemon.

    The daemon has its own session, stdin and stdout on /dev/null and stderr
    appended to the spool's log, so it never holds PostgreSQL's pipes.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return False
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(spool, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
    except BaseException:  # the intermediate child must never return into the caller's code
        os._exit(1)
    return True
