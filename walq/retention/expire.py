"""Carry out retention: ``walq expire`` and ``walq delete --before`` (and the fleet task).

Discovery (walq.retention.discovery, shared with `walq status`) reads what the
catalog says is archived: walq's own .backup and .history files are read back
through storage (decrypted, decompressed), and Barman's backup.info files come
from the server directory ``{home}/{server}`` when a Barman server shares the home. The plan (walq.retention.policy) decides; this module
applies it under the server's writer lock (the lock ``walq archive`` takes: the
file lock, or the fleet's fenced commit lock), in an order that survives kill -9
at any point:

  a. the catalog rows become ``expired`` with the time and the reason, in one
     transaction (fenced): from here on the catalog says the WAL is gone, and
     still says where its object was;
  b. the local xlogdb is rewritten without those lines (atomically, under
     Barman's xlogdb lock);
  c. the objects are deleted.

A run that dies after (a) leaves rows ``expired`` whose objects still exist; every
run starts by finishing those (b and c again), so a rerun completes the job and no
object is ever without a row that says where it is. ``dry_run`` takes no lock and
writes nothing: it reports the same plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from walq.catalog import Catalog, WalRecord, WalState, open_catalog
from walq.config import Config, ServerConfig
from walq.errors import LockBusyError, LockHeldError, WalqError, clip
from walq.fleet.faults import fault_point
from walq.locks import ServerLock
from walq.retention.backups import BackupDiscovery
from walq.retention.discovery import discover_backups, read_plain, stored_object
from walq.retention.policy import (
    DeletePlan,
    ExpiryPlan,
    parse_retention_policy,
    plan_delete_before,
    plan_expiry,
)
from walq.retention.timelines import Lineage, LineageError
from walq.storage import Storage, StoredObject, open_storage
from walq.storage.local import LocalStorage
from walq.wal import WalKind, parse_wal_name

if TYPE_CHECKING:
    from walq.hooks import WalHookInfo, WalHooks

LOCK_WAIT = 60.0  # seconds an expiry waits for a running archive to release the lock


@dataclass
class ExpiryResult:
    """What one server's run did (or, with dry_run, would do)."""

    server: str
    dry_run: bool
    policy: str | None = None  # None: no retention_policy (nothing to do)
    plan: ExpiryPlan | DeletePlan | None = None
    refused: str | None = None
    deleted: list[str] = field(default_factory=list)  # names whose rows became expired now
    finished: list[str] = field(default_factory=list)  # expired earlier, objects removed now
    xlogdb_lines: int = 0
    notes: list[str] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)  # planned, kept: a pre delete hook stopped
    hook_stop: str | None = None  # why (the pre_wal_delete_retry_script's answer)

    @property
    def to_delete(self) -> tuple[str, ...]:
        return self.plan.delete if self.plan is not None and self.refused is None else ()


class _Archive:
    """The catalog's view of one server's archive, and plain bytes read back through storage."""

    def __init__(self, server: ServerConfig, catalog: Catalog, storage: Storage) -> None:
        self.server = server
        self.storage = storage
        rows = catalog.records(server.name)
        self.archived: dict[str, WalRecord] = {
            r.name: r for r in rows if r.state is WalState.ARCHIVED
        }
        self.expired: dict[str, WalRecord] = {
            r.name: r for r in rows if r.state is WalState.EXPIRED
        }
        self.seg_size = int(catalog.get_meta(server.name, "wal_segment_size") or 0) or None

    obj = staticmethod(stored_object)

    def read(self, name: str) -> bytes:
        return read_plain(self.storage, self.server, self.archived[name])

    def leftovers(self) -> list[StoredObject]:
        """Objects of rows already expired that storage still holds (a run that died)."""
        if not self.expired:
            return []
        present = {o.name for o in self.storage.list()}
        return [self.obj(r) for n, r in sorted(self.expired.items()) if n in present]


def delete_hooks(config: Config, server: ServerConfig) -> WalHooks | None:
    """The server's WAL delete hooks, or None (nothing imported) when none is configured."""
    from walq.archive.wal_hooks import configured_hooks

    return configured_hooks(config, server, "wal_delete")


def _discover(config: Config, archive: _Archive) -> tuple[BackupDiscovery, Lineage]:
    found = discover_backups(
        config.home, archive.server.name, archive.archived, archive.read, archive.seg_size
    )
    return found, Lineage.from_archive(sorted(archive.archived), archive.read)


