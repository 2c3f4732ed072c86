"""Bytes in bounded pieces: read a stream in chunks, and sum what passes through.

WAL is up to a GiB a file, so nothing reads one whole into memory: every copy,
hash and codec step goes chunk by chunk. The chunk size stays the caller's
choice (small reads bound decompression output; large ones cut syscalls).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from walq.checksums import algorithm_of, new_hasher


class Readable(Protocol):
    """A binary stream: an open file, a pipe, an S3 body."""

    def read(self, size: int, /) -> bytes: ...


def read_chunks(stream: Readable, size: int, *, first: bytes = b"") -> Iterator[bytes]:
    """``first`` (bytes already read, if any), then the rest of ``stream`` in pieces
    of at most ``size`` bytes."""
    if first:
        yield first
    while chunk := stream.read(size):
        yield chunk


class Checksum:
    """The checksum (``algorithm``: walq.checksums) and size of the bytes that pass
    through it: the archive's checksum is of the uncompressed WAL, so readers sum the
    plain pieces as they go."""

    def __init__(self, algorithm: str | None) -> None:
        self.algorithm = algorithm_of(algorithm)
        self._hash = new_hasher(self.algorithm)
        self.size = 0

    def passing(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield ``chunks`` unchanged, summing each one."""
        for chunk in chunks:
            self._hash.update(chunk)
            self.size += len(chunk)
            yield chunk

    def of(self, chunks: Iterable[bytes]) -> Checksum:
        """Sum all of ``chunks``."""
        for _ in self.passing(chunks):
            pass
        return self

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
