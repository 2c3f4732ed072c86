"""WAL file names, segment arithmetic and long-page-header validation.

Name rules follow Barman's single acceptance pattern (so walq routes the same
files the same way); header rules follow PostgreSQL's xlog_internal.h, which
Barman never checks. See shared/docs/wal-reference.md sections 1 and 2.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass

from walq.errors import InvalidWalError, WalNameError, WalqError, clip

# the constants live in walq.walcheck (imported by per-WAL processes) and are re-exported here
from walq.walcheck import (
    KNOWN_PAGE_MAGICS,
    LONG_HEADER_SIZE,
    MAX_SEG_SIZE,
    MIN_SEG_SIZE,
    XLP_ALL_FLAGS,
    XLP_LONG_HEADER,
    is_seg_size,
    split_wal_name,
)

# The names walq.walcheck.split_wal_name accepts, for storage listings that match many
# (tests/test_wal_names.py keeps the two equal). \A..\Z and fullmatch, never "$": "$"
# also matches before a trailing newline, and a name ending in "\n" would be archived
# under it and split its xlogdb line.
WAL_NAME_RE = re.compile(
    r"\A([0-9A-Fa-f]{8})(?:([0-9A-Fa-f]{8})([0-9A-Fa-f]{8})"
    r"(?:\.[0-9A-Fa-f]{8}\.backup|\.partial)?|\.history)\Z"
)

MAX_TEXT_SIZE = 1 << 20  # history and backup files are small text

LONG_HEADER = struct.Struct("<HHIQI4xQII")  # 40 bytes, little-endian hosts
assert LONG_HEADER.size == LONG_HEADER_SIZE


class WalKind(enum.StrEnum):
    SEGMENT = "segment"
    HISTORY = "history"
    BACKUP = "backup"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class WalName:
    """A parsed WAL file name; ``log``/``seg`` are 0 for history files."""

    name: str
    kind: WalKind
    tli: int
    log: int
    seg: int

    @property
    def segment(self) -> str:
        """The 24-character segment name this file belongs to ('' for history)."""
        return "" if self.kind is WalKind.HISTORY else self.name[:24]

    @property
    def hash_dir(self) -> str:
        """Barman's hash directory: TLI+log in upper case, '' for history files."""
        return "" if self.kind is WalKind.HISTORY else self.name[:16].upper()


def parse_wal_name(name: str) -> WalName:
    """Parse a WAL basename; raise WalNameError naming the string otherwise."""
    split = split_wal_name(name)  # the one definition of a WAL name (walq.walcheck)
    if split is None:
        raise WalNameError(f"{clip(name)} is not a WAL file name")
    kind, tli, log, seg = split
    if tli == 0:
        raise WalNameError(f"{clip(name)} has timeline 0, which PostgreSQL never uses")
    return WalName(name, WalKind(kind), tli, log, seg)


def max_plain_size(name: str) -> int:
    """The most bytes a WAL file of this name can hold: a bound for decompression."""
    return (
        MAX_TEXT_SIZE
        if parse_wal_name(name).kind in (WalKind.HISTORY, WalKind.BACKUP)
        else MAX_SEG_SIZE
    )


def is_wal_name(name: str) -> bool:
    try:
        parse_wal_name(name)
    except WalNameError:
        return False
    return True


def check_seg_size(seg_size: int) -> int:
    if not is_seg_size(seg_size):
        raise WalqError(f"segment size {seg_size} is not a power of two from 1 MiB to 1 GiB")
    return seg_size


def segments_per_log(seg_size: int) -> int:
    """How many segments one 'log' (xlogid) holds: 2^32 / S."""
    return (1 << 32) // check_seg_size(seg_size)


def segment_number(wal: WalName | str, seg_size: int) -> int:
    """Absolute segment number (segno) of a segment, partial or backup name."""
    w = parse_wal_name(wal) if isinstance(wal, str) else wal
    if w.kind is WalKind.HISTORY:
        raise WalNameError(f"{w.name!r} is a history file and has no segment number")
    per_log = segments_per_log(seg_size)
    if w.seg >= per_log:
        raise WalNameError(
            f"{w.name!r}: segment index {w.seg:X} is out of range for {seg_size} byte segments"
        )
    return w.log * per_log + w.seg


def segment_name(tli: int, segno: int, seg_size: int) -> str:
    per_log = segments_per_log(seg_size)
    return f"{tli:08X}{segno // per_log:08X}{segno % per_log:08X}"


def next_segment(name: str, seg_size: int) -> str:
    w = parse_wal_name(name)
    return segment_name(w.tli, segment_number(w, seg_size) + 1, seg_size)


