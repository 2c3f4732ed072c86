"""get-wal --partial: the end of a stream, for a segment the archive does not hold.

pg_receivewal writes the segment in progress as ``X.partial`` and the scan keeps
the newest one back for it, so a streaming-only archive ends one segment short
of what the receiver flushed. With ``--partial`` (Barman's get-wal and
barman-wal-restore option) a segment missing from the archive is served from,
in order: an archived ``X.partial`` (the last segment of a timeline after a
promotion or a timeline switch); ``streaming/X.partial`` (the receiver's segment
in progress); ``streaming/X`` (pg_receivewal completed it meanwhile, or it is the
newest complete segment held back). Recovery replays it up to the last record
the receiver got, finds zeros after it, and ends there.

A streamed file is served only when it holds WAL: its header must match its
name, the server's segment size and system identifier; a 0-byte or zero-filled
``.partial`` (pg_receivewal has not written into it yet) is "not available".
DEST is written like every get-wal destination: a private temp name, fsync, rename.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from walq.catalog import WalRecord
from walq.chunks import read_chunks
from walq.codecs import CHUNK_SIZE
from walq.config import ServerConfig
from walq.errors import InvalidWalError, TransientError
from walq.fsutil import open_private
from walq.restore.fetch import STDOUT, dest_error, restore_into, to_stdout
from walq.storage import Storage
from walq.wal import LONG_HEADER_SIZE, WalName, validate_segment_header

PARTIAL = ".partial"


def serve_partial(
    storage: Storage,
    server: ServerConfig,
    wal: WalName,
    archived_partial: WalRecord | None,
    dest: Path,
    *,
    seg_size: int | None,
    system_identifier: int | None,
) -> str | None:
    """Write the end of the stream for segment ``wal`` into ``dest``; where it came from,
    or None when neither the archive nor streaming/ has it."""
    name = wal.name
    if restore_into(storage, server, archived_partial, name + PARTIAL, dest):
        return f"the archived {name}{PARTIAL}"
    for candidate in (name + PARTIAL, name):
        path = server.streaming_dir / candidate
        if copy_streamed(path, wal, dest, seg_size, system_identifier):
            return str(path)
    return None


def copy_streamed(
    path: Path, wal: WalName, dest: Path, seg_size: int | None, system_identifier: int | None
) -> bool:
    """Copy a streamed segment (complete or in progress) into ``dest``; False when it is
    absent or holds no WAL yet. InvalidWalError when it is not this server's segment."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:  # unreadable for PostgreSQL's user, say: not the WAL's fault
        raise TransientError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidWalError(f"{path} is not a regular file")
        head = src.read(LONG_HEADER_SIZE)
        if len(head) < LONG_HEADER_SIZE or not any(head):
            return False  # pg_receivewal created it and has written nothing yet
        hdr = validate_segment_header(
            head,
            wal,
            st.st_size,
            expected_seg_size=seg_size,
            system_identifier=system_identifier,
        )
        src.seek(0)
        _write_atomically(dest, _exactly(src, hdr.seg_size, path))
    return True


def _exactly(src: BinaryIO, size: int, path: Path) -> Iterator[bytes]:
    """The file's first ``size`` bytes; InvalidWalError if it shrank while being read."""
    left = size
    for chunk in read_chunks(src, CHUNK_SIZE):
        piece = chunk[:left]
        left -= len(piece)
        yield piece
        if not left:
            return
    raise InvalidWalError(f"{path} shrank while it was read ({size - left} of {size} bytes)")


def _write_atomically(dest: Path, chunks: Iterator[bytes]) -> None:
    """Everything or nothing at ``dest`` (temp name, fsync, rename); ``-`` is standard output,
    which gets the bytes only once all were read."""
    if str(dest) == STDOUT:
        with tempfile.TemporaryFile() as spill:
            for chunk in chunks:
                spill.write(chunk)
            spill.seek(0)
            to_stdout(spill)
        return
    tmp = dest.with_name(f".{dest.name}.walq-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        out = os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")
    except OSError as exc:
        raise dest_error(dest, exc) from None
    try:
        with out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise dest_error(dest, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def announce(name: str, source: str) -> None:
    """One line for PostgreSQL's log: recovery will end inside this segment."""
    print(f"walq: served {name} from {source} (the end of the stream)", file=sys.stderr)
