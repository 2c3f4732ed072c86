"""Fleet mode without Celery: what each task does, in plain functions.

The Celery tasks in ``workers/`` only call these stage functions and apply the
failure policy (walq/archive/policy.py) to what they raise — design.md's rule
that everything testable without a broker lives in ``walq/``.

A WAL's trip: ``scan_server`` claims it in the catalog and returns its WalJob
as JSON; ``compress`` → ``encrypt`` → ``store`` → ``commit`` each validate the
job (walq/fleet/args.py), add their part, and pass it on: spool paths and
names, never payloads. Every stage first pushes the claim's deadline forward,
so a scan re-enqueues a WAL only when its chain stalled (a lost message, a
killed host), never one that is progressing. Commit runs under the server's
fenced lock and the catalog refuses a stale token.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from walq.archive.dirs import ensure_server_dirs
from walq.archive.identity import known_system_identifier
from walq.archive.job import WalJob, new_job, prepare_settings
from walq.archive.policy import give_up as gave_up
from walq.archive.policy import settle_failure
from walq.archive.retry import reset_failed
from walq.archive.scan import Candidate, scan
from walq.archive.steps import (
    Outcome,
    archived_info,
    check_identity,
    commit,
    encrypt,
    encrypted_payload,
    handle_already_archived,
    prepare,
    store,
    stored_object,
)
from walq.archive.wal_hooks import archive_hooks, outcome_error, source_info, stored_hook_info
from walq.catalog import WalRecord, WalState
from walq.checksums import algorithm_of
from walq.config import Config, ServerConfig
from walq.errors import (
    AlreadyDone,
    InvalidWalError,
    LockBusyError,
    StorageKeyError,
    TaskArgumentError,
    TransientError,
    clip,
)
from walq.fleet.args import (
    PREPARED,
    PREPARED_REQUIRED,
    SCANNED,
    SCANNED_REQUIRED,
    STORED,
    ServerArgs,
    WalArgs,
    parse_args,
    parse_job,
)
from walq.fleet.faults import fault_point
from walq.fleet.runtime import Runtime
from walq.fsutil import is_owned, make_owned_dir, remove_owned_tree, spool_leftover
from walq.storage import Storage, StoredObject

if TYPE_CHECKING:
    from walq.hooks import WalHookInfo

COMMIT_LOCK_WAIT = 10.0  # seconds a commit waits for the lock before requeueing itself
# A stage pushes the claim's deadline only once this share of claim_timeout has passed
# since the claim (or the last push): stages take milliseconds against minutes.
EXTEND_AFTER = 0.25

__all__ = [  # what workers/tasks.py and the tests use
    "AlreadyDone",
    "Outcome",
    "Runtime",
    "TaskArgumentError",
    "commit_stage",
    "compress_stage",
    "encrypt_stage",
    "give_up",
    "park",
    "retry_failed",
    "retry_wal",
    "scan_server",
    "store_and_mark_stage",
    "store_stage",
]


# -- scan ---------------------------------------------------------------------------


def chain_job(server: ServerConfig, wal: str, source: Path, origin: str) -> dict[str, Any]:
    """A claimed WAL's job as the compress task's argument; a fresh chain id names its spool."""
    job = new_job(server.name, wal, str(source), origin, chain=uuid.uuid4().hex)
    return job.model_copy(update={"claimed": time.time()}).wire()


def keep_claim(rt: Runtime, job: WalJob) -> WalJob:
    """Push the claim's deadline forward when EXTEND_AFTER of claim_timeout has passed
    since the claim (or the last push); otherwise leave the catalog alone."""
    now = time.time()
    timeout = rt.config.claim_timeout
    if job.claimed is not None and 0 <= now - job.claimed < timeout * EXTEND_AFTER:
        return job
    rt.catalog.extend(job.server, job.wal, timeout)
    return job.model_copy(update={"claimed": now})


# A WAL once archived: still stored, or archived and then expired by retention. A copy
# of it found again in incoming/ or streaming/ is dropped if identical, parked if not.
DONE_STATES = (WalState.ARCHIVED, WalState.EXPIRED)


def scan_server(
    rt: Runtime, server_name: str, commit_overdue: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """List the server's directories, claim new or stalled WALs, return one job each.

    One scan per server at a time (a Redis lock); a second beat's scan finds it
    busy and returns nothing. Claims are atomic in the catalog, so even two scans
    that did run at once could not enqueue one WAL twice. Every WAL the listing found
    is claimed in one catalog statement (claim_many), which also returns the rows it
    did not claim: no read per WAL."""
    config = rt.config
    args: ServerArgs = parse_args(ServerArgs, config, {"server": server_name})
    server = config.server(args.server)
    if nothing_to_do(rt, server):
        return []  # an idle tick: a listing, no lock, no catalog
    lock = rt.lock(server.name, "scan")
    try:
        lock.acquire()
    except LockBusyError:
        return []
    try:
        _ensure_dirs(config, server)
        _sweep_spool(config, server)
        if server.conninfo and known_system_identifier(rt.catalog, server) is None:
            # psycopg is imported only for servers with a conninfo
            from walq.postgres.client import learn_identity

            learn_identity(rt.catalog, server)  # until known: the first WAL is checked too
        batch = scan(server)
        jobs, leftovers = [], []
        overdue = False
        if batch.wals:  # one catalog statement claims them all, and returns the other rows
            claims = rt.catalog.claim_many(
                server.name, [(w.name, str(w.path)) for w in batch.wals], config.claim_timeout
            )
            first_copy = set(claims.claimed)
            for wal in batch.wals:
                if wal.name in first_copy:  # streaming before incoming: one chain per WAL
                    first_copy.discard(wal.name)
                    jobs.append(chain_job(server, wal.name, wal.path, wal.origin))
                    continue
                record = claims.others.get(wal.name)
                if record is not None and record.state in DONE_STATES:
                    leftovers.append(wal)
                elif record is not None and _commit_overdue(rt.config, record):
                    overdue = True
        if leftovers:
            settle_leftovers(rt, server, leftovers)
        if overdue and commit_overdue is not None:
            commit_overdue()  # e.g. its commit froze with the whole batch: ask for another
        return jobs
    finally:
        lock.release()


def _commit_overdue(config: Config, record: WalRecord) -> bool:
    """A stored WAL still uncommitted twice the lock TTL (at least 5 s) after it was
    stored: the commit that had it may be frozen or lost with its message."""
    if record.state is not WalState.CLAIMED or record.stored_at is None:
        return False
    return time.time() - record.stored_at > max(2 * config.lock_ttl, 5.0)


def nothing_to_do(rt: Runtime, server: ServerConfig) -> bool:
    """Whether a scan would find nothing: no file waiting, no spool to sweep, no identity
    to learn, and the server's directories already made. Anything else takes the lock."""
    if not server.incoming_dir.is_dir():
        return False
    for directory in (server.incoming_dir, server.streaming_dir):
        try:
            with os.scandir(directory) as entries:
                if any(not entry.name.startswith(".") for entry in entries):
                    return False
        except FileNotFoundError:
            continue
    root = rt.config.spool_dir / server.name
    cutoff = time.time() - 2 * rt.config.claim_timeout
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and (
                    entry.stat(follow_symlinks=False).st_mtime < cutoff
                ):
                    return False
    except FileNotFoundError:
        return False
    return not (server.conninfo and known_system_identifier(rt.catalog, server) is None)


