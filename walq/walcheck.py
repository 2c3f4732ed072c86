"""WAL file names and the long page header's segment size, with string and int operations only.

PostgreSQL starts put-wal once per segment on its critical path, where importing
``re``, ``dataclasses``, ``enum`` and ``struct`` cost more than copying the bytes.
This module imports nothing; walq.wal builds its parsed names, full header
validation and every constant below on top of it, so there is one definition of
a WAL name and of the page magics, not a fast copy beside a full one.
See shared/docs/wal-reference.md sections 1 and 2.
"""

# no `from __future__ import annotations`: one import fewer per archive_command call

MIN_SEG_SIZE = 1 << 20
MAX_SEG_SIZE = 1 << 30

# XLOG_PAGE_MAGIC per PostgreSQL major version; a new major only needs a row.
PAGE_MAGIC_BY_VERSION: dict[int, int] = {
    10: 0xD097,
    11: 0xD098,
    12: 0xD101,
    13: 0xD106,
    14: 0xD10D,
    15: 0xD110,
    16: 0xD113,
    17: 0xD116,
    18: 0xD118,
}
KNOWN_PAGE_MAGICS = frozenset(PAGE_MAGIC_BY_VERSION.values())

XLP_LONG_HEADER = 0x0002
XLP_ALL_FLAGS = 0x000F
LONG_HEADER_SIZE = 40  # walq.wal.LONG_HEADER ("<HHIQI4xQII") is this long

SEGMENT, HISTORY, BACKUP, PARTIAL = "segment", "history", "backup", "partial"  # walq.wal.WalKind

_HEX = frozenset("0123456789ABCDEFabcdef")


def _hex(s: str) -> bool:
    return bool(s) and set(s) <= _HEX


def split_wal_name(name: str) -> tuple[str, int, int, int] | None:
    """(kind, timeline, log, seg) of a WAL file name; None if it is none.

    The names Barman accepts (hex of either case): ``TTTTTTTT.history``,
    ``TTTTTTTTLLLLLLLLSSSSSSSS`` with an optional ``.partial`` or
    ``.XXXXXXXX.backup``. log and seg are 0 for a history file. A timeline of 0
    is returned as such: walq.wal.parse_wal_name says why it is refused.
    """
    n = len(name)
    if n == 16 and name.endswith(".history") and _hex(name[:8]):
        return HISTORY, int(name[:8], 16), 0, 0
    if n < 24 or not _hex(name[:24]):
        return None
    if n == 24:
        kind = SEGMENT
    elif n == 32 and name.endswith(".partial"):
        kind = PARTIAL
    elif n == 40 and name[24] == "." and name.endswith(".backup") and _hex(name[25:33]):
        kind = BACKUP
    else:
        return None
    return kind, int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)


def is_seg_size(n: int) -> bool:
    """A segment size PostgreSQL allows: a power of two from 1 MiB to 1 GiB."""
    return MIN_SEG_SIZE <= n <= MAX_SEG_SIZE and n & (n - 1) == 0


def header_seg_size(head: bytes) -> int:
    """The segment size a segment's first bytes declare in a usable long page header
    (a known magic, the long-header flag, a valid size); 0 where they declare none.
    Only a hint for a size check: walq.wal.validate_segment_header is the full check."""
    if len(head) < LONG_HEADER_SIZE:
        return 0
    magic = int.from_bytes(head[0:2], "little")
    info = int.from_bytes(head[2:4], "little")
    seg_size = int.from_bytes(head[32:36], "little")
    if magic in KNOWN_PAGE_MAGICS and info & XLP_LONG_HEADER and is_seg_size(seg_size):
        return seg_size
    return 0
