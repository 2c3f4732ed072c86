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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from walq.archive.dirs import ensure_server_dirs
from walq.archive.job import WalJob, new_job, prepare_settings
from walq.archive.policy import WALS_OWN_FAILURES, settle_failure
from walq.archive.scan import Candidate, scan
from walq.archive.steps import (
    Outcome,
    check_identity,
    commit,
    encrypt,
    handle_already_archived,
    prepare,
    store,
)
from walq.catalog import Catalog, WalState, open_catalog
from walq.config import Config, ServerConfig
from walq.errors import ConfigError, LockBusyError, LockHeldError, NotOwnedError
from walq.fsutil import make_owned_dir, remove_owned_tree, set_group_access, spool_leftover
from walq.locks import FileLock, LockHolder, ServerLock, open_lock
from walq.proclife import die_with_parent
from walq.storage import Storage, open_storage

if TYPE_CHECKING:
    from walq.hooks import WalHookInfo

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
    """Barman's archive-wal file lock (a busy one names its holder); with a fleet lock
    URL, the fleet's fenced commit lock instead, so a manual `walq archive` never
    interleaves with Celery commits."""
    if config.effective_lock_url:
        return open_lock(config, server, "commit")
    return FileLock(config.home, server, explain_after=config.claim_timeout)


def reset_spool(spool: Path) -> None:
    """Empty the server's spool (payloads of a killed run): only a directory walq created
    and marked as its own is ever removed; anything else stops the run, untouched."""
    make_owned_dir(spool, spool_leftover)  # adopts an earlier walq's unmarked spool, refuses others
    if not remove_owned_tree(spool):
        raise NotOwnedError(f"spool_dir: cannot empty {spool}")
    make_owned_dir(spool)


def scanned_job(config: Config, server: ServerConfig, catalog: Catalog, wal: Candidate) -> WalJob:
    """The WalJob for a WAL this run found, prepared into the server's spool."""
    job = new_job(server.name, wal.name, str(wal.path), wal.origin)
    return prepare_settings(config, server, catalog, job, config.spool_dir / server.name)


def prepare_and_encrypt(job: WalJob, server: ServerConfig) -> WalJob:
    """The CPU-bound half, run in a pool worker."""
    return encrypt(prepare(job), server)


def finish(
    catalog: Catalog, storage: Storage, server: ServerConfig, job: WalJob, fence: int | None
) -> Outcome:
    """Dedup, store and commit one prepared WAL (the I/O half, single writer)."""
    record = catalog.get(server.name, job.wal)
    # expired: archived once, then retention deleted it; a copy arriving again is judged the same way
    if record is not None and record.state in (WalState.ARCHIVED, WalState.EXPIRED):
        return handle_already_archived(catalog, storage, server, job, record)
    if (
        record is not None and record.state is WalState.FAILED
    ):  # failed -> claimed only through retry
        job.payload_path.unlink(missing_ok=True)
        return Outcome(
            job.wal, "failed", f"marked failed ({record.last_error}); `walq retry` re-drives it"
        )
    check_identity(catalog, server, job)
    job = store(storage, job)
    commit(catalog, storage, server, job, fence=fence)
    return Outcome(
        job.wal, "archived", "recovered" if job.adopted else "", job.size or 0, job.stored_size
    )


def settle(
    catalog: Catalog,
    storage: Storage,
    server: ServerConfig,
    job: WalJob,
    result: Callable[[], WalJob],
    fence: int | None,
) -> Outcome:
    """Turn one WAL's prepare result into an outcome; its failures go through the policy."""
    try:
        return finish(catalog, storage, server, result(), fence)
    except WALS_OWN_FAILURES as exc:
        return settle_failure(catalog, server, job, exc)


def _immediate(value: WalJob | None, error: BaseException | None) -> Callable[[], WalJob]:
    def get() -> WalJob:
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
        fence = lock.acquire_within(min(30.0, config.lock_ttl))  # the file lock never waits
    except LockBusyError as exc:
        run.busy = True
        run.holder = exc.holder if isinstance(exc, LockHeldError) else None
        return run
    try:
        ensure_server_dirs(config, server, ConfigError, with_storage=True)
        reset_spool(config.spool_dir / server.name)
        storage = open_storage(server)
        storage.cleanup()
        catalog = open_catalog(config)
        try:
            if server.conninfo:
                # psycopg is imported only for servers with a conninfo
                from walq.postgres.client import learn_identity

                learn_identity(catalog, server)  # the sysid is known before the first WAL
            batch = scan(server)
            run.unknown = [str(p) for p in batch.unknown]
            run.skipped = batch.skipped
            total = len(batch.wals)
            catalog.claim_many(  # one transaction for the batch, not one per WAL
                server.name,
                [(wal.name, str(wal.path)) for wal in batch.wals],
                config.claim_timeout,
                steal=True,
            )
            for i, outcome in enumerate(
                _process(config, server, catalog, storage, batch.wals, pool, fence, lock.progress),
                1,
            ):
                run.outcomes.append(outcome)
                lock.progress()
                if report:
                    report(server.name, outcome, i, total)
        finally:
            catalog.close()
    finally:
        lock.release()
    return run