def _ensure_dirs(config: Config, server: ServerConfig) -> None:
    """The server's directories (a failure may heal: the next scan tries again) and its
    own spool, which walq marks so that only walq ever sweeps it."""
    ensure_server_dirs(config, server, TransientError, with_storage=False)
    try:
        make_owned_dir(config.spool_dir / server.name, spool_leftover)
    except OSError as exc:
        raise TransientError(
            f"spool_dir: cannot create {config.spool_dir}/{server.name}: {exc.strerror}"
        ) from None


def _sweep_spool(config: Config, server: ServerConfig) -> None:
    """Remove chain spool dirs nobody touched for two claim timeouts (killed chains).

    Only inside the server's spool that walq created and marked, and only chain
    directories carrying walq's marker: anything else there is reported, never removed."""
    root = config.spool_dir / server.name
    if not is_owned(root):
        if root.exists() or root.is_symlink():
            print(
                f"walq: warning: {root} was not created by walq; its spool is not swept",
                file=sys.stderr,
            )
        return
    cutoff = time.time() - 2 * config.claim_timeout
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if (
                entry.is_dir(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff
            ):
                remove_owned_tree(entry.path)
        except FileNotFoundError:
            continue


def settle_leftovers(rt: Runtime, server: ServerConfig, wals: list[Candidate]) -> None:
    """Sources of already-archived WALs (a crash after the catalog commit, or a second
    copy): checksum and drop, or park if different — under the commit lock, so the
    xlogdb line is never written twice."""
    lock = rt.lock(server.name, "commit")
    try:
        lock.acquire_within(COMMIT_LOCK_WAIT)
    except LockBusyError:
        return
    try:
        for wal in wals:
            record = rt.catalog.get(server.name, wal.name)
            if record is not None and record.state in DONE_STATES:
                settle_source(
                    rt, server, new_job(server.name, wal.name, str(wal.path), wal.origin), record
                )
    finally:
        lock.release()


def settle_source(
    rt: Runtime, server: ServerConfig, job: WalJob, record: WalRecord
) -> Outcome | None:
    """A source of an already-archived WAL, judged by its own checksum (prepared here
    from the file, never taken from a task's arguments): dropped if identical, parked
    if not. None when the source is already gone. The caller holds the commit lock."""
    if not Path(job.source).exists():
        return None
    spool = rt.config.spool_dir / server.name / uuid.uuid4().hex
    job = prepare_settings(rt.config, server, rt.catalog, job, spool)
    # summed as the row was, so the copy compares without a second read
    job = job.model_copy(update={"checksum_algorithm": algorithm_of(record.checksum_algorithm)})
    try:
        prepared = prepare(job)
    except InvalidWalError as exc:
        return settle_failure(rt.catalog, server, job, exc)
    try:
        return handle_already_archived(rt.catalog, rt.storage(server), server, prepared, record)
    finally:
        remove_owned_tree(spool)


# -- the stages ------------------------------------------------------------------------


def compress_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """Validate, checksum and compress the source into the chain's spool (CPU)."""
    job = parse_job(rt.config, data, takes=SCANNED, needs=SCANNED_REQUIRED)
    server = rt.config.server(job.server)
    job = keep_claim(rt, job)
    scanned = job
    job = prepare_settings(rt.config, server, rt.catalog, scanned, job.spool(rt.config))
    if not Path(job.source).exists():
        record = rt.catalog.get(server.name, job.wal)
        if record is not None and record.state is WalState.ARCHIVED:
            raise AlreadyDone(f"{job.wal} is already archived and its source is gone")
    _pre_archive_hooks(rt, server, job)
    try:
        job = prepare(job)
    except InvalidWalError:
        if not rt.forget_meta(server.name):
            raise
        # the cached identity may be stale (changed since this process read it): once more, fresh
        job = prepare_settings(rt.config, server, rt.catalog, scanned, job.spool(rt.config))
        job = prepare(job)
    fault_point("compress")
    return job.wire()


def encrypt_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """Encrypt the spool payload when the server asks for it (CPU)."""
    job = parse_job(rt.config, data, takes=PREPARED, needs=PREPARED_REQUIRED)
    server = rt.config.server(job.server)
    if not encrypted_payload(job.payload_path).exists():
        _payload_present(job)  # else a redelivered hop whose first run encrypted it
    job = keep_claim(rt, job)
    job = encrypt(job, server)
    fault_point("encrypt")
    return job.wire()


def store_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """Conditional write to storage; an identical copy already there is adopted (I/O)."""
    job = parse_job(rt.config, data, takes=PREPARED, needs=PREPARED_REQUIRED)
    server = rt.config.server(job.server)
    job = keep_claim(rt, job)
    record = rt.catalog.get(server.name, job.wal)
    if record is not None and record.state is WalState.ARCHIVED:
        return job.model_copy(
            update={"already_archived": True}
        ).wire()  # commit drops or parks the copy
    _require_claim(job, record)
    _payload_present(job)
    try:
        check_identity(rt.catalog, server, job)
    except InvalidWalError:
        if not rt.forget_meta(server.name):
            raise
        check_identity(rt.catalog, server, job)  # the cached identity may be stale: once more
    job = store(rt.storage(server), job)
    fault_point("store")
    return job.wire()


def store_and_mark_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """The fleet chain's store: store_stage, then record the stored object on the claimed
    row (``stored``) for the server's group commit (walq.fleet.commit), and drop the
    chain's spool. An adopted copy is judged by its checksum first, as commit would."""
    try:
        stored = store_stage(rt, data)
    except AlreadyDone:
        if _stored_already(rt, data):
            return dict(data)  # marked before a crash dropped its message: ask for the commit
        raise
    job = parse_job(rt.config, stored, takes=STORED, needs=PREPARED_REQUIRED)
    if job.already_archived:
        return stored  # the per-WAL commit drops or parks this copy
    server = rt.config.server(job.server)
    info = archived_info(rt.storage(server), server, job)
    if not rt.catalog.mark_stored(server.name, job.wal, info, rt.config.claim_timeout):
        record = rt.catalog.get(server.name, job.wal)
        if record is not None and record.state in DONE_STATES:
            return job.model_copy(update={"already_archived": True}).wire()
        raise AlreadyDone(f"{job.wal} is no longer claimed; nothing to commit")
    remove_owned_tree(job.spool(rt.config))
    return stored


def _stored_already(rt: Runtime, data: Any) -> bool:
    """A redelivered store whose chain had already marked the WAL stored (and dropped
    its spool) before the worker died: the row waits for a commit nobody asked for."""
    job = _scanned_part(rt.config, data)
    if job is None:
        return False
    record = rt.catalog.get(job.server, job.wal)
    return record is not None and record.state is WalState.CLAIMED and record.stored_at is not None


def commit_stage(rt: Runtime, data: Any) -> Outcome:
    """Under the fenced lock: record the WAL as archived, xlogdb line, remove the source."""
    job = parse_job(rt.config, data, takes=STORED, needs=PREPARED_REQUIRED)
    server = rt.config.server(job.server)
    storage = rt.storage(server)
    lock = rt.lock(server.name, "commit")
    token = lock.acquire_within(COMMIT_LOCK_WAIT)
    try:
        record = rt.catalog.get(server.name, job.wal)
        if record is not None and record.state is WalState.ARCHIVED:
            job.payload_path.unlink(missing_ok=True)
            source = new_job(job.server, job.wal, job.source, job.origin)  # judged by its own bytes
            outcome = settle_source(rt, server, source, record) or Outcome(
                job.wal, "duplicate", "already archived; its source is already gone", job.size or 0
            )
        elif record is not None and record.state is WalState.FAILED:
            raise AlreadyDone(
                f"{job.wal} was marked failed meanwhile; an operator retry re-drives it"
            )
        else:
            _require_claim(job, record)
            if job.key is None:
                raise TransientError(f"{job.wal}: nothing stored yet")
            verify_stored(storage, job)
            lock.extend()  # still ours? (the fence below is what makes it safe anyway)
            fault_point("commit")
            commit(rt.catalog, storage, server, job, fence=token)
            outcome = Outcome(
                job.wal,
                "archived",
                "recovered" if job.adopted else "",
                job.size or 0,
                job.stored_size,
            )
    finally:
        lock.release()
    remove_owned_tree(job.spool(rt.config))
    _post_archive_hooks(rt, server, job, outcome_error(outcome))
    return outcome


# -- Barman's archive hooks (walq.hooks): pre in the first stage, post after the commit ----


def _heartbeat(rt: Runtime, job: WalJob) -> Callable[[], None]:
    """Called before each retry hook attempt: the chain's claim stays live meanwhile."""
    return lambda: rt.catalog.extend(job.server, job.wal, rt.config.claim_timeout)


def _pre_archive_hooks(rt: Runtime, server: ServerConfig, job: WalJob) -> None:
    """The pre archive hooks, in the worker running the chain's first stage. A stop
    (HookStop, an AlreadyDone: the task ends quietly) releases the claim, so the WAL
    stays in its directory and a later scan starts a new chain, which asks again."""
    hooks = archive_hooks(rt.config, server, _heartbeat(rt, job))
    if hooks is None:
        return
    from walq.hooks import HookStop

    before = source_info(job.wal, job.source)
    try:
        hooks.pre(before)
    except HookStop as exc:
        rt.catalog.release(server.name, job.wal, str(exc))
        remove_owned_tree(job.spool(rt.config))
        hooks.post(stored_hook_info(rt.catalog, rt.storage(server), server, before), str(exc))
        raise


def _post_archive_hooks(
    rt: Runtime,
    server: ServerConfig,
    job: WalJob,
    error: str | None,
    before: WalHookInfo | None = None,
) -> None:
    """The post archive hooks, once the WAL is settled (committed, dropped or parked)."""
    hooks = archive_hooks(rt.config, server, _heartbeat(rt, job))
    if hooks is None:
        return
    if before is None:
        before = source_info(job.wal, job.source)
        if job.size is not None:  # the source is gone after a commit: what the chain read
            before = replace(before, size=job.size, timestamp=job.mtime or before.timestamp)
    hooks.post(stored_hook_info(rt.catalog, rt.storage(server), server, before), error)


def _require_claim(job: WalJob, record: WalRecord | None) -> None:
    """Every chain starts from a scan's claim: a store or commit for a WAL with no
    catalog row was made up, and is refused before it writes anything."""
    if record is None:
        raise TaskArgumentError(
            f"refused: {job.server}/{job.wal} was never claimed by a scan; nothing was touched"
        )


def verify_stored(storage: Storage, job: WalJob) -> StoredObject:
    """Before a source is removed: storage holds this WAL at the job's key, with the
    job's size, and (unless adopted, which commit checks by checksum) it is the
    object this chain wrote. Otherwise refuse, having touched nothing."""
    assert job.key is not None and job.checksum is not None
    found = storage.find(job.wal)
    if found is None or found.key != job.key or found.size != job.stored_size:
        held = "nothing" if found is None else f"{clip(found.key)} ({found.size} bytes)"
        raise TaskArgumentError(
            f"refused: {job.server}/{job.wal}: storage holds {held}, not {clip(job.key)} "
            f"({job.stored_size} bytes); nothing was touched"
        )
    try:
        storage.validate_key(job.wal, found.key)  # local: it resolves inside wals/ too
    except StorageKeyError as exc:
        raise TaskArgumentError(f"refused: {exc}; nothing was touched") from None
    if found.codec is not None and (found.codec, found.encrypted) != (
        job.stored_codec,
        job.stored_encrypted,
    ):
        raise TaskArgumentError(
            f"refused: {job.server}/{job.wal}: {clip(found.key)} is not a "
            f"{job.stored_codec} object; nothing was touched"
        )
    _payload_present(job)  # a swept spool: a newer chain owns the WAL (it will adopt this object)
    algorithm = algorithm_of(job.checksum_algorithm)
    if not job.adopted and not storage.written_from(
        found, job.payload_path, job.checksum, algorithm
    ):
        raise TaskArgumentError(
            f"refused: {job.server}/{job.wal}: {clip(found.key)} was not written from this chain's "
            f"payload; nothing was touched"
        )
    return stored_object(job)


def _payload_present(job: WalJob) -> None:
    """A chain whose spool was swept (it stalled for two claim timeouts) has been
    superseded by a re-enqueued one: stop it quietly rather than fail the WAL."""
    if not job.payload_path.exists():
        raise AlreadyDone(
            f"{job.wal}: spool payload {job.payload} is gone; a newer chain owns this WAL"
        )


# -- failure handling (called by the tasks) ---------------------------------------------


def park(rt: Runtime, data: Any, exc: BaseException) -> Outcome:
    """A failure the policy settles (reject to errors/ or mark failed), after dropping
    the chain's spool. Arguments that name no real WAL settle nothing."""
    job = _scanned_part(rt.config, data)
    if job is None:
        return Outcome("?", "failed", str(exc))
    server = rt.config.server(job.server)
    remove_owned_tree(job.spool(rt.config))
    before = source_info(job.wal, job.source) if archive_hooks(rt.config, server) else None
    outcome = settle_failure(rt.catalog, server, job, exc)
    if before is not None:
        _post_archive_hooks(rt, server, job, outcome_error(outcome) or str(exc), before)
    return outcome


def give_up(rt: Runtime, data: Any, exc: BaseException, attempts: int) -> Outcome:
    """Transient errors that outlasted every retry: mark the WAL failed with the reason."""
    return park(rt, data, gave_up(exc, attempts))


def _scanned_part(config: Config, data: Any) -> WalJob | None:
    """The scan's part of a stage's argument (what failing the WAL needs), or None."""
    try:
        scanned = {key: data[key] for key in SCANNED if key in data}
        return parse_job(config, scanned, takes=SCANNED, needs=SCANNED_REQUIRED)
    except (KeyError, TypeError, TaskArgumentError):
        return None


# -- operator retries ------------------------------------------------------------------


def retry_wal(rt: Runtime, server_name: str, wal: str) -> dict[str, Any] | None:
    """Make one failed WAL claimable again and return its job (None if nothing to do)."""
    args: WalArgs = parse_args(WalArgs, rt.config, {"server": server_name, "wal": wal})
    reset_failed(rt.config, args.server, [args.wal])
    return _claim_existing(rt, args.server, args.wal)


def retry_failed(rt: Runtime, server_name: str) -> list[dict[str, Any]]:
    """Every failed WAL of a server back in play; returns the jobs to enqueue."""
    args: ServerArgs = parse_args(ServerArgs, rt.config, {"server": server_name})
    jobs = []
    for name in reset_failed(rt.config, args.server, None):
        job = _claim_existing(rt, args.server, name)
        if job is not None:
            jobs.append(job)
    return jobs


def _claim_existing(rt: Runtime, server_name: str, wal: str) -> dict[str, Any] | None:
    server = rt.config.server(server_name)
    for origin, directory in (
        ("streaming", server.streaming_dir),
        ("incoming", server.incoming_dir),
    ):
        path = directory / wal
        if path.is_file() and not path.is_symlink():
            if not rt.catalog.claim(server.name, wal, str(path), rt.config.claim_timeout):
                return None
            return chain_job(server, wal, path, origin)
    return None
