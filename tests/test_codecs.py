"""Every codec round-trips real WAL byte for byte and is readable by its own tool."""

from __future__ import annotations

import pytest

from tests.services.codec_tools import TOOLS, decompress_with_tool
from walq.codecs import (
    CODEC_NAMES,
    compress_chunks,
    decompress_chunks,
    detect,
    get_codec,
    split_extension,
)
from walq.errors import ConfigError


def _chunks(data: bytes, size: int = 100_000):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_round_trip_real_wal(codec: str, wal_corpus) -> None:
    original = wal_corpus.path(wal_corpus.segments[5]).read_bytes()
    packed = b"".join(compress_chunks(_chunks(original), codec))
    assert b"".join(decompress_chunks(_chunks(packed, 4096), codec)) == original
    if codec == "none":
        assert packed == original and detect(packed[:10]) is None
    else:
        assert len(packed) < len(original)
        assert detect(packed[:10]) == codec


@pytest.mark.parametrize("codec", sorted(TOOLS))
def test_codec_tool_reads_our_output(codec: str, wal_corpus) -> None:
    original = wal_corpus.path(wal_corpus.segments[6]).read_bytes()
    packed = b"".join(compress_chunks(_chunks(original), codec))
    assert decompress_with_tool(codec, packed) == original


def test_levels_are_clamped_and_names_checked() -> None:
    assert get_codec("gzip").level(99) == 9
    assert get_codec("zstd").level(None) == 3
    assert get_codec("snappy").level(5) is None
    with pytest.raises(ConfigError, match="zip"):
        get_codec("zip")


def test_extensions_split() -> None:
    assert split_extension("00000001000000000000001F.partial.lz4") == (
        "00000001000000000000001F.partial",
        "lz4",
    )
    assert split_extension("00000002.history.snappy") == ("00000002.history", "snappy")
    assert split_extension("000000010000000000000008") == ("000000010000000000000008", None)
