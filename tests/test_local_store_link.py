"""Local storage stores a spool payload by hard link when the spool is on the archive's
file system (no second write of the compressed bytes), and by a private copy when it
is not; either way durable, never overwriting, with walq's file mode and the WAL's mtime."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from walq.errors import AlreadyStoredError
from walq.fsutil import OWNED_MARKER, file_mode
from walq.layout import STORAGE_TMP
from walq.storage.base import PutRequest
from walq.storage.local import LocalStorage

WAL = "000000010000000000000007"
MTIME = 1_700_000_000.0


def _payload(directory: Path, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{WAL}.incoming.zst"
    path.write_bytes(data)
    os.chmod(path, 0o644)  # as a umask might leave it: storage gives it walq's mode
    return path


def _request(payload: Path) -> PutRequest:
    return PutRequest(WAL, payload, "zstd", False, MTIME, "0" * 64, "blake3")


def _no_temp_left(root: Path) -> None:
    assert sorted(os.listdir(root / STORAGE_TMP)) == [OWNED_MARKER]


def test_same_file_system_links_the_payload(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "wals", "pg1")
    payload = _payload(tmp_path / "spool", b"compressed bytes" * 1000)
    obj = storage.put(_request(payload))
    stored = tmp_path / "wals" / obj.key
    st, src = os.lstat(stored), os.lstat(payload)
    assert (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino), "linked, not copied"
    assert st.st_nlink == 2  # the spool's name and the archive's; the spool goes after
    assert stat.S_IMODE(st.st_mode) == file_mode() and st.st_mtime == MTIME
    assert storage.written_from(obj, payload, "0" * 64, "blake3")
    _no_temp_left(tmp_path / "wals")
    with pytest.raises(AlreadyStoredError):
        storage.put(_request(_payload(tmp_path / "spool2", b"other bytes")))
    assert stored.read_bytes() == b"compressed bytes" * 1000


def test_another_file_system_copies_the_payload(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (/dev/shm) beside the test directory")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        data = os.urandom(3 << 20)
        payload = _payload(Path(other), data)
        storage = LocalStorage(tmp_path / "wals", "pg1")
        obj = storage.put(_request(payload))
        stored = tmp_path / "wals" / obj.key
        st = os.lstat(stored)
        assert st.st_dev != os.lstat(payload).st_dev, "a copy on the archive's file system"
        assert st.st_nlink == 1 and stored.read_bytes() == data
        assert stat.S_IMODE(st.st_mode) == file_mode() and st.st_mtime == MTIME
        assert storage.written_from(obj, payload, "0" * 64, "blake3")
        _no_temp_left(tmp_path / "wals")
