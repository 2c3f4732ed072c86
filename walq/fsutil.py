"""File-system primitives: fsync of files and directories, private modes, owned directories.

Modes: everything walq creates is private to its owner (files 0600, directories
0700) whatever the umask, because WAL holds every row the database wrote. The
top-level ``group_access = true`` widens that to 0640 / 0750, for installations
where walq and PostgreSQL run as different users of one group.

Owned directories: walq deletes recursively only inside a directory it created
itself and marked with ``OWNED_MARKER``; a directory without the marker (an
operator's directory, a misconfigured path, a symlink) is left alone.

put-wal's fast path imports this module on PostgreSQL's critical path, so it imports
only what the interpreter has already loaded (os, stat, sys, errno): ``pathlib``,
``re`` and ``shutil`` are imported inside the functions that need them, which that
path never calls (tests/test_putwal_fast.py pins the set).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from walq.errors import NotOwnedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import re
    from collections.abc import Callable
    from pathlib import Path

OWNED_MARKER = ".walq-owned"
_MARKER_TEXT = b"created by walq: walq may delete this directory and everything in it\n"

_group_access = False


def set_group_access(enabled: bool) -> None:
    """Called once the configuration is loaded (``group_access``), in every process."""
    global _group_access
    _group_access = bool(enabled)


def file_mode() -> int:
    return 0o640 if _group_access else 0o600


def dir_mode() -> int:
    return 0o750 if _group_access else 0o700


def incoming_mode() -> int:
    """incoming/ is where PostgreSQL's put-wal adds files and ``walq archive`` removes them:
    with ``group_access`` both may be different users of one group (setgid keeps the group)."""
    return 0o2770 if _group_access else 0o700


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str | os.PathLike[str], mode: int | None = None) -> None:
    """Create missing directories and fsync each new one's parent. Each gets walq's
    directory mode (private unless ``group_access``); ``mode``, if given, is the leaf's.
    String paths (os.path), not pathlib: put-wal's fast path calls this."""
    given = os.fspath(path)
    leaf = given.rstrip("/") or ("/" if given else ".")  # as pathlib reads "a/", "/" and ""
    missing = []
    p = leaf
    while not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p) or "."
    for d in reversed(missing):
        wanted = mode if mode is not None and d == leaf else dir_mode()
        try:
            os.mkdir(d, wanted & 0o777)
        except FileExistsError:
            continue
        os.chmod(d, wanted)  # exact, whatever the umask
        fsync_dir(os.path.dirname(d) or ".")
    if not os.path.isdir(leaf):  # an existing file (or a link to one) is no directory to use
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))


