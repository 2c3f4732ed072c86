"""The one storage protocol both backends (local, s3) implement.

Backends store opaque payload files (already compressed/encrypted by the
pipeline) under Barman's naming, never overwrite, and stream them back.
Contract tests in tests/test_storage_contract.py run against every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from walq.checksums import LEGACY_CHECKSUM


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A payload in storage: which WAL, where, how big, and how it was encoded."""

    name: str  # the WAL name, e.g. 000000010000000000000007 or 00000002.history
    key: str  # backend-specific location (relative path or S3 key)
    size: int  # bytes as stored
    codec: str | None = None  # None when the backend cannot tell without reading
    encrypted: bool | None = None


class ObjectStream(Protocol):
    """What ``open`` returns: a local file or an S3 body, read in chunks, then closed."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class PutRequest:
    """What the pipeline hands to storage for one WAL."""

    name: str
    payload: Path  # spool file holding the bytes to store
    codec: str
    encrypted: bool
    mtime: float
    checksum: str  # of the uncompressed WAL, stored as metadata where possible
    checksum_algorithm: str = LEGACY_CHECKSUM  # walq.checksums: what took ``checksum``


class Storage(Protocol):
    """Where archived WAL lives. Implementations: LocalStorage, S3Storage."""

    url: str

    def validate_key(self, name: str, key: str) -> str:
        """Return ``key`` if it is where WAL ``name`` lives in this archive, else raise
        StorageKeyError. The one check of a key, for writers (task arguments, commit)
        and readers (get-wal, verify, the prefetcher, read-back) alike."""
        ...

    def find(self, name: str) -> StoredObject | None:
        """The stored object for this WAL whatever its extension, or None."""
        ...

    def put(self, request: PutRequest) -> StoredObject:
        """Store durably without ever overwriting; raise AlreadyStoredError if present."""
        ...

    def open(self, obj: StoredObject) -> ObjectStream:
        """A binary stream of the stored bytes (``obj.key`` is validated first)."""
        ...

    def list(self) -> Iterator[StoredObject]:
        """Every WAL object in the archive, in name order."""
        ...

    def record_commit(self, obj: StoredObject, mtime: float, codec: str, encrypted: bool) -> None:
        """Make the commit visible to Barman's tools (xlogdb line locally; nothing on S3)."""
        ...

    def record_commits(self, commits: Sequence[tuple[StoredObject, float, str, bool]]) -> None:
        """record_commit for a batch, in the order given: one append, one fsync locally."""
        ...

    def has_commit_record(self, name: str) -> bool:
        """Whether record_commit already ran for this WAL (crash recovery)."""
        ...

    def delete(self, objs: Iterable[StoredObject]) -> None:
        """Remove these objects (keys validated first); one already gone is not an error,
        so a rerun after a crash finishes the job. Local: unlink, then remove hash
        directories left empty, fsyncing the parents. S3: DeleteObjects in batches of at
        most 1,000, falling back to one DeleteObject per key when the store rejects the
        batch. Raises StorageError if any object may still be there."""
        ...

    def check(self) -> None:
        """Raise StorageError unless the storage is reachable and writable."""
        ...

    def cleanup(self) -> int:
        """Remove temporary files a crashed writer left; return how many."""
        ...

    def written_from(self, obj: StoredObject, payload: Path, checksum: str, algorithm: str) -> bool:
        """Whether ``obj`` is what ``put`` stored from this spool payload (commit's check
        that the object a task names was written by that task's chain)."""
        ...

    def stored_checksum(self, obj: StoredObject, algorithm: str) -> str | None:
        """The ``algorithm`` checksum of the uncompressed WAL if the backend kept one
        (put keeps the request's), else None."""
        ...
