"""put-wal for archive_command: land a WAL in incoming/ atomically and idempotently.

The copy goes to a dot-file (invisible to scans), is fsynced, then published
with link(2), which never replaces an existing file. An identical file already
in incoming/ is success; a different one is refused with a non-zero exit so
PostgreSQL keeps its WAL and retries while the operator looks.

A segment whose size is not its segment size (empty, truncated, padded) is
refused before anything is copied: PostgreSQL keeps it and retries. Only the
first 40 bytes are read to learn the size from the long page header.

``land_wal`` is the whole job given the server's incoming directory; ``put_wal``
(the full CLI) and walq.archive.putwal_fast (archive_command's common case, which
never imports the config model) both call it. This module imports no pydantic.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from walq.errors import ConfigError, DuplicateWalError, InvalidWalError, TransientError
from walq.fsutil import fsync_dir, incoming_mode, makedirs_durable, open_private
from walq.wal import (
    KNOWN_PAGE_MAGICS,
    LONG_HEADER_SIZE,
    MAX_SEG_SIZE,
    MIN_SEG_SIZE,
    XLP_LONG_HEADER,
    PageHeader,
    WalKind,
    WalName,
    WalNameError,
    parse_wal_name,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from walq.config import Config, ServerConfig

MAX_TEXT_FILE_SIZE = (
    1 << 20
)  # .history and .backup: a few lines of text (walq.pipeline.MAX_TEXT_WAL)


def put_wal(config: Config, server_name: str, source: Path) -> str:
    """Copy ``source`` into the server's incoming/; returns 'stored' or 'identical'."""
    server = config.server(server_name)
    return land_wal(
        server.incoming_dir, server.name, source, lambda: _learned_seg_size(config, server)
    )


def land_wal(
    incoming: Path, server_name: str, source: Path, learned_seg_size: Callable[[], int]
) -> str:
    """put-wal's checks and copy: ``source`` into ``incoming`` (created private, or
    group-shared with group_access) as a fsynced, atomically published file.
    ``learned_seg_size`` is asked only for a segment without a usable page header."""
    name = source.name
    try:
        wal = parse_wal_name(name)
    except WalNameError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not source.is_file():
        raise ConfigError(f"{source}: not a regular file")
    size = _check_size(server_name, source, wal, learned_seg_size)
    try:
        makedirs_durable(incoming, incoming_mode())
    except OSError as exc:
        raise ConfigError(
            f"servers.{server_name}.incoming_dir: cannot create {incoming}: {exc.strerror}"
        ) from None
    target = incoming / name
    if target.exists():
        return _compare_existing(source, target)
    tmp = incoming / f".{name}.{os.getpid()}.put"
    try:
        tmp.unlink(missing_ok=True)  # a killed call's leftover under a reused pid
        with (
            open(source, "rb") as fin,
            os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fout,
        ):
            copied = copy_fd(fin.fileno(), fout.fileno())
            if copied != size:
                raise InvalidWalError(
                    f"{source}: changed size while being copied ({size} -> {copied} bytes); not copied"
                )
            os.fsync(fout.fileno())
        st = source.stat()
        os.utime(tmp, (st.st_atime, st.st_mtime))
        try:
            os.link(tmp, target)
        except FileExistsError:
            return _compare_existing(source, target)
        fsync_dir(incoming)
    except OSError as exc:
        raise TransientError(
            f"cannot copy {source} into {incoming}: {exc.strerror or exc}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return "stored"


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def copy_fd(src: int, dst: int) -> int:
    """Copy from ``src``'s offset to EOF into ``dst``; the bytes copied. In the kernel
    (copy_file_range, as cp does) where the filesystems allow: no pass through user
    space, a third of put-wal's CPU on a 16 MiB segment. Else 1 MiB reads and writes."""
    total = 0
    try:
        while n := os.copy_file_range(src, dst, 1 << 30):
            total += n
        return total
    except OSError as exc:
        if total or exc.errno not in _NO_KERNEL_COPY:
            raise
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        total += len(chunk)
    return total


def _check_size(
    server_name: str, source: Path, wal: WalName, learned_seg_size: Callable[[], int]
) -> int:
    """The file's size if it is plausible for its kind; InvalidWalError naming the expected size otherwise."""
    size = source.stat().st_size
    if wal.kind in (WalKind.HISTORY, WalKind.BACKUP):
        if not 0 < size <= MAX_TEXT_FILE_SIZE:
            raise InvalidWalError(
                f"{source}: {size} bytes, expected 1 to {MAX_TEXT_FILE_SIZE} bytes for a {wal.kind} file; not copied"
            )
        return size
    seg_size, where = _expected_seg_size(server_name, source, learned_seg_size)
    if wal.kind is WalKind.PARTIAL:
        if size > (seg_size or MAX_SEG_SIZE):
            raise InvalidWalError(
                f"{source}: {size} bytes, expected at most {seg_size or MAX_SEG_SIZE} ({where}); not copied"
            )
        return size
    if seg_size and size != seg_size:
        raise InvalidWalError(f"{source}: {size} bytes, expected {seg_size} ({where}); not copied")
    if not seg_size and not _valid_seg_size(size):
        raise InvalidWalError(
            f"{source}: {size} bytes, expected a segment size (a power of two from {MIN_SEG_SIZE} to "
            f"{MAX_SEG_SIZE} bytes); not copied"
        )
    return size


def _valid_seg_size(n: int) -> bool:
    return MIN_SEG_SIZE <= n <= MAX_SEG_SIZE and n & (n - 1) == 0


def _expected_seg_size(
    server_name: str, source: Path, learned_seg_size: Callable[[], int]
) -> tuple[int, str]:
    """(segment size, where it comes from): the file's own long page header when it has
    a valid one (40 bytes read, nothing imported), else the size the catalog learned,
    else (0, '') for "any valid segment size"."""
    try:
        with open(source, "rb") as f:
            head = f.read(LONG_HEADER_SIZE)
    except OSError as exc:
        raise TransientError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if len(head) == LONG_HEADER_SIZE:
        hdr = PageHeader.unpack(head)
        if (
            hdr.magic in KNOWN_PAGE_MAGICS
            and hdr.info & XLP_LONG_HEADER
            and _valid_seg_size(hdr.seg_size)
        ):
            return hdr.seg_size, "the segment size in its page header"
    learned = learned_seg_size()
    return (learned, f"servers.{server_name}'s segment size") if learned else (0, "")


def _learned_seg_size(config: Config, server: ServerConfig) -> int:
    """The catalog's wal_segment_size, best effort: only asked about a file without a
    usable header, which put-wal refuses or passes on to the archiver's checks."""
    from walq.archive.identity import known_segment_size
    from walq.catalog import open_catalog

    try:
        catalog = open_catalog(config, readonly=True)
        try:
            value = known_segment_size(catalog, server) or 0
        finally:
            catalog.close()
    except Exception:  # no catalog yet, or unreachable: fall back to any valid size
        return 0
    return value if _valid_seg_size(value) else 0


def _compare_existing(source: Path, target: Path) -> str:
    from walq.chunks import sha256_file  # only a repeated call compares

    if sha256_file(source) == sha256_file(target):
        return "identical"
    raise DuplicateWalError(
        f"{target} already exists with different content; {source} was not copied"
    )