def with_writer_lock(config: Config, server: str, work: Callable[[int | None], None]) -> None:
    """Run ``work(fence)`` under the server's writer lock, waiting up to LOCK_WAIT for it."""
    # imported here: walq.archive.embedded pulls in the whole archiving pipeline
    from walq.archive.embedded import writer_lock

    lock: ServerLock = writer_lock(config, server)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fence = lock.acquire()
            break
        except (LockBusyError, LockHeldError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    try:
        work(fence)
    finally:
        lock.release()


def _apply(
    catalog: Catalog,
    archive: _Archive,
    result: ExpiryResult,
    reason: str,
    fence: int | None,
    hooks: WalHooks | None = None,
) -> None:
    """Steps a, b, c (module doc), after finishing what an earlier run left half done.

    With WAL delete hooks (walq.hooks), each WAL's pre hooks run before step (a), in
    name order: a pre retry hook's stop keeps that WAL and every later one (they are
    never marked, so no later run deletes them without asking again). The post hooks
    run after step (c), for this run's WALs and for an earlier run's leftovers (whose
    pre hooks ran before that run marked them)."""
    storage = archive.storage
    name = archive.server.name
    leftovers = archive.leftovers()
    names = list(result.to_delete)
    if hooks is not None and names:
        names = _pre_delete_hooks(hooks, archive, names, result)
    if names:
        result.deleted = catalog.mark_expired(name, names, reason, fence=fence)  # (a)
        fault_point("expire-marked")
    gone = [archive.obj(archive.archived[n]) for n in names if n in archive.archived]
    try:
        if isinstance(storage, LocalStorage) and (gone or leftovers):  # S3 has no xlogdb
            result.xlogdb_lines = storage.rewrite_xlogdb([*archive.expired, *names])  # (b)
        if leftovers:
            storage.delete(leftovers)  # (c) for the earlier run
            result.finished = [o.name for o in leftovers]
        if gone:
            storage.delete(gone)  # (c)
    except Exception as exc:
        _post_delete_hooks(hooks, archive, [*leftovers, *gone], str(exc))
        raise
    _post_delete_hooks(hooks, archive, [*leftovers, *gone], None)


def _delete_info(archive: _Archive, rec: WalRecord) -> WalHookInfo:
    """A delete hook's view of a WAL: its archived copy (path or s3:// URL), as recorded."""
    from walq.archive.wal_hooks import location
    from walq.hooks import WalHookInfo

    return WalHookInfo(
        rec.name,
        location(archive.storage, rec.storage_key or ""),
        rec.stored_size or 0,
        rec.mtime or 0.0,
        "" if rec.codec in (None, "none") else str(rec.codec),
    )


def _pre_delete_hooks(
    hooks: WalHooks, archive: _Archive, names: list[str], result: ExpiryResult
) -> list[str]:
    """Run each WAL's pre delete hooks in order; the names they let go (a prefix)."""
    from walq.hooks import HookStop

    for i, wal in enumerate(names):
        try:
            hooks.pre(_delete_info(archive, archive.archived[wal]))
        except HookStop as exc:
            result.held_back = names[i:]
            result.hook_stop = f"{exc}: kept {len(names) - i} file(s) from {wal} on"
            return names[:i]
    return names


def _post_delete_hooks(
    hooks: WalHooks | None, archive: _Archive, objs: list[StoredObject], error: str | None
) -> None:
    if hooks is None:
        return
    rows = {**archive.expired, **archive.archived}
    for obj in objs:
        if obj.name in rows:
            hooks.post(_delete_info(archive, rows[obj.name]), error)


def _run(
    config: Config,
    server_name: str,
    dry_run: bool,
    plan_for: Callable[[_Archive, ExpiryResult], str | None],
) -> ExpiryResult:
    server = config.server(server_name)
    result = ExpiryResult(server.name, dry_run, policy=server.retention_policy)
    if dry_run and not config.catalog_url and not config.catalog_path.exists():
        result.notes.append("no catalog yet: nothing is archived")
        return result
    catalog = open_catalog(config, readonly=dry_run)  # a dry run writes nothing, not even a schema
    storage = open_storage(server)
    try:

        def work(fence: int | None) -> None:
            archive = _Archive(server, catalog, storage)
            reason = plan_for(archive, result)
            if dry_run:
                result.finished = [o.name for o in archive.leftovers()]
                return
            _apply(catalog, archive, result, reason or "", fence, delete_hooks(config, server))

        if dry_run:
            work(None)
        else:
            with_writer_lock(config, server.name, work)
    finally:
        catalog.close()
    return result


def expire_server(
    config: Config, server_name: str, dry_run: bool = False, *, now: datetime | None = None
) -> ExpiryResult:
    """Apply the server's retention_policy (nothing to do without one)."""
    server = config.server(server_name)
    if not server.retention_policy:
        result = ExpiryResult(server.name, dry_run)
        result.notes.append("no retention_policy: nothing expires")
        return result
    policy = parse_retention_policy(server.retention_policy)

    def plan_for(archive: _Archive, result: ExpiryResult) -> str | None:
        if not archive.archived:
            result.notes.append("nothing archived: nothing to expire")
            return None
        try:
            found, lineage = _discover(config, archive)
        except LineageError as exc:
            result.refused = f"cannot read the timeline history: {exc}"
            return None
        plan = plan_expiry(
            policy,
            found.backups,
            archive.archived,
            lineage,
            now or datetime.now(UTC),
            problems=found.problems,
        )
        result.plan = plan
        if plan.refused is not None:
            result.refused = plan.refused.reason
            return None
        why = "; ".join(
            f"timeline {d.tli} {d.reason}"
            for _, d in sorted(plan.timelines.items())
            if d.action in ("cutoff", "superseded")
        )
        return f"{plan.policy}: {why}"[:1000]

    return _run(config, server_name, dry_run, plan_for)


def delete_before(
    config: Config, server_name: str, walname: str, dry_run: bool = False
) -> ExpiryResult:
    """Every segment of WALNAME's timeline and its ancestors before WALNAME, whatever the policy."""
    config.server(server_name)
    if parse_wal_name(walname).kind is not WalKind.SEGMENT:  # WalNameError (exit 2) for a bad name
        raise WalqError(f"delete --before: {clip(walname)} is not a WAL segment name")

    def plan_for(archive: _Archive, result: ExpiryResult) -> str | None:
        if archive.seg_size is None:
            result.refused = "the WAL segment size is not known yet (archive a WAL first)"
            return None
        try:
            lineage = Lineage.from_archive(sorted(archive.archived), archive.read)
        except LineageError as exc:
            result.refused = f"cannot read the timeline history: {exc}"
            return None
        try:
            plan = plan_delete_before(walname, archive.archived, lineage, seg_size=archive.seg_size)
        except (ValueError, WalqError) as exc:
            raise WalqError(f"delete --before: {exc}") from None
        result.plan = plan
        result.notes.extend(plan.notes)
        if plan.refused is not None:
            result.refused = plan.refused.reason
            return None
        return f"walq delete --before {plan.before}"

    return _run(config, server_name, dry_run, plan_for)
