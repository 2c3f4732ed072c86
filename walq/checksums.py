"""The verifying checksums walq records per WAL (invariant 5), and a hasher for each.

Every catalog row names the algorithm its checksum was taken with; a row written
before the name was recorded holds SHA-256. New WAL gets BLAKE3 unless the config
says ``checksum = "sha256"``: it catches accidental corruption, which is what a
restore's verification is for, at a third of SHA-256's CPU per segment (GPG covers
tampering when encryption is on). ``blake3`` is imported only when a BLAKE3 hasher
is asked for, so a path that verifies nothing never pays for it.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Protocol, get_args

ChecksumName = Literal["blake3", "sha256"]
CHECKSUM_NAMES: tuple[str, ...] = get_args(ChecksumName)
DEFAULT_CHECKSUM: ChecksumName = "blake3"  # what new WAL gets when the config says nothing
LEGACY_CHECKSUM: ChecksumName = "sha256"  # what a row without an algorithm holds
DIGEST_HEX_LENGTH = 64  # both give 32 bytes


class Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


def algorithm_of(recorded: str | None) -> str:
    """The algorithm of a recorded checksum: a row (or job) that names none is SHA-256."""
    return recorded or LEGACY_CHECKSUM


def new_hasher(algorithm: str | None) -> Hasher:
    """An empty hasher for ``algorithm`` (None: the legacy SHA-256)."""
    name = algorithm_of(algorithm)
    if name == "sha256":
        return hashlib.sha256()
    if name == "blake3":
        from blake3 import blake3  # only a path that hashes with it pays for the import

        return blake3()
    raise ValueError(f"unknown checksum algorithm {name!r} (known: {', '.join(CHECKSUM_NAMES)})")
