"""Embedded mode: archive everything pending for some servers, now, in-process.

CPU work (validate, checksum, compress) fans out over a process pool created
once per run; store and commit stay in this process, in WAL order, under the
server's file lock, so commits are single-writer and xlogdb lines stay sorted.
At most ``2 x workers`` WALs are in flight, which bounds spool usage.

The pool's workers are spawned (fork + exec), not forked: a forked worker
would share the flock taken after it started and keep it after a kill -9 of
this process; a spawned one inherits no descriptor. Each also asks the kernel
to SIGKILL it when this process dies, so none outlives a killed run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from walq.catalog import Catalog, WalState, open_catalog
from walq.config import Config, ServerConfig
from walq.errors import (
    ConfigError,
    DuplicateWalError,
    InvalidWalError,
    LockBusyError,
    PermanentError,
    TransientError,
)
from walq.fsutil import (
    NotOwnedError,
    incoming_mode,
    make_owned_dir,
    makedirs_durable,
    remove_owned_tree,
    set_group_access,
    spool_leftover,
)
from walq.locks import (
    FileLock,
    LockHeldError,
    LockHolder,
    RedisLock,
    ServerLock,
    acquire_or_explain,
    open_lock,
)
from walq.pipeline import (
    Outcome,
    Prepared,
    PrepareJob,
    check_identity,
    commit,
    encrypt,
    handle_already_archived,
    prepare,
    reject,
    store,
)
from walq.proclife import die_with_parent
from walq.scan import Candidate, scan
from walq.storage import Storage, open_storage

Reporter = Callable[[str, Outcome, int, int], None]


@dataclass
class ServerRun:
    server: str
    outcomes: list[Outcome] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: bool = False
    holder: LockHolder | None = None  # who held the file lock when busy

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def stuck(self) -> bool:
        """Skipped for a lock whose holder is not a live, progressing walq archive."""
        return self.holder is not None and not self.holder.healthy

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unknown and not self.stuck


def writer_lock(config: Config, server: str) -> ServerLock:
    """Barman's archive-wal file lock; with a fleet lock URL, the fleet's fenced commit
    lock instead, so a manual `walq archive` never interleaves with Celery commits."""
    if config.effective_lock_url:
        return open_lock(config, server, "commit")
    return FileLock(config.home, server)


def ensure_server_dirs(config: Config, server: ServerConfig) -> None:
    """Create the directories a server needs; a failure names the config key."""
    wanted = {
        "incoming_dir": server.incoming_dir,
        "streaming_dir": server.streaming_dir,
        "errors_dir": server.errors_dir,
        "spool_dir": config.spool_dir,
    }
    if server.local_wals_dir is not None:
        wanted["storage_url"] = server.local_wals_dir
    for key, path in wanted.items():
        try:
            makedirs_durable(path, incoming_mode() if key == "incoming_dir" else None)  # type: ignore[arg-type]
        except OSError as exc:
            raise ConfigError(f"servers.{server.name}.{key}: cannot create {path}: {exc.strerror}") from None


def reset_spool(spool: Path) -> None:
    """Empty the server's spool (payloads of a killed run): only a directory walq created
    and marked as its own is ever removed; anything else stops the run, untouched."""
    make_owned_dir(spool, spool_leftover)  # adopts an earlier walq's unmarked spool, refuses others
    if not remove_owned_tree(spool):
        raise NotOwnedError(f"spool_dir: cannot empty {spool}")
    make_owned_dir(spool)


def prepare_job(config: Config, server: ServerConfig, catalog: Catalog, wal: Candidate) -> PrepareJob:
    sysid = server.system_identifier or int(catalog.get_meta(server.name, "system_identifier") or 0)
    seg = int(catalog.get_meta(server.name, "wal_segment_size") or 0)
    return PrepareJob(
        server=server.name, name=wal.name, source=str(wal.path), origin=wal.origin,
        spool_dir=str(config.spool_dir / server.name), codec=server.compression,
        level=server.compression_level, seg_size=seg or None, system_identifier=sysid or None,
    )


def prepare_and_encrypt(job: PrepareJob, server: ServerConfig) -> Prepared:
    """The CPU-bound half, run in a pool worker."""
    return encrypt(prepare(job), server)


def finish(
    catalog: Catalog, storage: Storage, server: ServerConfig, prepared: Prepared, fence: int | None
) -> Outcome:
    """Dedup, store and commit one prepared WAL (the I/O half, single writer)."""
    record = catalog.get(server.name, prepared.name)
    if record is not None and record.state is WalState.ARCHIVED:
        return handle_already_archived(catalog, storage, server, prepared, record)
    if record is not None and record.state is WalState.FAILED:  # failed -> claimed only through retry
        Path(prepared.payload).unlink(missing_ok=True)
        return Outcome(prepared.name, "failed", f"marked failed ({record.last_error}); `walq retry` re-drives it")
    check_identity(catalog, server, prepared)
    started = time.perf_counter()
    obj, adopted = store(storage, prepared)
    commit(catalog, storage, server, prepared, obj, adopted=adopted, fence=fence,
           store_seconds=time.perf_counter() - started)
    return Outcome(prepared.name, "archived", "recovered" if adopted else "", prepared.size, obj.size)


def settle(
    catalog: Catalog, storage: Storage, server: ServerConfig, wal: Candidate,
    result: Callable[[], Prepared], fence: int | None,
) -> Outcome:
    """Turn one WAL's prepare result into an outcome, mapping errors to Barman's rules."""
    try:
        return finish(catalog, storage, server, result(), fence)
    except DuplicateWalError as exc:
        return reject(catalog, server, wal.name, str(wal.path), str(exc), "duplicate")
    except InvalidWalError as exc:
        return reject(catalog, server, wal.name, str(wal.path), str(exc), "error")
    except PermanentError as exc:
        catalog.mark_failed(server.name, wal.name, str(exc), str(wal.path))
        return Outcome(wal.name, "failed", str(exc))
    except (TransientError, OSError) as exc:
        catalog.release(server.name, wal.name, str(exc))
        return Outcome(wal.name, "failed", f"{exc} (left in place; retried on the next run)")


def _immediate(value: Prepared | None, error: BaseException | None) -> Callable[[], Prepared]:
    def get() -> Prepared:
        if error is not None:
            raise error
        assert value is not None
        return value

    return get


def archive_server(
    config: Config,
    server: ServerConfig,
    pool: ProcessPoolExecutor | None,
    report: Reporter | None = None,
) -> ServerRun:
    run = ServerRun(server.name)
    lock = writer_lock(config, server.name)
    try:
        fence = _take(lock, config)
    except LockBusyError as exc:
        run.busy = True
        run.holder = exc.holder if isinstance(exc, LockHeldError) else None
        return run
    try:
        ensure_server_dirs(config, server)
        reset_spool(config.spool_dir / server.name)  # type: ignore[operator]
        storage = open_storage(server)
        storage.cleanup()
        catalog = open_catalog(config)
        try:
            if server.conninfo:
                from walq.postgres.client import learn_identity

                learn_identity(catalog, server)  # the sysid is known before the first WAL
            batch = scan(server)
            run.unknown = [str(p) for p in batch.unknown]
            run.skipped = batch.skipped
            total = len(batch.wals)
            for wal in batch.wals:
                catalog.claim(server.name, wal.name, str(wal.path), config.claim_timeout, steal=True)
            for i, outcome in enumerate(_process(config, server, catalog, storage, batch.wals, pool, fence), 1):
                run.outcomes.append(outcome)
                if isinstance(lock, FileLock):
                    lock.progress()
                if report:
                    report(server.name, outcome, i, total)
        finally:
            catalog.close()
    finally:
        lock.release()
    return run


def _take(lock: ServerLock, config: Config) -> int:
    """The writer lock's fencing token; LockBusyError (LockHeldError for the file lock) if busy."""
    if isinstance(lock, RedisLock):
        return lock.acquire_within(min(30.0, config.lock_ttl))
    if isinstance(lock, FileLock):
        return acquire_or_explain(lock, config.claim_timeout)
    return lock.acquire()


