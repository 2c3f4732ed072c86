"""Catalog rows for tests that write the catalog directly."""

from __future__ import annotations

import dataclasses

from walq.catalog.base import ArchivedInfo

ONE_BYTE_PLAIN = ArchivedInfo(
    size=1,
    stored_size=1,
    codec="none",
    encryption="none",
    checksum="0" * 64,
    checksum_algorithm="sha256",
    storage_key="k",
    mtime=0.0,
)


def archived_info(**changes: object) -> ArchivedInfo:
    """What a commit records, for a one-byte uncompressed unencrypted WAL unless ``changes`` say
    otherwise."""
    return dataclasses.replace(ONE_BYTE_PLAIN, **changes)  # type: ignore[arg-type]
