"""Local storage in Barman's exact layout (wal-reference.md section 3).

``<wals>/<TTTTTTTTXXXXXXXX>/<name>`` for segments, .partial and .backup files,
``<wals>/<TTTTTTTT>.history`` for history files, every payload under its bare
WAL name whatever the codec or encryption, and ``<wals>/<server>-xlog.db``
with one ``name size mtime compression encryption`` line per archived WAL.

Writes are hard links from a fully written, fsynced temporary file, so a
second copy of a WAL can never replace the first (link(2) refuses EEXIST).
"""

from __future__ import annotations

import errno
import fcntl
import filecmp
import os
import re
import stat
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from walq.errors import AlreadyStoredError, StorageError, StorageKeyError, clip
from walq.fsutil import (
    OWNED_MARKER,
    copy_private,
    file_mode,
    fsync_dir,
    is_owned,
    make_owned_dir,
    make_private,
    makedirs_durable,
    open_private,
    temp_leftover,
)
from walq.layout import STORAGE_TMP
from walq.storage.base import ObjectStream, PutRequest, StoredObject
from walq.wal import WAL_NAME_RE, WalKind, parse_wal_name

HASH_DIR_RE = re.compile(r"\A[0-9A-Fa-f]{16}\Z")  # fullmatch: "$" accepts a trailing newline
TMP_DIR = STORAGE_TMP  # dot-directory: invisible to Barman's globs; walq's own (marked)


