"""``walq catalog resync``: teach the catalog what others changed in storage.

Barman sharing the home archives into the same tree and deletes WAL with its own
retention; an operator may copy an archive in or delete files by hand. Resync
compares storage with the catalog, under the server's writer lock, and repairs
the catalog:

* an object without a row is read back and validated (name, page header and
  size, system identifier; history and backup files as text) and, if sound,
  adopted: a row ``archived`` with the checksum of its plain bytes, its codec and
  encryption as found, and its xlogdb line when it has none (local storage);
  an object that fails validation is reported and left alone;
* an archived row whose object is gone is marked ``expired`` when it sorts below
  the oldest segment still kept on its timeline (someone's retention deleted
  it), and reported as **lost** otherwise: that is a real hole, recorded in the
  catalog (meta ``lost_wals``) so that ``walq check`` fails until it is resolved;
* the local xlogdb is rewritten without the lines of objects that are gone.

``dry_run`` takes no lock and writes nothing; it reports the same findings.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from walq.archive.identity import server_identity
from walq.catalog import ArchivedInfo, Catalog, WalState, open_catalog
from walq.chunks import Checksum
from walq.codecs import DETECT_BYTES, detect
from walq.config import Config, ServerConfig
from walq.errors import WalqError
from walq.retention.expire import with_writer_lock
from walq.retention.timelines import Lineage, LineageError
from walq.storage import Storage, StoredObject, open_storage
from walq.storage.local import LocalStorage
from walq.storage.readback import READ_CHUNK, looks_encrypted, plain_chunks
from walq.wal import (
    LONG_HEADER_SIZE,
    PageHeader,
    WalKind,
    parse_wal_name,
    segment_number,
    validate_backup_label,
    validate_history,
    validate_segment_header,
)

LOST_META = (
    "lost_wals"  # JSON list of archived rows whose object vanished above the oldest kept segment
)


@dataclass
class ResyncResult:
    server: str
    dry_run: bool
    adopted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    skipped: list[tuple[str, str]] = field(
        default_factory=list
    )  # objects whose row is claimed/failed
    expired: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    xlogdb_removed: int = 0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.rejected


def _found_encoding(storage: Storage, obj: StoredObject, server: ServerConfig) -> tuple[str, bool]:
    """(codec, encrypted) of a stored object: from its key on S3, else from its bytes."""
    with storage.open(obj) as stream:
        head = stream.read(READ_CHUNK)
    encrypted = obj.encrypted if obj.encrypted is not None else looks_encrypted(head)
    if obj.codec is not None:
        return obj.codec, encrypted
    if not encrypted:
        return detect(head[:DETECT_BYTES]) or "none", False
    # encrypted with an unknown codec: decrypt only (codec "none"), and look at the result
    first = next(iter(plain_chunks(storage, obj, server, codec="none", encrypted=True)), b"")
    return detect(first[:DETECT_BYTES]) or "none", True


def _validate(name: str, plain: bytes, sysid: int | None, seg_size: int | None) -> tuple[int, int]:
    """Raise WalqError unless ``plain`` is a sound file of this name; return the
    segment header's (system identifier, segment size), or (0, 0) for text files."""
    wal = parse_wal_name(name)
    if wal.kind is WalKind.HISTORY:
        validate_history(plain)
        return 0, 0
    if wal.kind is WalKind.BACKUP:
        validate_backup_label(plain)
        return 0, 0
    size = len(plain)
    if wal.kind is WalKind.PARTIAL and len(plain) >= LONG_HEADER_SIZE:
        size = max(
            size, PageHeader.unpack(plain[:LONG_HEADER_SIZE]).seg_size
        )  # a partial may be short
    hdr = validate_segment_header(
        plain[:LONG_HEADER_SIZE], wal, size, expected_seg_size=seg_size, system_identifier=sysid
    )
    return hdr.sysid, hdr.seg_size


def _position(name: str, seg_size: int) -> tuple[int, int] | None:
    wal = parse_wal_name(name)
    if wal.kind is WalKind.HISTORY:
        return None
    return wal.tli, segment_number(name[:24], seg_size)


def resync(config: Config, server_name: str, dry_run: bool = False) -> ResyncResult:
    server = config.server(server_name)
    result = ResyncResult(server.name, dry_run)
    storage = open_storage(server)
    with contextlib.ExitStack() as stack:
        if dry_run and not config.catalog_url and not config.catalog_path.exists():
            # no catalog yet: compare with an empty one, creating nothing under home
            from walq.catalog.sqlite import SqliteCatalog

            catalog: Catalog = SqliteCatalog(
                Path(stack.enter_context(tempfile.TemporaryDirectory())) / "empty"
            )
        else:
            catalog = open_catalog(config, readonly=dry_run)
        stack.callback(catalog.close)
        if dry_run:
            _resync(config, server, catalog, storage, result, None)
        else:
            with_writer_lock(
                config,
                server.name,
                lambda fence: _resync(config, server, catalog, storage, result, fence),
            )
    return result


