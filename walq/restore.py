"""get-wal for restore_command: fetch, decrypt, decompress, verify, write DEST atomically.

A WAL the archive does not hold raises NotFoundError at once (one stat or one
LIST), because PostgreSQL probes for history files that never exist and must
get a quick "not available". Every byte written is checked against the sha256
taken before compression; DEST appears only complete (temp name + rename).
``prefetch`` restores the next N segments into a spool so the following
restore_command calls are a rename.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from walq import prefetch as prefetch_mod
from walq.catalog import Catalog, WalRecord, WalState, open_catalog
from walq.config import Config, ServerConfig
from walq.errors import ConfigError, IntegrityError, NotFoundError, WalqError
from walq.fsutil import copy_private, open_private
from walq.readback import plain_chunks
from walq.spool_state import wait_for_inflight
from walq.storage import Storage, StoredObject, open_storage
from walq.wal import parse_wal_name


def open_catalog_for_restore(config: Config) -> Catalog | None:
    """The catalog, read-only if need be; None when there is none (a bare S3 restore)."""
    try:
        return open_catalog(config)
    except WalqError:
        try:
            return open_catalog(config, readonly=True)
        except WalqError:
            return None


def write_verified(
    storage: Storage, obj: StoredObject, server: ServerConfig, record: WalRecord | None, dest: Path
) -> None:
    """Stream a stored WAL into ``dest`` via a temp file; verify size and checksum first."""
    if dest.is_dir():
        raise ConfigError(f"destination {dest} is a directory")
    tmp = dest.with_name(f".{dest.name}.walq-{os.getpid()}")
    hasher = hashlib.sha256()
    size = 0
    codec = record.codec if record else None
    encrypted = (record.encryption == "gpg") if record and record.encryption else None
    try:
        tmp.unlink(missing_ok=True)  # a killed call's leftover under a reused pid: new file, walq's mode
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as out:
            for piece in plain_chunks(storage, obj, server, codec=codec, encrypted=encrypted):
                hasher.update(piece)
                size += len(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if record is not None and record.checksum:
            if hasher.hexdigest() != record.checksum or (record.size is not None and size != record.size):
                raise IntegrityError(
                    f"{obj.name}: restored bytes do not match the archived checksum "
                    f"({size} bytes, sha256 {hasher.hexdigest()[:12]}… vs {record.checksum[:12]}…)"
                )
        else:
            print(f"walq: warning: {obj.name} has no catalog checksum; served unverified", file=sys.stderr)
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _move(src: Path, dest: Path) -> None:
    try:
        os.rename(src, dest)
    except OSError:
        tmp = dest.with_name(f".{dest.name}.walq-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        copy_private(src, tmp)
        os.rename(tmp, dest)
        src.unlink(missing_ok=True)


def restore_into(storage: Storage, server: ServerConfig, record: WalRecord | None, name: str, dest: Path) -> bool:
    """Restore ``name`` into ``dest``; False when the archive does not hold it.

    An archived catalog row names the object's key, so the object is read
    directly (one GET on S3); only without one, or when that key is gone, is
    the object looked up (a LIST on S3).
    """
    if record is not None and record.storage_key and record.state is WalState.ARCHIVED:
        known = StoredObject(name, record.storage_key, record.stored_size or 0, record.codec,
                             record.encryption == "gpg" if record.encryption else None)
        try:
            write_verified(storage, known, server, record, dest)
            return True
        except FileNotFoundError:
            pass  # moved or removed behind walq's back: look it up
    obj = storage.find(name)
    if obj is None:
        return False
    write_verified(storage, obj, server, record, dest)
    return True


def fetch_into(storage: Storage, server: ServerConfig, record: WalRecord | None, name: str, spool: Path) -> str:
    """The prefetcher's unit of work: restore ``name`` into the spool; 'ok', 'absent' or 'failed'."""
    try:
        return "ok" if restore_into(storage, server, record, name, spool / name) else "absent"
    except (WalqError, OSError) as exc:
        print(f"walq: warning: prefetch of {name} failed: {exc}", file=sys.stderr)
        return "failed"


def get_wal(config: Config, server_name: str, name: str, dest: Path, prefetch: int = 0) -> str:
    """Restore one WAL into dest; returns 'spool' or 'archive'. NotFoundError if absent.

    With ``prefetch`` a background prefetcher (walq.prefetch) keeps the next
    segments in the spool; a segment it is fetching right now is waited for.
    """
    server = config.server(server_name)
    parse_wal_name(name)
    spool = prefetch_mod.spool_dir(config, server)
    spooled = spool / name
    if not spooled.is_file() and prefetch > 0:
        wait_for_inflight(spool, name)
    if spooled.is_file():
        try:
            _move(spooled, dest)
        except FileNotFoundError:
            pass  # a new prefetcher just dropped it as stale: fetch it from the archive
        else:
            prefetch_mod.start(config, server, name, prefetch)
            return "spool"
    storage = open_storage(server)
    catalog = open_catalog_for_restore(config)
    prefetching = False
    try:
        record = catalog.get(server.name, name) if catalog else None
        if record is not None and record.state is WalState.ARCHIVED:
            # start on the next segments now, while this call fetches its own
            prefetch_mod.start(config, server, name, prefetch, storage, replace=True)
            prefetching = True
        if not restore_into(storage, server, record, name, dest):
            raise NotFoundError(f"{name} is not in the archive of {server.name}")
    finally:
        if catalog is not None:
            catalog.close()
    if catalog is not None and not prefetching:
        prefetch_mod.start(config, server, name, prefetch, storage, replace=True)
    return "archive"