def _process(
    config: Config,
    server: ServerConfig,
    catalog: Catalog,
    storage: Storage,
    wals: list[Candidate],
    pool: ProcessPoolExecutor | None,
    fence: int,
    heartbeat: Callable[[], None] | None = None,
) -> Iterable[Outcome]:
    jobs = [scanned_job(config, server, catalog, wal) for wal in wals]
    admission = _Admission(config, server, catalog, storage, jobs, heartbeat)

    def settled(job: WalJob, result: Callable[[], WalJob]) -> Outcome:
        return admission.settled(job, lambda: settle(catalog, storage, server, job, result, fence))

    if pool is None or len(jobs) <= 1:
        for job in admission:
            try:
                prepared, error = prepare_and_encrypt(job, server), None
            except Exception as exc:  # mapped to an outcome by settle()
                prepared, error = None, exc
            yield settled(job, _immediate(prepared, error))
        yield from admission.stopped
        return
    window = max(
        2, 2 * worker_count(config)
    )  # bounded read-ahead: the pool has worker_count() workers
    pending: deque[tuple[WalJob, Future[WalJob]]] = deque()
    it = iter(admission)
    for job in it:
        pending.append((job, pool.submit(prepare_and_encrypt, job, server)))
        if len(pending) >= window:
            break
    while pending:
        job, fut = pending.popleft()
        yield settled(job, fut.result)
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(prepare_and_encrypt, nxt, server)))
    yield from admission.stopped


class _Admission:
    """The run's WALs in order, each let in only once its pre archive hooks passed.

    Without archive hooks it is the plain list. With them, the pre hooks run here,
    in this process and in WAL order, before a WAL's preparation is submitted; the
    post hooks run once it is settled (``settled``). A pre retry hook's stop (exit 63,
    or attempts exhausted) ends the run as in Barman: that WAL and every later one
    stay in their source directory for the next run (``stopped``: their outcomes)."""

    def __init__(
        self,
        config: Config,
        server: ServerConfig,
        catalog: Catalog,
        storage: Storage,
        jobs: list[WalJob],
        heartbeat: Callable[[], None] | None,
    ) -> None:
        from walq.archive.wal_hooks import archive_hooks

        self.server, self.catalog, self.storage, self.jobs = server, catalog, storage, jobs
        self.hooks = archive_hooks(config, server, heartbeat)
        self.before: dict[str, WalHookInfo] = {}
        self.stopped: list[Outcome] = []

    def __iter__(self) -> Iterator[WalJob]:
        if self.hooks is None:
            yield from self.jobs
            return
        from walq.archive.wal_hooks import source_info
        from walq.hooks import HookStop

        for i, job in enumerate(self.jobs):
            self.before[job.wal] = source_info(job.wal, job.source)
            try:
                self.hooks.pre(self.before[job.wal])
            except HookStop as exc:
                self._stop(job, self.jobs[i + 1 :], str(exc))
                return
            yield job

    def _stop(self, job: WalJob, rest: list[WalJob], reason: str) -> None:
        assert self.hooks is not None
        self.catalog.release(self.server.name, job.wal, reason)
        self._post(job, reason)
        self.stopped.append(Outcome(job.wal, "skipped", f"{reason} (left in place)"))
        for later in rest:
            why = f"not archived this run: the run stopped at {job.wal}"
            self.catalog.release(self.server.name, later.wal, why)
            self.stopped.append(Outcome(later.wal, "skipped", why))

    def settled(self, job: WalJob, settle_it: Callable[[], Outcome]) -> Outcome:
        """Settle one admitted WAL, then run its post hooks (also when settling raised)."""
        if self.hooks is None:
            return settle_it()
        from walq.archive.wal_hooks import outcome_error

        try:
            outcome = settle_it()
        except Exception as exc:
            self._post(job, str(exc))
            raise
        self._post(job, outcome_error(outcome))
        return outcome

    def _post(self, job: WalJob, error: str | None) -> None:
        from walq.archive.wal_hooks import stored_hook_info

        assert self.hooks is not None
        info = stored_hook_info(self.catalog, self.storage, self.server, self.before[job.wal])
        self.hooks.post(info, error)


def worker_count(config: Config) -> int:
    return config.archive_workers or os.cpu_count() or 1


def archive(
    config: Config, names: list[str] | None = None, report: Reporter | None = None
) -> list[ServerRun]:
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
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), group_access),
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
