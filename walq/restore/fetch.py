"""Fetch one WAL from the archive into a path, verified: the unit get-wal and the
prefetcher share.

Every byte written is checked against the checksum taken before compression (with
the algorithm its catalog row names, walq.checksums); a
path appears only complete (temp name + rename). ``-`` is standard output, which
gets the bytes only after they were verified.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from walq.catalog import Catalog, WalRecord, WalState, open_catalog
from walq.chunks import Checksum, read_chunks
from walq.codecs import CHUNK_SIZE, DecompressionError
from walq.config import Config, ServerConfig
from walq.errors import (
    ConfigError,
    IntegrityError,
    StorageError,
    TransientError,
    WalqError,
)
from walq.fsutil import open_private
from walq.storage import Storage, StoredObject
from walq.storage.readback import plain_chunks


def open_catalog_for_restore(config: Config) -> Catalog | None:
    """The catalog, read-only if need be; None when there is none (a bare S3 restore)."""
    try:
        return open_catalog(config)
    except WalqError:
        try:
            return open_catalog(config, readonly=True)
        except WalqError:
            return None


STDOUT = "-"  # get-wal's DEST for standard output, as Barman's get-wal writes there


def check_destination(dest: Path) -> None:
    """Refuse, before fetching anything, a DEST get-wal cannot replace atomically.

    DEST must be absent or a regular file in an existing, writable directory. A
    symbolic link is refused too: the rename would replace the link itself (think
    /dev/stdout), not what it points to; ``-`` is the way to standard output."""
    parent = dest.parent
    if not parent.is_dir():
        raise ConfigError(f"destination {dest}: directory {parent} does not exist")
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(f"destination {dest}: {exc.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"destination {dest} is a directory")
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"destination {dest} is a symbolic link (use - for standard output)")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"destination {dest} is not a regular file (use - for standard output)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"destination {dest}: directory {parent} is not writable")


def dest_error(dest: Path | str, exc: OSError) -> TransientError:
    """DEST could not be written: transient, so restore_command fails and PostgreSQL retries."""
    return TransientError(f"cannot write {dest}: {exc.strerror or exc}")


def _copy_verified(
    storage: Storage,
    obj: StoredObject,
    server: ServerConfig,
    record: WalRecord | None,
    out: BinaryIO,
    dest: Path | str,
) -> None:
    """Stream the object's plain bytes into ``out``; raise IntegrityError unless they
    match the catalog's size and checksum. The catalog's size also bounds decompression."""
    summed = Checksum(record.checksum_algorithm if record else None)
    codec = record.codec if record else None
    encrypted = (record.encryption == "gpg") if record and record.encryption else None
    limit = record.size if record is not None and record.size else None
    try:
        for piece in summed.passing(
            plain_chunks(storage, obj, server, codec=codec, encrypted=encrypted, limit=limit)
        ):
            try:
                out.write(piece)
            except OSError as exc:
                raise dest_error(dest, exc) from None
    except DecompressionError as exc:
        raise IntegrityError(f"{obj.name}: stored object {obj.key}: {exc}") from None
    except FileNotFoundError:
        raise  # the object is gone: restore_into looks it up
    except OSError as exc:
        raise StorageError(
            f"{obj.name}: cannot read stored object {obj.key}: {exc.strerror or exc}"
        ) from None
    if record is not None and record.checksum:
        if summed.hexdigest() != record.checksum or (
            record.size is not None and summed.size != record.size
        ):
            raise IntegrityError(
                f"{obj.name}: restored bytes do not match the archived checksum "
                f"({summed.size} bytes, {summed.algorithm} {summed.hexdigest()[:12]}… vs {record.checksum[:12]}…)"
            )
    else:
        print(
            f"walq: warning: {obj.name} has no catalog checksum; served unverified", file=sys.stderr
        )


def write_verified(
    storage: Storage, obj: StoredObject, server: ServerConfig, record: WalRecord | None, dest: Path
) -> None:
    """Stream a stored WAL into ``dest`` via a temp file; verify size and checksum first.

    DEST ``-`` is standard output: the bytes go to an unnamed temp file first, so
    nothing reaches stdout before it is verified."""
    if str(dest) == STDOUT:
        with tempfile.TemporaryFile() as spill:
            _copy_verified(storage, obj, server, record, spill, STDOUT)
            spill.seek(0)
            to_stdout(spill)
        return
    if dest.is_dir():
        raise ConfigError(f"destination {dest} is a directory")
    tmp = dest.with_name(f".{dest.name}.walq-{os.getpid()}")
    try:
        tmp.unlink(
            missing_ok=True
        )  # a killed call's leftover under a reused pid: new file, walq's mode
        out = os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")
    except OSError as exc:
        raise dest_error(dest, exc) from None
    try:
        with out:
            _copy_verified(storage, obj, server, record, out, dest)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise dest_error(dest, exc) from None
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            raise dest_error(dest, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def to_stdout(src: BinaryIO) -> None:
    """Copy a verified file to standard output (a closed pipe is the CLI's to report)."""
    out = sys.stdout.buffer
    for chunk in read_chunks(src, CHUNK_SIZE):
        out.write(chunk)
    out.flush()


def restore_into(
    storage: Storage, server: ServerConfig, record: WalRecord | None, name: str, dest: Path
) -> bool:
    """Restore ``name`` into ``dest``; False when the archive does not hold it.

    An archived catalog row names the object's key, so the object is read
    directly (one GET on S3); only without one, or when that key is gone, is
    the object looked up (a LIST on S3). A key that is not this WAL's key in
    this archive raises StorageKeyError (get-wal exits 2): nothing is served.
    """
    if record is not None and record.storage_key and record.state is WalState.ARCHIVED:
        storage.validate_key(name, record.storage_key)  # a forged row is refused, not served
        known = StoredObject(
            name,
            record.storage_key,
            record.stored_size or 0,
            record.codec,
            record.encryption == "gpg" if record.encryption else None,
        )
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


def fetch_into(
    storage: Storage, server: ServerConfig, record: WalRecord | None, name: str, spool: Path
) -> str:
    """The prefetcher's unit of work: restore ``name`` into the spool; 'ok', 'absent' or 'failed'."""
    try:
        return "ok" if restore_into(storage, server, record, name, spool / name) else "absent"
    except (WalqError, OSError) as exc:
        print(f"walq: warning: prefetch of {name} failed: {exc}", file=sys.stderr)
        return "failed"
