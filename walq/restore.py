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
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from walq.catalog import Catalog, WalRecord, open_catalog
from walq.config import Config, ServerConfig
from walq.errors import ConfigError, IntegrityError, NotFoundError, WalqError
from walq.readback import plain_chunks
from walq.storage import Storage, StoredObject, open_storage
from walq.wal import WalKind, next_segment, parse_wal_name


def restore_spool(config: Config, server: ServerConfig) -> Path:
    return config.home / "restore-spool" / server.name


def _open_catalog(config: Config) -> Catalog | None:
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
        with open(tmp, "wb") as out:
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
        shutil.copyfile(src, tmp)
        os.rename(tmp, dest)
        src.unlink(missing_ok=True)


def get_wal(config: Config, server_name: str, name: str, dest: Path, prefetch: int = 0) -> str:
    """Restore one WAL into dest; returns 'spool' or 'archive'. NotFoundError if absent."""
    server = config.server(server_name)
    wal = parse_wal_name(name)
    spool = restore_spool(config, server)
    spooled = spool / name
    if spooled.is_file():
        _move(spooled, dest)
        return "spool"
    storage = open_storage(server)
    obj = storage.find(name)
    if obj is None:
        raise NotFoundError(f"{name} is not in the archive of {server.name}")
    catalog = _open_catalog(config)
    try:
        record = catalog.get(server.name, name) if catalog else None
        write_verified(storage, obj, server, record, dest)
        if prefetch > 0 and wal.kind is WalKind.SEGMENT and catalog is not None:
            _prefetch(storage, server, catalog, name, prefetch, spool)
    finally:
        if catalog is not None:
            catalog.close()
    return "archive"


def _prefetch(storage: Storage, server: ServerConfig, catalog: Catalog, name: str, count: int, spool: Path) -> None:
    """Restore up to ``count`` following segments into the spool, in parallel."""
    seg_size = int(catalog.get_meta(server.name, "wal_segment_size") or 0)
    if not seg_size:
        return
    wanted: list[str] = []
    current = name
    for _ in range(count):
        current = next_segment(current, seg_size)
        wanted.append(current)
    try:
        spool.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"walq: warning: prefetch disabled, cannot create {spool}: {exc.strerror}", file=sys.stderr)
        return
    records = {n: catalog.get(server.name, n) for n in wanted}

    def fetch(n: str) -> None:
        target = spool / n
        if target.exists():
            return
        obj = storage.find(n)
        if obj is None:
            return
        try:
            write_verified(storage, obj, server, records[n], target)
        except (WalqError, OSError) as exc:
            print(f"walq: warning: prefetch of {n} failed: {exc}", file=sys.stderr)

    with ThreadPoolExecutor(max_workers=min(8, count)) as pool:
        list(pool.map(fetch, wanted))
