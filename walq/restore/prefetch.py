"""The restore prefetcher: one background process per server that keeps the next N
segments restored in ``{home}/restore-spool/SERVER/`` ahead of recovery.

PostgreSQL calls restore_command once per WAL and waits for each call, so a
restore is as fast as its slowest call. As in pgBackRest's async archive-get,
the first call that has to go to the archive forks a prefetcher; later calls find
their segment in the spool and are a rename (walq.restore.spool_hit), while the
prefetcher refills the spool in the background.

Coordination is through files in the spool (walq.restore.spool), so the spool hit
path needs no heavy imports. A call that arrives while its segment is in flight
waits for it instead of fetching it a second time; after the prefetcher reached
the end of the archive, a spool hit does not start another one just to find
nothing.

The prefetcher exits when the archive has no next segment, when nothing was
consumed for ``prefetch_idle_timeout`` seconds, or when the spool disappears.
A spool file is written like any restored WAL (verified against its catalog checksum, fsync, rename),
so a file there is always complete and correct.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from walq.archive.identity import known_segment_size
from walq.catalog import Catalog
from walq.config import Config, ServerConfig, load_config
from walq.errors import WalqError
from walq.fsutil import (
    OWNED_MARKER,
    is_owned,
    make_owned_dir,
    open_private,
    restore_spool_leftover,
    write_private,
)
from walq.restore.fetch import fetch_into, open_catalog_for_restore
from walq.restore.spool import (
    END_NAME,
    INFLIGHT_NAME,
    LOCK_NAME,
    MAX_PREFETCH,
    POLL_SECONDS,
    detach,
    parse_prefetch,
    running_pid,
)
from walq.storage import Storage, open_storage
from walq.wal import WalKind, next_segment, parse_wal_name

LOCK_WAIT_SECONDS = 10.0  # how long a new prefetcher waits for the one it replaces to exit
MAX_THREADS = 4
NICENESS = 10


def spool_dir(config: Config, server: ServerConfig) -> Path:
    return config.home / "restore-spool" / server.name


def stop(spool: Path) -> None:
    """Ask the running prefetcher to exit (recovery moved somewhere it did not plan for)."""
    pid = running_pid(spool)
    if pid and pid > 0 and pid != os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def start(
    config: Config,
    server: ServerConfig,
    after: str,
    count: int,
    storage: Storage | None = None,
    *,
    replace: bool = False,
) -> None:
    """Fork a detached prefetcher that restores the ``count`` segments after ``after``.

    The caller returns to PostgreSQL at once; the child reuses this process's
    imports and storage client, so it costs no start-up. ``replace`` stops a
    prefetcher that is working on segments recovery no longer wants.
    """
    if count <= 0 or parse_wal_name(after).kind is not WalKind.SEGMENT:
        return
    spool = spool_dir(config, server)
    try:
        make_owned_dir(spool, restore_spool_leftover)
    except OSError as exc:
        print(
            f"walq: warning: prefetch disabled, cannot create {spool}: {exc.strerror}",
            file=sys.stderr,
        )
        return
    except WalqError as exc:  # not walq's directory: never trimmed, so never prefetched into
        print(f"walq: warning: prefetch disabled: {exc}", file=sys.stderr)
        return
    if not replace and (spool / END_NAME).exists():
        return  # a spool hit after the prefetcher reached the archive's end: nothing more to get
    if running_pid(spool) is not None:
        if not replace:
            return
        stop(spool)
    (spool / END_NAME).unlink(missing_ok=True)
    if not detach(spool):
        return
    try:
        run(config, server, after, count, storage)
    except BaseException as exc:  # a daemon reports, it never returns into the CLI
        print(f"walq: prefetcher for {server.name} stopped: {exc}", file=sys.stderr)
        os._exit(1)
    os._exit(0)


def _acquire(spool: Path) -> int | None:
    fd = open_private(spool / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(POLL_SECONDS)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _publish(spool: Path, names: list[str]) -> None:
    tmp = spool / f"{INFLIGHT_NAME}.{os.getpid()}"
    write_private(tmp, "".join(f"{n}\n" for n in names))
    os.replace(tmp, spool / INFLIGHT_NAME)


def _remove_stale(spool: Path, keep: set[str]) -> None:
    """Drop segments recovery will not ask for, and temp files a killed prefetcher left
    (only in the spool walq created and marked, and only regular files)."""
    if not is_owned(spool):
        return
    for entry in os.scandir(spool):
        name = entry.name
        if name == OWNED_MARKER or not entry.is_file(follow_symlinks=False):
            continue
        stale_tmp = name.startswith(".") and ".walq-" in name
        stale_seg = not name.startswith(".") and name not in keep
        if stale_tmp or stale_seg:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def run(
    config: Config, server: ServerConfig, after: str, count: int, storage: Storage | None = None
) -> None:
    """The prefetcher's loop (in the forked or spawned process)."""
    count = min(count, MAX_PREFETCH)  # the CLI refuses more; the window's memory grows with it
    spool = make_owned_dir(spool_dir(config, server), restore_spool_leftover)
    lock_fd = _acquire(spool)
    if lock_fd is None:
        return
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # recovery's own calls come first; prefetching fills the gaps
    catalog = open_catalog_for_restore(config)
    try:
        seg_size = known_segment_size(catalog, server) if catalog else None
        if catalog is None or not seg_size:
            return
        window: list[str] = []
        cursor = after
        for _ in range(count):
            cursor = next_segment(cursor, seg_size)
            window.append(cursor)
        _publish(spool, [n for n in window if not (spool / n).is_file()])
        _remove_stale(spool, set(window))
        if storage is None:
            storage = open_storage(server)
        _loop(config, server, catalog, storage, spool, after, count, seg_size)
    finally:
        (spool / INFLIGHT_NAME).unlink(missing_ok=True)
        if catalog is not None:
            catalog.close()
        os.close(lock_fd)


