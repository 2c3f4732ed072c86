"""WAL names, segment arithmetic and header validation (real WAL + properties)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walq.errors import InvalidWalError
from walq.wal import (
    WalKind,
    WalNameError,
    lsn_to_segment,
    next_segment,
    parse_lsn,
    parse_wal_name,
    previous_segment,
    segment_name,
    segment_number,
    segments_per_log,
    validate_history,
    validate_segment_header,
)

SEG_SIZES = [1 << n for n in range(20, 31)]
seg_sizes = st.sampled_from(SEG_SIZES)
tlis = st.integers(min_value=1, max_value=0xFFFFFFFF)


@given(tli=tlis, seg_size=seg_sizes, data=st.data())
def test_segment_name_round_trips(tli: int, seg_size: int, data) -> None:
    segno = data.draw(st.integers(min_value=0, max_value=(1 << 64) // seg_size - 1))
    name = segment_name(tli, segno, seg_size)
    wal = parse_wal_name(name)
    assert wal.kind is WalKind.SEGMENT and wal.tli == tli
    assert segment_number(wal, seg_size) == segno
    assert len(name) == 24 and name == name.upper()


@given(tli=tlis, seg_size=seg_sizes, data=st.data())
def test_next_and_previous_are_inverse_and_ordered(tli: int, seg_size: int, data) -> None:
    segno = data.draw(st.integers(min_value=1, max_value=(1 << 64) // seg_size - 2))
    name = segment_name(tli, segno, seg_size)
    nxt = next_segment(name, seg_size)
    assert previous_segment(nxt, seg_size) == name
    assert name < nxt  # byte order is LSN order within a timeline


@pytest.mark.parametrize("seg_size", SEG_SIZES)
def test_end_of_log_rolls_into_next_log(seg_size: int) -> None:
    last = segments_per_log(seg_size) - 1
    name = f"00000001{0:08X}{last:08X}"
    assert next_segment(name, seg_size) == "000000010000000100000000"


def test_reference_examples() -> None:
    assert lsn_to_segment(2, parse_lsn("0/1F01B58"), 1 << 20) == "00000002000000000000001F"
    assert next_segment("000000010000000000000FFF", 1 << 20) == "000000010000000100000000"
    assert next_segment("0000000100000000000000FF", 16 << 20) == "000000010000000100000000"
    assert next_segment("000000010000000000000003", 1 << 30) == "000000010000000100000000"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("000000010000000000000007", WalKind.SEGMENT),
        ("00000002.history", WalKind.HISTORY),
        ("00000001000000000000000A.00000028.backup", WalKind.BACKUP),
        ("00000001000000000000001F.partial", WalKind.PARTIAL),
        ("00000001000000000000001f", WalKind.SEGMENT),  # Barman accepts lower case
    ],
)
def test_classification(name: str, kind: WalKind) -> None:
    assert parse_wal_name(name).kind is kind


@pytest.mark.parametrize(
    "name",
    [
        "00000001000000000000007",
        "0000000100000000000000077",
        "000000010000000000000007.gz",
        "000000010000000000000007.tmp",
        "00000002.history.partial",
        "../000000010000000000000007",
        "000000000000000000000007",
        "notes.txt",
        "",
    ],
)
def test_rejected_names(name: str) -> None:
    with pytest.raises(WalNameError):
        parse_wal_name(name)


def test_history_order_and_hash_dir() -> None:
    assert "00000002.history" < "000000020000000000000001"
    assert "00000001000000000000001F" < "00000002.history"
    assert parse_wal_name("00000002.history").hash_dir == ""
    assert parse_wal_name("00000001000000000000000A.00000028.backup").hash_dir == "0000000100000000"


def test_real_segment_header_validates(wal_corpus) -> None:
    name = wal_corpus.segments[3]
    data = wal_corpus.path(name).read_bytes()
    hdr = validate_segment_header(
        data[:40], parse_wal_name(name), len(data), system_identifier=wal_corpus.system_identifier
    )
    assert hdr.seg_size == 1 << 20 and hdr.sysid == wal_corpus.system_identifier


def test_header_mismatches_are_named(wal_corpus) -> None:
    name = wal_corpus.segments[3]
    data = wal_corpus.path(name).read_bytes()
    wal = parse_wal_name(name)
    renamed = parse_wal_name(next_segment(name, 1 << 20))
    with pytest.raises(InvalidWalError, match="page address"):
        validate_segment_header(data[:40], renamed, len(data))
    with pytest.raises(InvalidWalError, match="truncated"):
        validate_segment_header(data[:40], wal, len(data) // 2)
    with pytest.raises(InvalidWalError, match="another cluster"):
        validate_segment_header(
            data[:40], wal, len(data), system_identifier=wal_corpus.system_identifier + 1
        )
    with pytest.raises(InvalidWalError, match="all zeros"):
        validate_segment_header(bytes(40), wal, len(data))
    bad_magic = struct.pack("<H", 0xBEEF) + data[2:40]
    with pytest.raises(InvalidWalError, match="magic"):
        validate_segment_header(bad_magic, wal, len(data))
    newer_tli = parse_wal_name("00000002" + name[8:])
    validate_segment_header(
        data[:40], newer_tli, len(data)
    )  # parent TLI in a new timeline's first segment


def test_history_content() -> None:
    validate_history(b"1\t0/1F01B58\tno recovery target specified\n")
    with pytest.raises(InvalidWalError):
        validate_history(b"garbage\n")
    with pytest.raises(InvalidWalError):
        validate_history(b"# only a comment\n")