class LocalStorage:
    """Archive WAL into a Barman ``wals/`` directory on a local file system."""

    def __init__(self, root: Path, server: str, lock_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.server = server
        self.url = f"file://{self.root}"
        self.xlogdb = self.root / f"{server}-xlog.db"
        # Barman's xlogdb lock (ServerXLOGDBLock: {barman_lock_directory}/.SERVER-xlogdb.lock);
        # None: only walq's own flock on the xlogdb (no Barman to agree with).
        self.xlogdb_lock_path = (
            Path(lock_dir) / f".{server}-xlogdb.lock" if lock_dir is not None else None
        )

    def path_for(self, name: str) -> Path:
        wal = parse_wal_name(name)
        if wal.kind is WalKind.HISTORY:
            return self.root / name
        return self.root / wal.hash_dir / name

    def key_for(self, name: str) -> str:
        return str(self.path_for(name).relative_to(self.root))

    def validate_key(self, name: str, key: str) -> str:
        """Exactly ``key_for(name)``, and resolving (through any symlink) to that very
        path under the real wals/ directory: never absolute, never '..', never elsewhere."""
        expected = self.key_for(name)
        if key != expected:
            raise StorageKeyError(
                f"storage key {clip(key)} is not where {name} lives in {self.root} (expected {expected!r})"
            )
        root = os.path.realpath(self.root)
        resolved = os.path.realpath(os.path.join(root, key))
        if resolved != os.path.join(root, key):
            raise StorageKeyError(
                f"storage key {key!r} of {name} resolves to {resolved}, not inside {root}"
            )
        return key

    def find(self, name: str) -> StoredObject | None:
        path = self.path_for(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {exc.strerror}") from exc
        return StoredObject(name, self.key_for(name), st.st_size)

    def put(self, request: PutRequest) -> StoredObject:
        final = self.path_for(request.name)
        try:
            makedirs_durable(final.parent)
            tmp = self._stage(request)
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise AlreadyStoredError(f"{final} already exists") from None
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(final.parent)
            size = final.stat().st_size
        except AlreadyStoredError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot write {final}: {exc.strerror or exc}") from exc
        return StoredObject(
            request.name, self.key_for(request.name), size, request.codec, request.encrypted
        )

    def _stage(self, request: PutRequest) -> Path:
        """A durable copy of the payload on this file system, with the WAL's mtime and
        walq's file mode (a linked inode that is not ours to chmod is copied instead)."""
        tmp_dir = make_owned_dir(self.root / TMP_DIR, temp_leftover)
        tmp = tmp_dir / f"{request.name}.{uuid.uuid4().hex}"
        try:
            os.link(request.payload, tmp)  # same file system: no copy at all
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            copy_private(request.payload, tmp)
        else:
            if not make_private(tmp):
                tmp.unlink()
                copy_private(request.payload, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(tmp, (request.mtime, request.mtime))
        return tmp

    def open(self, obj: StoredObject) -> ObjectStream:
        self.validate_key(obj.name, obj.key)
        try:
            return open(self.root / obj.key, "rb")  # caller closes
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot read {self.root / obj.key}: {exc.strerror}") from exc

    def list(self) -> Iterator[StoredObject]:
        try:
            yield from self._list()
        except FileNotFoundError as exc:
            if Path(exc.filename or "") != self.root:
                raise StorageError(f"cannot list {exc.filename}: {exc.strerror}") from exc
        except OSError as exc:
            raise StorageError(
                f"cannot list {exc.filename or self.root}: {exc.strerror or exc}"
            ) from exc

    def _list(self) -> Iterator[StoredObject]:
        entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False) and HASH_DIR_RE.fullmatch(entry.name):
                for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                    if WAL_NAME_RE.fullmatch(sub.name) and sub.is_file(follow_symlinks=False):
                        yield StoredObject(sub.name, f"{entry.name}/{sub.name}", sub.stat().st_size)
            elif entry.name.endswith(".history") and WAL_NAME_RE.fullmatch(entry.name):
                yield StoredObject(entry.name, entry.name, entry.stat().st_size)

    @contextmanager
    def xlogdb_lock(self) -> Iterator[None]:
        """Barman's xlogdb lock, taken as Barman takes it: open (creating it with walq's
        file mode; Barman's own lock file keeps its mode) and a blocking exclusive flock, then its pid as the file's content. Every xlogdb write
        (append or rewrite) holds it, so walq and Barman never lose each other's lines."""
        if self.xlogdb_lock_path is None:
            yield
            return
        try:
            fd = open_private(self.xlogdb_lock_path, os.O_CREAT | os.O_RDWR)
        except OSError as exc:
            raise StorageError(
                f"cannot open Barman's xlogdb lock {self.xlogdb_lock_path}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.ftruncate(fd, len(f"{os.getpid()}\n"))
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def record_commit(self, obj: StoredObject, mtime: float, codec: str, encrypted: bool) -> None:
        self.record_commits([(obj, mtime, codec, encrypted)])

    def record_commits(self, commits: Sequence[tuple[StoredObject, float, str, bool]]) -> None:
        """Append the xlogdb lines of a group commit in one write and one fsync, in the
        order given (the fleet's group commit gives WAL order)."""
        if not commits:
            return
        line = "".join(
            f"{obj.name}\t{obj.size}\t{mtime!r}\t{codec if codec != 'none' else 'None'}\t"
            f"{'gpg' if encrypted else 'None'}\n"
            for obj, mtime, codec, encrypted in commits
        )
        try:
            with self.xlogdb_lock():  # opened under the lock: a rewrite may have replaced the file
                fd = os.open(
                    self.xlogdb, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_mode()
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.write(fd, line.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot append to {self.xlogdb}: {exc.strerror}") from exc

    def xlogdb_names(self) -> Sequence[str]:
        """The WAL name of every xlogdb line, in file order (Barman's lines included)."""
        try:
            with open(self.xlogdb, "rb") as f:
                return [ln.split(b"\t", 1)[0].decode(errors="replace") for ln in f if ln.strip()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read {self.xlogdb}: {exc.strerror or exc}") from exc

    def rewrite_xlogdb(self, drop: Iterable[str]) -> int:
        """Rewrite the xlogdb without the lines of ``drop``, atomically, under Barman's lock:
        a temp file beside it, fsync, rename over it, fsync the directory. Lines of other
        names (Barman's own included) stay byte for byte. Returns how many lines went."""
        gone = set(drop)
        tmp = self.root / f".{self.server}-xlog.db.walq-rewrite"
        try:
            with self.xlogdb_lock():
                try:
                    with open(self.xlogdb, "rb") as f:
                        lines = f.read().splitlines(keepends=True)
                except FileNotFoundError:
                    return 0
                kept = [
                    ln for ln in lines if ln.split(b"\t", 1)[0].decode(errors="replace") not in gone
                ]
                removed = len(lines) - len(kept)
                if not removed:
                    return 0
                mode = stat.S_IMODE(os.stat(self.xlogdb).st_mode)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
                try:
                    os.write(fd, b"".join(kept))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, self.xlogdb)
                fsync_dir(self.root)
                return removed
        except OSError as exc:
            raise StorageError(f"cannot rewrite {self.xlogdb}: {exc.strerror or exc}") from exc

    def delete(self, objs: Iterable[StoredObject]) -> None:
        dirs: set[Path] = set()
        try:
            for obj in objs:
                path = self.root / self.validate_key(obj.name, obj.key)
                with suppress(FileNotFoundError):
                    os.unlink(path)
                dirs.add(path.parent)
            for d in sorted(dirs):
                if d == self.root or not d.is_dir():
                    continue
                fsync_dir(d)
                try:
                    os.rmdir(d)  # only when empty: Barman's own files keep the directory
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
            fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(f"cannot delete from {self.root}: {exc.strerror or exc}") from exc

    def has_commit_record(self, name: str) -> bool:
        try:
            with open(self.xlogdb, "rb") as f:
                prefix = name.encode() + b"\t"
                return any(line.startswith(prefix) for line in f)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot read {self.xlogdb}: {exc.strerror or exc}") from exc

    def check(self) -> None:
        try:
            makedirs_durable(self.root)
            probe = make_owned_dir(self.root / TMP_DIR, temp_leftover)
            test = probe / f"check.{uuid.uuid4().hex}"
            os.close(open_private(test, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            test.unlink()
        except OSError as exc:
            raise StorageError(
                f"storage {self.root} is not writable: {exc.strerror or exc}"
            ) from exc

    def cleanup(self) -> int:
        """Drop temp files a killed run left; only in walq's own (marked) temp dir, files only."""
        tmp_dir = self.root / TMP_DIR
        if not tmp_dir.exists() and not tmp_dir.is_symlink():
            return 0
        if not is_owned(tmp_dir):
            make_owned_dir(
                tmp_dir, temp_leftover
            )  # adopts an earlier walq's; refuses anything else
        removed = 0
        try:
            for entry in os.scandir(tmp_dir):
                if entry.name != OWNED_MARKER and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot clean {tmp_dir}: {exc.strerror or exc}") from exc
        return removed

    def written_from(self, obj: StoredObject, payload: Path, checksum: str, algorithm: str) -> bool:
        """``put`` links the payload's own inode into wals/ (same file system), else
        copies it: the stored file is that inode, or a regular file with its bytes."""
        final = self.root / self.validate_key(obj.name, obj.key)
        try:
            stored, source = os.lstat(final), os.lstat(payload)
        except FileNotFoundError:
            return False
        if not (stat.S_ISREG(stored.st_mode) and stat.S_ISREG(source.st_mode)):
            return False
        if (stored.st_dev, stored.st_ino) == (source.st_dev, source.st_ino):
            return True
        return stored.st_size == source.st_size and filecmp.cmp(final, payload, shallow=False)

    def stored_checksum(self, obj: StoredObject, algorithm: str) -> str | None:
        return None
