"""put-wal for archive_command: land a WAL in incoming/ atomically and idempotently.

The copy goes to a dot-file (invisible to scans), is fsynced, then published
with link(2), which never replaces an existing file. An identical file already
in incoming/ is success; a different one is refused with a non-zero exit so
PostgreSQL keeps its WAL and retries while the operator looks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from walq.config import Config
from walq.errors import ConfigError, DuplicateWalError, TransientError
from walq.fsutil import fsync_dir, incoming_mode, makedirs_durable, open_private
from walq.wal import WalNameError, parse_wal_name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def put_wal(config: Config, server_name: str, source: Path) -> str:
    """Copy ``source`` into the server's incoming/; returns 'stored' or 'identical'."""
    server = config.server(server_name)
    name = source.name
    try:
        parse_wal_name(name)
    except WalNameError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not source.is_file():
        raise ConfigError(f"{source}: not a regular file")
    incoming = server.incoming_dir
    assert incoming is not None
    try:
        makedirs_durable(incoming, incoming_mode())
    except OSError as exc:
        raise ConfigError(f"servers.{server.name}.incoming_dir: cannot create {incoming}: {exc.strerror}") from None
    target = incoming / name
    if target.exists():
        return _compare_existing(source, target)
    tmp = incoming / f".{name}.{os.getpid()}.put"
    try:
        tmp.unlink(missing_ok=True)  # a killed call's leftover under a reused pid
        with open(source, "rb") as fin, os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        st = source.stat()
        os.utime(tmp, (st.st_atime, st.st_mtime))
        try:
            os.link(tmp, target)
        except FileExistsError:
            return _compare_existing(source, target)
        fsync_dir(incoming)
    except OSError as exc:
        raise TransientError(f"cannot copy {source} into {incoming}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return "stored"


def _compare_existing(source: Path, target: Path) -> str:
    if _sha256(source) == _sha256(target):
        return "identical"
    raise DuplicateWalError(f"{target} already exists with different content; {source} was not copied")
