"""The fleet's group commit: one per server at a time, every stored WAL in WAL order.

Store marks a WAL ``stored`` in the catalog (a claimed row with ``stored_at``)
and asks for a commit of its server. At most one commit is queued or running per
server: a Redis flag set with SET NX by whoever enqueues it, cleared by the
commit when it starts (before it reads the catalog, so a WAL stored while it
runs asks for the next one). The commit takes the server's fenced lock once and
reads its candidates and moves the batch to ``archived`` in one catalog
transaction, appends their xlogdb
lines in one write, and only then removes their sources.

Order: a stored WAL waits for every earlier WAL of its server that is still in
flight (claimed, not yet stored), but for at most ORDER_WAIT seconds (and half
of claim_timeout) after it was stored; past that it is committed with every
stored WAL before it, and the late one is committed (its xlogdb line appended
after theirs) when it is stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from walq import keys
from walq.archive.wal_hooks import archive_hooks, stored_hook_info
from walq.catalog import WalRecord
from walq.config import ServerConfig
from walq.fleet.args import ServerArgs, parse_args
from walq.fleet.faults import fault_point
from walq.fleet.runtime import Runtime
from walq.fsutil import fsync_dir
from walq.storage import StoredObject

# A store asks for its server's commit this many seconds ahead: the WALs stored
# meanwhile join the same batch (one lock, one transaction, one append).
COMMIT_DELAY = 0.5
COMMIT_LOCK_WAIT = 10.0  # seconds a commit waits for the lock before requeueing itself
ORDER_WAIT = 60.0  # seconds a stored WAL waits for an earlier one still in flight
REQUEST_TTL = 60.0  # a commit request flag outlives a lost commit message by at most this


@dataclass(frozen=True)
class Batch:
    """What one group commit did: the WALs it committed, and when to look again for
    stored WALs it held back behind an earlier one still in flight (None: none held)."""

    committed: list[str]
    held: int
    again_in: float | None


def request_commit(rt: Runtime, server: str, later: float | None = None) -> bool:
    """Whether the caller should enqueue the server's commit: True for the first asker
    while none is queued or running (always True without Redis). ``later``: a delayed
    look at held-back WALs in that many seconds, at most one pending per server, kept
    apart so that it never stops a store from asking for a commit now."""
    if rt.redis is None:
        return True
    if later is not None:
        key, ttl = keys.commit_requested(server, later=True), later
    else:
        key, ttl = keys.commit_requested(server), REQUEST_TTL
    return bool(rt.redis.set(key, "1", nx=True, px=max(1, int(ttl * 1000))))


def ready(
    records: list[WalRecord], now: float, wait: float = ORDER_WAIT
) -> tuple[list[WalRecord], int, float | None]:
    """Of the claimed rows (in WAL order): the stored ones to commit now, how many stored
    ones are held back, and in how many seconds the first of those stops waiting.

    Stored WALs before the first WAL still in flight are committed. After it, a stored
    WAL waits at most ``wait`` seconds from being stored; once one has waited that
    long it is committed together with every stored WAL before it."""
    stored = [r for r in records if r.stored_at is not None]
    first_in_flight = next((r.name for r in records if r.stored_at is None), None)
    if first_in_flight is None:
        return stored, 0, None
    overdue = [r for r in stored if r.name > first_in_flight and now - (r.stored_at or 0) >= wait]
    cut = overdue[-1].name if overdue else first_in_flight
    commit = [r for r in stored if r.name <= cut]
    held = [r for r in stored if r.name > cut]
    if not held:
        return commit, 0, None
    return commit, len(held), min(wait - (now - (r.stored_at or 0)) for r in held)


def commit_server(rt: Runtime, server_name: str) -> Batch:
    """Commit every stored WAL of the server that is ready, under one fenced lock."""
    args: ServerArgs = parse_args(ServerArgs, rt.config, {"server": server_name})
    server = rt.config.server(args.server)
    if rt.redis is not None:
        rt.redis.delete(keys.commit_requested(server.name))
    storage = rt.storage(server)
    lock = rt.lock(server.name, "commit")
    token = lock.acquire_within(COMMIT_LOCK_WAIT)
    try:
        wait = min(ORDER_WAIT, rt.config.claim_timeout / 2)  # before a held claim could lapse
        chosen: list[WalRecord] = []
        held, again = 0, None

        def choose(records: list[WalRecord]) -> list[str]:
            nonlocal chosen, held, again
            chosen, held, again = ready(records, time.time(), wait)
            if chosen:
                fault_point("commit")
            return [r.name for r in chosen]

        # the candidates are read in the fenced transaction: one catalog transaction a batch
        committed = set(rt.catalog.commit_ready(server.name, choose, fence=token))
        batch = [r for r in chosen if r.name in committed]
        if batch:
            storage.record_commits(
                [
                    (
                        StoredObject(r.name, r.storage_key or "", r.stored_size or 0),
                        r.mtime or 0.0,
                        r.codec or "none",
                        r.encryption == "gpg",
                    )
                    for r in batch
                ]
            )
            fault_point("commit-removal")
            _remove_sources([r.source_path for r in batch if r.source_path])
    finally:
        lock.release()
    _post_archive_hooks(rt, server, batch)
    return Batch([r.name for r in batch], held, max(1.0, again) if again is not None else None)


def _post_archive_hooks(rt: Runtime, server: ServerConfig, batch: list[WalRecord]) -> None:
    """Barman's post archive hooks for every WAL of the batch, in WAL order, once it is
    committed and the commit lock is released (a slow hook holds up no other commit)."""
    if not batch:
        return
    hooks = archive_hooks(rt.config, server)
    if hooks is None:
        return
    from walq.hooks import WalHookInfo

    storage = rt.storage(server)
    for r in batch:  # the sources are gone: what the chain read, as the catalog recorded it
        before = WalHookInfo(r.name, r.source_path or "", r.size or 0, r.mtime or 0.0, "")
        hooks.post(stored_hook_info(rt.catalog, storage, server, before), None)


def _remove_sources(paths: list[str]) -> None:
    """Unlink committed sources, one directory fsync per directory (after the commit)."""
    parents = set()
    for path in map(Path, paths):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        parents.add(path.parent)
    for parent in parents:
        fsync_dir(parent)


__all__ = ["Batch", "commit_server", "ready", "request_commit"]
