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

from walq.errors import ConfigError, DuplicateWalError, InvalidWalError, TransientError
from walq.fsutil import fsync_dir, incoming_mode, makedirs_durable, open_private
from walq.walcheck import (
    BACKUP,
    HISTORY,
    LONG_HEADER_SIZE,
    MAX_SEG_SIZE,
    MIN_SEG_SIZE,
    PARTIAL,
    header_seg_size,
    is_seg_size,
    split_wal_name,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from walq.config import Config, ServerConfig

MAX_TEXT_FILE_SIZE = (
    1 << 20
)  # .history and .backup: a few lines of text (walq.pipeline.MAX_TEXT_WAL)


def put_wal(config: Config, server_name: str, source: Path) -> str:
    """Copy ``source`` into the server's incoming/; returns 'stored' or 'identical'."""
    server = config.server(server_name)
    return land_wal(
        str(server.incoming_dir),
        server.name,
        str(source),
        lambda: _learned_seg_size(config, server),
    )


def land_wal(
    incoming: str, server_name: str, source: str, learned_seg_size: Callable[[], int]
) -> str:
    """put-wal's checks and copy: ``source`` into ``incoming`` (created private, or
    group-shared with group_access) as a fsynced, atomically published file.
    ``learned_seg_size`` is asked only for a segment without a usable page header.
    String paths and walq.walcheck, not pathlib and walq.wal: the fast path's imports."""
    name = os.path.basename(source)
    split = split_wal_name(name)
    if split is None or split[1] == 0:
        from walq.wal import parse_wal_name  # its error names what is wrong with the name

        try:
            parse_wal_name(name)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        raise AssertionError(f"{name!r}: walq.walcheck and walq.wal disagree")  # unreachable
    kind = split[0]
    if not os.path.isfile(source):
        raise ConfigError(f"{source}: not a regular file")
    size = _check_size(server_name, source, kind, learned_seg_size)
    try:
        makedirs_durable(incoming, incoming_mode())
    except OSError as exc:
        raise ConfigError(
            f"servers.{server_name}.incoming_dir: cannot create {incoming}: {exc.strerror}"
        ) from None
    target = os.path.join(incoming, name)
    if os.path.exists(target):
        return _compare_existing(source, target)
    tmp = os.path.join(incoming, f".{name}.{os.getpid()}.put")
    try:
        _unlink_if_there(tmp)  # a killed call's leftover under a reused pid
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
        st = os.stat(source)
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
        _unlink_if_there(tmp)
    return "stored"


def _unlink_if_there(path: str) -> None:
    try:  # noqa: SIM105 (contextlib.suppress: one import more per archive_command call)
        os.unlink(path)
    except FileNotFoundError:
        pass


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
    server_name: str, source: str, kind: str, learned_seg_size: Callable[[], int]
) -> int:
    """The file's size if it is plausible for its kind (walq.walcheck's kind names);
    InvalidWalError naming the expected size otherwise."""
    size = os.stat(source).st_size
    if kind in (HISTORY, BACKUP):
        if not 0 < size <= MAX_TEXT_FILE_SIZE:
            raise InvalidWalError(
                f"{source}: {size} bytes, expected 1 to {MAX_TEXT_FILE_SIZE} bytes for a {kind} file; not copied"
            )
        return size
    seg_size, where = _expected_seg_size(server_name, source, learned_seg_size)
    if kind == PARTIAL:
        if size > (seg_size or MAX_SEG_SIZE):
            raise InvalidWalError(
                f"{source}: {size} bytes, expected at most {seg_size or MAX_SEG_SIZE} ({where}); not copied"
            )
        return size
    if seg_size and size != seg_size:
        raise InvalidWalError(f"{source}: {size} bytes, expected {seg_size} ({where}); not copied")
    if not seg_size and not is_seg_size(size):
        raise InvalidWalError(
            f"{source}: {size} bytes, expected a segment size (a power of two from {MIN_SEG_SIZE} to "
            f"{MAX_SEG_SIZE} bytes); not copied"
        )
    return size


def _expected_seg_size(
    server_name: str, source: str, learned_seg_size: Callable[[], int]
) -> tuple[int, str]:
    """(segment size, where it comes from): the file's own long page header when it has
    a valid one (40 bytes read, nothing imported), else the size the catalog learned,
    else (0, '') for "any valid segment size"."""
    try:
        with open(source, "rb") as f:
            head = f.read(LONG_HEADER_SIZE)
    except OSError as exc:
        raise TransientError(f"cannot read {source}: {exc.strerror or exc}") from exc
    seg_size = header_seg_size(head)
    if seg_size:
        return seg_size, "the segment size in its page header"
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
    return value if is_seg_size(value) else 0


def _compare_existing(source: str, target: str) -> str:
    """'identical' when ``target`` holds exactly ``source``'s bytes (compared directly,
    1 MiB at a time: no hash to import or compute); DuplicateWalError otherwise."""
    with open(source, "rb") as a, open(target, "rb") as b:
        same = os.fstat(a.fileno()).st_size == os.fstat(b.fileno()).st_size
        while same:
            chunk = a.read(1 << 20)
            same = chunk == b.read(1 << 20)
            if not chunk:
                break
    if same:
        return "identical"
    raise DuplicateWalError(
        f"{target} already exists with different content; {source} was not copied"
    )
