"""get-wal for restore_command: serve one WAL from the restore spool or the archive.

A WAL the archive does not hold raises NotFoundError at once (one stat or one
LIST), because PostgreSQL probes for history files that never exist and must
get a quick "not available". The bytes are fetched and verified by
walq.restore.fetch; ``prefetch`` starts walq.restore.prefetch, which restores the
next N segments into a spool so the following restore_command calls are a rename
(walq.restore.spool_hit). ``partial`` serves the end of the stream for a segment
the archive does not hold (walq.restore.partial); without it nothing else changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from walq.archive.identity import server_identity
from walq.catalog import WalRecord, WalState
from walq.config import Config, ServerConfig
from walq.errors import NotFoundError
from walq.fsutil import copy_private
from walq.restore import prefetch as prefetcher
from walq.restore.fetch import (
    STDOUT,
    check_destination,
    dest_error,
    open_catalog_for_restore,
    restore_into,
    to_stdout,
)
from walq.restore.partial import PARTIAL, announce, serve_partial
from walq.restore.spool import wait_for_inflight
from walq.storage import Storage, open_storage
from walq.wal import WalKind, parse_wal_name


def _move(src: Path, dest: Path) -> None:
    """Place a spooled copy at DEST: a rename, else a private copy (another file system)."""
    if str(dest) == STDOUT:
        with open(src, "rb") as f:
            to_stdout(f)
        src.unlink(missing_ok=True)
        return
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        raise  # the spooled copy is gone: the caller fetches from the archive
    except OSError:
        tmp = dest.with_name(f".{dest.name}.walq-{os.getpid()}")
        try:
            tmp.unlink(missing_ok=True)
            copy_private(src, tmp)
            os.rename(tmp, dest)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise dest_error(dest, exc) from None
        src.unlink(missing_ok=True)


def get_wal(
    config: Config,
    server_name: str,
    name: str,
    dest: Path,
    prefetch: int = 0,
    partial: bool = False,
) -> str:
    """Restore one WAL into dest; returns 'spool', 'archive' or 'partial'. NotFoundError if absent.

    With ``prefetch`` a background prefetcher (walq.restore.prefetch) keeps the next
    segments in the spool; a segment it is fetching right now is waited for. With
    ``partial`` a segment the archive does not hold is served from its ``.partial``.
    """
    server = config.server(server_name)
    wal = parse_wal_name(name)
    partial = partial and wal.kind is WalKind.SEGMENT
    if str(dest) != STDOUT:
        check_destination(dest)
    spool = prefetcher.spool_dir(config, server)
    spooled = spool / name
    if not spooled.is_file() and prefetch > 0:
        wait_for_inflight(spool, name)
    if spooled.is_file():
        try:
            _move(spooled, dest)
        except FileNotFoundError:
            pass  # a new prefetcher just dropped it as stale: fetch it from the archive
        else:
            prefetcher.start(config, server, name, prefetch)
            return "spool"
    storage = open_storage(server)
    catalog = open_catalog_for_restore(config)
    partial_record: WalRecord | None = None
    sysid = seg_size = None
    try:
        record = catalog.get(server.name, name) if catalog else None
        if partial and catalog is not None:
            partial_record = catalog.get(server.name, name + PARTIAL)
            sysid, seg_size = server_identity(catalog, server)
    finally:
        if catalog is not None:
            catalog.close()  # before the prefetcher forks: a SQLite connection must not cross a fork
    prefetching = False
    if record is not None and record.state is WalState.ARCHIVED:
        # start on the next segments now, while this call fetches its own
        prefetcher.start(config, server, name, prefetch, storage, replace=True)
        prefetching = True
    if not restore_into(storage, server, record, name, dest):
        if partial:
            source = serve_partial(
                storage,
                server,
                wal,
                partial_record,
                dest,
                seg_size=seg_size,
                system_identifier=sysid,
            )
            if source is not None:
                announce(name, source)
                return "partial"
            if _archived_meanwhile(config, storage, server, name, dest):
                return "archive"
            raise NotFoundError(
                f"{name} is not in the archive of {server.name}, nor a .partial of it"
            )
        raise NotFoundError(f"{name} is not in the archive of {server.name}")
    if catalog is not None and not prefetching:
        prefetcher.start(config, server, name, prefetch, storage, replace=True)
    return "archive"


def _archived_meanwhile(
    config: Config, storage: Storage, server: ServerConfig, name: str, dest: Path
) -> bool:
    """The scan may have archived the segment while --partial looked in streaming/ (Barman
    looks in the archive once more, too): serve it from there, verified."""
    catalog = open_catalog_for_restore(config)
    try:
        record = catalog.get(server.name, name) if catalog else None
    finally:
        if catalog is not None:
            catalog.close()
    if catalog is not None and (record is None or record.state is not WalState.ARCHIVED):
        return False
    return restore_into(storage, server, record, name, dest)