def _process(
    config: Config, server: ServerConfig, catalog: Catalog, storage: Storage,
    wals: list[Candidate], pool: ProcessPoolExecutor | None, fence: int,
) -> Iterable[Outcome]:
    jobs = [(wal, prepare_job(config, server, catalog, wal)) for wal in wals]
    if pool is None or len(jobs) <= 1:
        for wal, job in jobs:
            try:
                prepared, error = prepare_and_encrypt(job, server), None
            except Exception as exc:  # mapped to an outcome by settle()
                prepared, error = None, exc
            yield settle(catalog, storage, server, wal, _immediate(prepared, error), fence)
        return
    window = max(2, 2 * pool._max_workers)  # noqa: SLF001 - bounded read-ahead
    pending: deque[tuple[Candidate, Future[Prepared]]] = deque()
    it = iter(jobs)
    for wal, job in it:
        pending.append((wal, pool.submit(prepare_and_encrypt, job, server)))
        if len(pending) >= window:
            break
    while pending:
        wal, fut = pending.popleft()
        yield settle(catalog, storage, server, wal, fut.result, fence)
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt[0], pool.submit(prepare_and_encrypt, nxt[1], server)))


def worker_count(config: Config) -> int:
    return config.archive_workers or os.cpu_count() or 1


def archive(config: Config, names: list[str] | None = None, report: Reporter | None = None) -> list[ServerRun]:
    """Archive the named servers (all when empty); the pool is shared across them."""
    servers = [config.server(n) for n in names] if names else list(config.servers.values())
    if not servers:
        raise ConfigError("no servers configured ([servers.NAME] tables)")
    workers = worker_count(config)
    runs: list[ServerRun] = []
    with _pool(workers, config.group_access) if workers > 1 else _NoPool() as pool:
        for server in servers:
            runs.append(archive_server(config, server, pool, report))
    return runs


def _pool(workers: int, group_access: bool) -> ProcessPoolExecutor:
    """Workers that share no descriptor (so no lock) with this process and die with it."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(os.getpid(), group_access),
    )


def _init_worker(parent_pid: int, group_access: bool) -> None:
    """A spawned pool worker: dies with the archiver, creates files with its modes."""
    die_with_parent(parent_pid)
    set_group_access(group_access)


class _NoPool:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
