"""WAL names, segment arithmetic and header validation (real WAL + properties)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walq.errors import InvalidWalError
from walq.wal import (
    LONG_HEADER_SIZE,
    WAL_NAME_RE,
    PageHeader,
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
from walq.walcheck import header_seg_size, split_wal_name

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


# -- walq.walcheck: the import-free name and header reading put-wal's fast path uses -------

NAME_SAMPLES = [  # one of each kind, hex of both cases: cut and extended by the property
    "000000010000000000000003",
    "00000001000000000000001f.partial",
    "00000001000000000000000A.00000028.backup",
    "0000000a.history",
]
NAME_PARTS = st.sampled_from(
    ["0", "1", "9", "a", "F", "f", "G", "_", " ", "\n", ".", ".history", ".partial", ".backup"]
)


@given(
    st.one_of(
        st.lists(NAME_PARTS, max_size=42).map("".join),
        st.builds(
            lambda name, cut, tail: name[:cut] + tail,
            st.sampled_from(NAME_SAMPLES),
            st.integers(0, 40),
            st.text(max_size=3),
        ),
    )
)
def test_walcheck_names_are_exactly_wal_name_re(name: str) -> None:
    """One language of WAL names: walq.walcheck's string checks accept what the storage
    listings' WAL_NAME_RE matches, with the same timeline, log and seg."""
    match = WAL_NAME_RE.fullmatch(name)
    split = split_wal_name(name)
    assert (split is not None) == (match is not None), name
    if match is not None and split is not None:
        kind, tli, log, seg = split
        assert tli == int(match.group(1), 16)
        assert (log, seg) == (
            (0, 0) if kind == "history" else (int(match.group(2), 16), int(match.group(3), 16))
        )
        if tli:
            assert parse_wal_name(name).kind == WalKind(kind)


def test_walcheck_header_seg_size_matches_the_full_header(wal_corpus) -> None:
    """The header's segment size read with int.from_bytes is PageHeader's; a header
    without a known magic, the long-header flag or a valid size declares none."""
    head = wal_corpus.path(wal_corpus.segments[0]).read_bytes()[:LONG_HEADER_SIZE]
    assert header_seg_size(head) == PageHeader.unpack(head).seg_size == 1 << 20
    assert header_seg_size(head[:-1]) == 0
    no_long_flag = head[:2] + struct.pack("<H", 0) + head[4:]
    assert header_seg_size(no_long_flag) == 0
    unknown_magic = struct.pack("<H", 0xD000) + head[2:]
    assert header_seg_size(unknown_magic) == 0
    odd_size = head[:32] + struct.pack("<I", 3 << 20) + head[36:]
    assert header_seg_size(odd_size) == 0
    big = head[:32] + struct.pack("<I", 1 << 24) + head[36:]
    assert header_seg_size(big) == PageHeader.unpack(big).seg_size == 1 << 24
