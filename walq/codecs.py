"""Compression registry: Barman's six codecs plus 'none', streaming both ways.

Every codec exposes the same incremental compressor/decompressor shape so the
pipeline reads a WAL once, in fixed-size chunks, whatever the codec: memory is
bounded by the chunk size, never by the segment size. Magic bytes and S3
extensions are Barman's (wal-reference.md 3.3); detection tries codecs in
alphabetical order, as Barman does, so the same bytes get the same verdict.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from walq.errors import ConfigError, clip

CHUNK_SIZE = 1 << 20
DETECT_BYTES = 10


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Codec:
    """One compression format: how it is named, recognised and (de)compressed."""

    name: str
    extension: str  # barman-cloud key extension, '' for none
    magic: bytes
    min_level: int | None
    max_level: int | None
    default_level: int | None
    make_compressor: Callable[[int | None], Compressor]
    make_decompressor: Callable[[], Decompressor]

    def level(self, requested: int | None) -> int | None:
        """Clamp a requested level into the codec's range, as Barman does."""
        if self.min_level is None or self.max_level is None:
            return None
        if requested is None:
            return self.default_level
        return max(self.min_level, min(self.max_level, requested))


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def decompress(self, data: bytes) -> bytes:
        return data


class _Zstd:
    def __init__(self, level: int | None) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=level if level is not None else 3).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def _zstd_decompressor() -> Decompressor:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


class _Lz4:
    def __init__(self, level: int | None) -> None:
        import lz4.frame

        self._obj = lz4.frame.LZ4FrameCompressor(compression_level=level or 0)
        self._started = False

    def compress(self, data: bytes) -> bytes:
        head = b""
        if not self._started:
            head, self._started = self._obj.begin(), True
        return head + self._obj.compress(data)

    def flush(self) -> bytes:
        head = b"" if self._started else self._obj.begin()
        self._started = True
        return head + self._obj.flush()


def _lz4_decompressor() -> Decompressor:
    import lz4.frame

    return lz4.frame.LZ4FrameDecompressor()


class _Snappy:
    def __init__(self, level: int | None) -> None:
        import snappy

        self._obj = snappy.StreamCompressor()

    def compress(self, data: bytes) -> bytes:
        return self._obj.add_chunk(data)

    def flush(self) -> bytes:
        return b""


class _SnappyDecompressor:
    def __init__(self) -> None:
        import snappy

        self._obj = snappy.StreamDecompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)


class _Gzip:
    def __init__(self, level: int | None) -> None:
        self._obj = zlib.compressobj(level if level is not None else 6, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _Xz:
    def __init__(self, level: int | None) -> None:
        self._obj = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level if level is not None else 3)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("none", "", b"", None, None, None, lambda _l: _Identity(), _Identity),
        Codec("bzip2", ".bz2", b"BZh", 1, 9, 5, lambda lv: bz2.BZ2Compressor(lv or 5), bz2.BZ2Decompressor),
        Codec("gzip", ".gz", b"\x1f\x8b\x08", 1, 9, 6, _Gzip, lambda: zlib.decompressobj(47)),
        Codec("lz4", ".lz4", b"\x04\x22\x4d\x18", 0, 16, 0, _Lz4, _lz4_decompressor),
        Codec("snappy", ".snappy", b"\xff\x06\x00\x00\x73\x4e\x61\x50\x70\x59", None, None, None, _Snappy, _SnappyDecompressor),
        Codec("xz", ".xz", b"\xfd7zXZ\x00", 0, 9, 3, _Xz, lzma.LZMADecompressor),
        Codec("zstd", ".zst", b"\x28\xb5\x2f\xfd", -22, 22, 3, _Zstd, _zstd_decompressor),
    )
}
CODEC_NAMES = tuple(CODECS)
EXTENSIONS = {c.extension: c.name for c in CODECS.values() if c.extension}


def get_codec(name: str | None) -> Codec:
    try:
        return CODECS[name or "none"]
    except KeyError:
        raise ConfigError(f"unknown compression {clip(name)}; allowed: {', '.join(CODEC_NAMES)}") from None


def detect(head: bytes) -> str | None:
    """Codec whose magic starts ``head`` (alphabetical order, first wins), else None."""
    for name in sorted(CODECS):
        magic = CODECS[name].magic
        if magic and head.startswith(magic):
            return name
    return None


def split_extension(key_basename: str) -> tuple[str, str | None]:
    """'X.partial.zst' -> ('X.partial', 'zstd'); a name with no codec extension -> (name, None)."""
    stem, dot, ext = key_basename.rpartition(".")
    if dot and f".{ext}" in EXTENSIONS:
        return stem, EXTENSIONS[f".{ext}"]
    return key_basename, None


def read_chunks(src: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := src.read(size):
        yield chunk


def compress_chunks(chunks: Iterable[bytes], codec: str, level: int | None = None) -> Iterator[bytes]:
    """Compress a stream of chunks, yielding compressed pieces (empty ones skipped)."""
    c = get_codec(codec)
    comp = c.make_compressor(c.level(level))
    for chunk in chunks:
        if out := comp.compress(chunk):
            yield out
    if tail := comp.flush():
        yield tail


def decompress_chunks(chunks: Iterable[bytes], codec: str) -> Iterator[bytes]:
    """Decompress a stream of chunks, yielding plain pieces."""
    dec = get_codec(codec).make_decompressor()
    for chunk in chunks:
        if out := dec.decompress(chunk):
            yield out
    flush = getattr(dec, "flush", None)
    if flush is not None and (tail := flush()):
        yield tail
