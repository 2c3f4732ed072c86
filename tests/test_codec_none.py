"""compression = "none": read once (checksum and validate while reading), then the very
inode walq read is hard-linked into the archive, made private, fsynced, its directory
fsynced; across file systems it is copied instead. Restores are byte-exact either way."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.homes import WalqHome

SHM = Path("/dev/shm")


@pytest.fixture
def other_file_system(workdir: Path) -> Iterator[Path]:
    """A private directory on another file system than ``workdir`` (tmpfs at /dev/shm),
    removed afterwards; the test is skipped where there is none."""
    if not SHM.is_dir() or not os.access(SHM, os.W_OK):
        pytest.skip("no writable /dev/shm")
    if SHM.stat().st_dev == workdir.stat().st_dev:
        pytest.skip("/dev/shm is on the test directory's file system")
    path = Path(tempfile.mkdtemp(prefix="walq-none-", dir=SHM))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _restores_exactly(home: WalqHome, names: list[str], wal_corpus) -> None:
    for name in names:
        dest = home.root / f"out-{name}"
        home.run("get-wal", "pg1", name, str(dest), check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()
    res = home.run("verify", "pg1")
    assert res.returncode == 0, res.stdout + res.stderr


def test_put_wal_files_are_private_and_linked_as_they_are(make_home, wal_corpus) -> None:
    """put-wal creates incoming files 0600, so the link shares a private inode."""
    home = make_home({"pg1": {"compression": "none"}})
    names = wal_corpus.segments[:2]
    for name in names:
        home.run("put-wal", "pg1", str(wal_corpus.path(name)), check=True)
    inodes = {}
    for name in names:
        st = (home.incoming() / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600
        inodes[name] = st.st_ino
    home.run("archive", check=True)
    for name in names:
        st = home.stored(name).stat()
        assert (st.st_ino, st.st_nlink, stat.S_IMODE(st.st_mode)) == (inodes[name], 1, 0o600)
    _restores_exactly(home, names, wal_corpus)


def test_a_world_readable_source_is_made_private_when_linked(make_home, wal_corpus) -> None:
    """A file dropped into incoming/ by another tool (cp, umask 022) is 0644: the
    archived link is the same inode, so walq makes that inode private before it counts
    as stored."""
    home = make_home({"pg1": {"compression": "none"}})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[2:4])
    for name in names:
        os.chmod(home.incoming() / name, 0o644)
    inodes = {n: (home.incoming() / n).stat().st_ino for n in names}
    home.run("archive", check=True)
    for name in names:
        st = home.stored(name).stat()
        assert st.st_ino == inodes[name] and stat.S_IMODE(st.st_mode) == 0o600
    _restores_exactly(home, names, wal_corpus)


def test_across_file_systems_the_wal_is_copied(
    make_home, wal_corpus, other_file_system: Path
) -> None:
    """Storage on another file system: no link is possible, so a private copy is written;
    the source's inode is not the archived one and the bytes are the same."""
    wals = other_file_system / "wals"
    home = make_home({"pg1": {"compression": "none", "storage_url": f"file://{wals}"}})
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[4:6])
    sources = {n: (home.incoming() / n).stat() for n in names}
    home.run("archive", check=True)
    for name in names:
        stored = wals / name[:16] / name
        st = stored.stat()
        assert st.st_dev != sources[name].st_dev and st.st_dev == other_file_system.stat().st_dev
        assert st.st_nlink == 1 and stat.S_IMODE(st.st_mode) == 0o600
        assert stored.read_bytes() == wal_corpus.path(name).read_bytes()
        assert not (home.incoming() / name).exists()
    _restores_exactly(home, names, wal_corpus)