def _resync(
    config: Config,
    server: ServerConfig,
    catalog: Catalog,
    storage: Storage,
    result: ResyncResult,
    fence: int | None,
) -> None:
    dry_run = result.dry_run
    rows = {r.name: r for r in catalog.records(server.name)}
    objects = {o.name: o for o in storage.list()}
    sysid, seg_size = server_identity(catalog, server)

    # 1. objects without a row: read back, validate, adopt
    for name, obj in sorted(objects.items()):
        row = rows.get(name)
        if row is not None:
            if row.state in (WalState.CLAIMED, WalState.FAILED):
                result.skipped.append((name, f"its row is {row.state.value}"))
            continue
        try:
            codec, encrypted = _found_encoding(storage, obj, server)
            plain = b"".join(plain_chunks(storage, obj, server, codec=codec, encrypted=encrypted))
            found_sysid, found_seg = _validate(name, plain, sysid, seg_size)
        except (WalqError, OSError, ValueError) as exc:
            result.rejected.append((name, str(exc)))
            continue
        except Exception as exc:  # codec libraries raise their own types on corrupt data
            result.rejected.append((name, f"cannot be decoded: {exc}"))
            continue
        if found_sysid and not sysid:
            sysid = found_sysid
            if not dry_run:
                catalog.set_meta(server.name, "system_identifier", str(sysid))
        if found_seg and not seg_size:
            seg_size = found_seg
            if not dry_run:
                catalog.set_meta(server.name, "wal_segment_size", str(seg_size))
        result.adopted.append(name)
        if dry_run:
            continue
        mtime = _mtime(storage, obj)
        info = ArchivedInfo(
            size=len(plain),
            stored_size=obj.size,
            codec=codec,
            encryption="gpg" if encrypted else "none",
            checksum=Checksum(server.checksum).of([plain]).hexdigest(),
            checksum_algorithm=server.checksum,
            storage_key=obj.key,
            mtime=mtime,
        )
        catalog.claim(server.name, name, f"resync:{storage.url}", config.claim_timeout, steal=True)
        catalog.mark_archived(server.name, name, info, fence=fence)
        if not storage.has_commit_record(name):
            storage.record_commit(obj, mtime, codec, encrypted)

    # 2. archived rows whose object is gone: expired below the oldest kept segment, else lost
    missing = sorted(
        n for n, r in rows.items() if r.state is WalState.ARCHIVED and n not in objects
    )
    if missing and seg_size:
        lineage = _lineage(storage, server, objects)
        oldest: dict[int, int] = {}
        for name in objects:
            pos = _position(name, seg_size)
            if pos is not None and (pos[0] not in oldest or pos[1] < oldest[pos[0]]):
                oldest[pos[0]] = pos[1]
        for name in missing:
            pos = _position(name, seg_size)
            if pos is None:  # a .history file: never deleted by anyone's retention
                below = False
            elif pos[0] in oldest:
                below = pos[1] < oldest[pos[0]]
            else:  # nothing left of its timeline: gone only if a kept timeline descends from it
                below = lineage is not None and any(lineage.is_ancestor(pos[0], t) for t in oldest)
            (result.expired if below else result.lost).append(name)
    else:
        result.lost.extend(missing)
    if dry_run:
        return
    if result.expired:
        catalog.mark_expired(
            server.name,
            result.expired,
            "resync: deleted outside walq, below the oldest segment kept on its timeline",
            fence=fence,
        )
    catalog.set_meta(server.name, LOST_META, json.dumps(result.lost))

    # 3. the xlogdb lists exactly what storage holds
    if isinstance(storage, LocalStorage):  # S3 has no xlogdb in the bucket
        gone = {name for name in storage.xlogdb_names() if name not in objects}
        result.xlogdb_removed = storage.rewrite_xlogdb(gone) if gone else 0


def _lineage(
    storage: Storage, server: ServerConfig, objects: dict[str, StoredObject]
) -> Lineage | None:
    """Timeline ancestry from the stored history files; None when one cannot be read."""

    def read(name: str) -> bytes:
        return b"".join(plain_chunks(storage, objects[name], server))

    try:
        return Lineage.from_archive(sorted(objects), read)
    except (LineageError, WalqError, OSError, ValueError):
        return None


def _mtime(storage: Storage, obj: StoredObject) -> float:
    if isinstance(storage, LocalStorage):
        try:
            return os.stat(storage.root / obj.key).st_mtime
        except OSError:
            pass
    return time.time()


def lost_wals(catalog: Catalog, server: str) -> list[str]:
    """What the last resync found lost (for walq check)."""
    try:
        return list(json.loads(catalog.get_meta(server, LOST_META) or "[]"))
    except ValueError:
        return []


def print_resync(result: ResyncResult) -> Iterator[str]:
    s = result.server
    would = "would " if result.dry_run else ""
    yield (
        f"{s}: {would}adopt {len(result.adopted)} object(s), {would}expire {len(result.expired)} row(s); "
        f"{len(result.lost)} lost, {len(result.rejected)} refused"
    )
    yield from (f"{s}: {would}adopt {n}" for n in result.adopted)
    yield from (f"{s}: {would}expire {n} (deleted outside walq)" for n in result.expired)
    yield from (
        f"{s}: LOST {n}: the catalog has it, storage does not, and later WAL is kept"
        for n in result.lost
    )
    yield from (f"{s}: refused {n}: {why}" for n, why in result.rejected)
    yield from (f"{s}: skipped {n}: {why}" for n, why in result.skipped)
    if result.xlogdb_removed:
        yield f"{s}: xlogdb: {result.xlogdb_removed} line(s) of vanished objects removed"