def previous_segment(name: str, seg_size: int) -> str:
    w = parse_wal_name(name)
    segno = segment_number(w, seg_size)
    if segno == 0:
        raise WalNameError(f"{clip(name)} is the first segment; it has no predecessor")
    return segment_name(w.tli, segno - 1, seg_size)


def lsn_to_segment(tli: int, lsn: int, seg_size: int) -> str:
    return segment_name(tli, lsn // check_seg_size(seg_size), seg_size)


def parse_lsn(text: str) -> int:
    """Parse PostgreSQL's '%X/%X' LSN notation."""
    hi, _, lo = text.partition("/")
    try:
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise WalqError(f"{clip(text)} is not an LSN") from None


@dataclass(frozen=True, slots=True)
class PageHeader:
    """The long page header at offset 0 of every segment."""

    magic: int
    info: int
    tli: int
    pageaddr: int
    rem_len: int
    sysid: int
    seg_size: int
    blcksz: int

    @classmethod
    def unpack(cls, head: bytes) -> PageHeader:
        if len(head) < LONG_HEADER_SIZE:
            raise InvalidWalError(f"only {len(head)} bytes, shorter than a WAL page header")
        return cls(*LONG_HEADER.unpack_from(head, 0))


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def validate_segment_header(
    head: bytes,
    wal: WalName,
    file_size: int,
    *,
    expected_seg_size: int | None = None,
    system_identifier: int | None = None,
) -> PageHeader:
    """Check a segment's long header against its name, size and cluster.

    Raises InvalidWalError with a message saying exactly what does not match;
    returns the header so the caller can learn sysid and segment size.
    """
    hdr = PageHeader.unpack(head)
    if hdr.magic == 0 and not any(head[:LONG_HEADER_SIZE]):
        raise InvalidWalError("page header is all zeros (never-written or zero-filled file)")
    if hdr.magic not in KNOWN_PAGE_MAGICS:
        raise InvalidWalError(
            f"unknown WAL page magic 0x{hdr.magic:04X} (not PostgreSQL 10-18 WAL)"
        )
    if not hdr.info & XLP_LONG_HEADER or hdr.info & ~XLP_ALL_FLAGS:
        raise InvalidWalError(f"bad page flags 0x{hdr.info:04X} in the first page")
    if not (MIN_SEG_SIZE <= hdr.seg_size <= MAX_SEG_SIZE and _power_of_two(hdr.seg_size)):
        raise InvalidWalError(
            f"header segment size {hdr.seg_size} is not a power of two from 1 MiB to 1 GiB"
        )
    if not (1024 <= hdr.blcksz <= 65536 and _power_of_two(hdr.blcksz)):
        raise InvalidWalError(f"header WAL block size {hdr.blcksz} is invalid")
    if expected_seg_size and hdr.seg_size != expected_seg_size:
        raise InvalidWalError(
            f"segment size {hdr.seg_size} differs from this server's {expected_seg_size}"
        )
    if file_size != hdr.seg_size:
        raise InvalidWalError(
            f"file is {file_size} bytes but its header says segments are {hdr.seg_size} (truncated or padded copy)"
        )
    expected_addr = segment_number(wal, hdr.seg_size) * hdr.seg_size
    if hdr.pageaddr != expected_addr:
        raise InvalidWalError(
            f"page address {hdr.pageaddr >> 32:X}/{hdr.pageaddr & 0xFFFFFFFF:X} does not match the name "
            f"(expected {expected_addr >> 32:X}/{expected_addr & 0xFFFFFFFF:X}: recycled or renamed segment)"
        )
    if hdr.tli == 0 or hdr.tli > wal.tli:
        raise InvalidWalError(f"header timeline {hdr.tli} is above the name's timeline {wal.tli}")
    if system_identifier and hdr.sysid != system_identifier:
        raise InvalidWalError(
            f"system identifier {hdr.sysid} differs from this server's {system_identifier} "
            "(WAL from another cluster)"
        )
    return hdr


def validate_history(content: bytes) -> None:
    """A history file: text lines 'parentTLI<TAB>LSN<TAB>reason', at least one."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWalError("history file is not text") from None
    valid = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            raise InvalidWalError(f"history line {lineno} is not 'parentTLI<TAB>LSN<TAB>reason'")
        parse_lsn(fields[1].strip())
        valid += 1
    if not valid:
        raise InvalidWalError("history file has no timeline line")


def validate_backup_label(content: bytes) -> None:
    """A backup history file is short text naming its start WAL location."""
    if b"START WAL LOCATION" not in content:
        raise InvalidWalError("backup history file lacks 'START WAL LOCATION'")
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWalError("backup history file is not text") from None