def open_private(
    path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
) -> int:
    """os.open with walq's file mode, exact whatever the umask. An existing file walq owns
    gets that mode too; one that another user owns (a lock shared with Barman) keeps its own."""
    fd = os.open(path, flags | os.O_CLOEXEC, file_mode())
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != file_mode():
            os.fchmod(fd, file_mode())
    except PermissionError:
        pass
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(
    path: str | os.PathLike[str], data: bytes | str, *, exclusive: bool = False
) -> None:
    """Write a small file with walq's file mode (``exclusive``: never an existing file)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    with os.fdopen(open_private(path, flags), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def make_private(path: str | os.PathLike[str]) -> bool:
    """Give a file walq now holds (moved or linked in) walq's mode, never following a
    symlink; False when it is not ours to change (another owner) or not a regular file."""
    try:
        before = os.lstat(path)
        if not (stat.S_ISREG(before.st_mode) or stat.S_ISDIR(before.st_mode)):
            return False  # never open a device, FIFO or socket
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            return False
        if stat.S_ISREG(st.st_mode):
            if stat.S_IMODE(st.st_mode) != file_mode():
                os.fchmod(fd, file_mode())
            return True
        if stat.S_ISDIR(st.st_mode):
            if stat.S_IMODE(st.st_mode) != dir_mode():
                os.fchmod(fd, dir_mode())
            return True
        return False
    except PermissionError:
        return False
    finally:
        os.close(fd)


def copy_private(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """copyfile, but ``dst`` is created new (never through an existing name) with walq's mode."""
    with (
        open(src, "rb") as fin,
        os.fdopen(open_private(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fout,
    ):
        import shutil  # here, not above: put-wal's fast path imports this module

        shutil.copyfileobj(fin, fout, 1 << 20)


# -- owned directories ------------------------------------------------------------------


def _is_real_dir(path: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def is_owned(path: str | os.PathLike[str]) -> bool:
    """A real directory (not a symlink) carrying walq's marker file."""
    if not _is_real_dir(path):
        return False
    try:
        return stat.S_ISREG(os.lstat(os.path.join(path, OWNED_MARKER)).st_mode)
    except FileNotFoundError:
        return False


def _mark(path: Path) -> None:
    tmp = path / f"{OWNED_MARKER}.{os.getpid()}"
    write_private(tmp, _MARKER_TEXT)
    os.replace(tmp, path / OWNED_MARKER)


def make_owned_dir(
    path: str | os.PathLike[str], adoptable: Callable[[os.DirEntry[str]], bool] | None = None
) -> Path:
    """Create ``path`` (parents as plain private directories) and mark it as walq's own.

    An existing unmarked directory is adopted only when it is empty or, with
    ``adoptable``, when every entry in it is something walq itself puts there
    (an earlier walq version's leftovers); otherwise NotOwnedError names it and
    nothing is touched. A symlink is never adopted.
    """
    from pathlib import Path  # here, not above: put-wal's fast path imports this module

    p = Path(path)
    if is_owned(p):
        return p
    if not p.exists() and not p.is_symlink():
        makedirs_durable(p.parent)
        try:
            p.mkdir(mode=dir_mode())
            os.chmod(p, dir_mode())
        except FileExistsError:
            pass
        else:
            _mark(p)
            fsync_dir(p.parent)
            return p
        if is_owned(p):
            return p
    if not _is_real_dir(p):
        raise NotOwnedError(
            f"{p} is not a directory walq created (a symlink or a file); walq leaves it alone"
        )
    with os.scandir(p) as it:
        strangers = [
            e.name for e in it if e.name != OWNED_MARKER and not (adoptable and adoptable(e))
        ]
    if strangers:
        raise NotOwnedError(
            f"{p} exists and was not created by walq (no {OWNED_MARKER} marker, holds {strangers[0]!r}); "
            "walq never deletes from it: move it away or empty it"
        )
    _mark(p)
    return p


def remove_owned_tree(path: str | os.PathLike[str]) -> bool:
    """rmtree ``path`` only if it is a real directory carrying walq's marker (symlinks are
    never followed, inside it neither). Returns True if removed or absent; an unmarked
    directory is left alone with a warning on stderr and False."""
    from pathlib import Path  # here, not above: put-wal's fast path imports this module

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return True
    if not is_owned(p):
        print(
            f"walq: warning: {p} was not created by walq (no {OWNED_MARKER} marker); left alone",
            file=sys.stderr,
        )
        return False
    import shutil  # here, not above: put-wal's fast path imports this module

    shutil.rmtree(p, ignore_errors=True)  # the fd-based rmtree never follows symlinks
    return not p.exists()


# What earlier walq versions left in directories they created before the marker existed,
# so that an upgrade adopts them instead of refusing to start. Compiled on first use:
# put-wal's fast path imports this module and must not import re.
_WAL = r"[0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history)"
_LEFTOVER_PATTERNS = {
    "spool": rf"\.?{_WAL}\.(?:incoming|streaming)(?:\.[a-z0-9]+)*",
    "restore": rf"{_WAL}|\.prefetch\.[a-z.0-9]+|\.{_WAL}\.walq-[0-9]+",
    "chain": r"[0-9a-f]{32}",
}
_compiled: dict[str, re.Pattern[str]] = {}


def _leftover(kind: str, name: str) -> bool:
    pattern = _compiled.get(kind)
    if pattern is None:
        import re

        pattern = _compiled[kind] = re.compile(_LEFTOVER_PATTERNS[kind])
    return pattern.fullmatch(name) is not None


def spool_leftover(entry: os.DirEntry[str]) -> bool:
    """A payload (or its .part) in an archive spool, or a fleet chain's directory."""
    if entry.is_dir(follow_symlinks=False):
        return _leftover("chain", entry.name)
    return entry.is_file(follow_symlinks=False) and _leftover("spool", entry.name)


def restore_spool_leftover(entry: os.DirEntry[str]) -> bool:
    """A restored segment, a prefetcher's state file or its temp file in a restore spool."""
    return entry.is_file(follow_symlinks=False) and _leftover("restore", entry.name)


def temp_leftover(entry: os.DirEntry[str]) -> bool:
    """Any regular file in local storage's .walq-tmp (only walq writes there)."""
    return entry.is_file(follow_symlinks=False)