def _loop(
    config: Config,
    server: ServerConfig,
    catalog: Catalog,
    storage: Storage,
    spool: Path,
    after: str,
    count: int,
    seg_size: int,
) -> None:
    planned: deque[str] = deque()  # fetched or in flight, not yet taken by recovery
    running: dict[Future[str], str] = {}
    cursor = after
    last_progress = time.monotonic()
    at_end: str | None = None
    failed = False
    with ThreadPoolExecutor(max_workers=min(count, MAX_THREADS)) as pool:
        while spool.is_dir():
            busy = set(running.values())
            while planned and planned[0] not in busy and not (spool / planned[0]).is_file():
                planned.popleft()  # recovery took it (or its fetch failed: that call fetches it itself)
                last_progress = time.monotonic()
            submitted = False
            while at_end is None and not failed and len(planned) < count:
                cursor = next_segment(cursor, seg_size)
                planned.append(cursor)
                if not (spool / cursor).is_file():
                    record = catalog.get(server.name, cursor)
                    running[pool.submit(fetch_into, storage, server, record, cursor, spool)] = (
                        cursor
                    )
                    submitted = True
            if submitted:
                _publish(spool, list(running.values()))
            if running:
                done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    outcome = fut.result()
                    if outcome == "absent" and (at_end is None or name < at_end):
                        at_end = name
                    elif outcome == "failed":
                        failed = True  # storage or data trouble: the calls themselves report it
                    else:
                        last_progress = time.monotonic()
                if done:
                    _publish(spool, list(running.values()))
                continue
            if at_end is not None:
                write_private(spool / END_NAME, f"{at_end}\n")
                return
            if failed:
                return
            if time.monotonic() - last_progress > config.prefetch_idle_timeout:
                return
            time.sleep(POLL_SECONDS)


def prefetch_count(text: str) -> int:
    """argparse type for a prefetch count (walq.restore.spool.parse_prefetch's bounds)."""
    try:
        return parse_prefetch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m walq.restore.prefetch [--config FILE] SERVER AFTER COUNT``: started by a spool hit."""
    ap = argparse.ArgumentParser(prog="walq-prefetch")
    ap.add_argument("--config")
    ap.add_argument("server")
    ap.add_argument("after")
    ap.add_argument("count", type=prefetch_count)
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
        run(config, config.server(args.server), args.after, args.count)
    except WalqError as exc:
        print(f"walq: prefetcher for {args.server} stopped: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
