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
from typing import Protocol

from walq.errors import ConfigError, DecompressionError, clip

CHUNK_SIZE = 1 << 20
DETECT_BYTES = 10
SMALL_READ = 64 << 10  # input slice for codecs whose output is bounded by their input
XZ_MEMLIMIT = 256 << 20  # zstd's own default window limit is 128 MiB; bz2, gzip, lz4 need little


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


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
    # (compressed chunks, max piece size) -> plain pieces, none larger than the max
    decompress_stream: Callable[[Iterator[bytes], int], Iterator[bytes]]

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


class _Zstd:
    def __init__(self, level: int | None) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=level if level is not None else 3).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _ChunkReader:
    """A file-like view of an iterator of chunks, for zstandard's stream_reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._buf = memoryview(nxt)
        if size < 0:
            size = len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        return bytes(out)

    def close(self) -> None:
        pass


def _zstd_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    """zstd's decompressobj has no output bound (one RLE block of a few bytes can
    stand for 128 KiB), so read through stream_reader, whose read(n) returns at most n."""
    import zstandard

    # zstandard reads any object with read(size) (its docs); its hints ask for IO[bytes]
    source = _ChunkReader(chunks)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=SMALL_READ)  # type: ignore[arg-type]
    while True:
        try:
            piece = reader.read(out_max)
        except zstandard.ZstdError as exc:
            raise DecompressionError(f"zstd content is corrupt: {exc}") from None
        if not piece:
            return
        yield piece


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


def _lz4_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    import lz4.frame

    return _max_length_stream("lz4", lz4.frame.LZ4FrameDecompressor(), chunks, out_max)


class _Snappy:
    def __init__(self, level: int | None) -> None:
        import snappy

        self._obj = snappy.StreamCompressor()

    def compress(self, data: bytes) -> bytes:
        return self._obj.add_chunk(data)

    def flush(self) -> bytes:
        return b""


def _snappy_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    """The framing format caps a chunk at 64 KiB of output (the library refuses more)
    and a full chunk takes some 3 KiB of input, so small input slices bound the output."""
    import snappy

    dec = snappy.StreamDecompressor()
    for chunk in chunks:
        for i in range(0, len(chunk), SMALL_READ):
            out = _library_call("snappy", dec.decompress, chunk[i : i + SMALL_READ])
            for j in range(0, len(out), out_max):
                yield out[j : j + out_max]


class _Gzip:
    def __init__(self, level: int | None) -> None:
        self._obj = zlib.compressobj(level if level is not None else 6, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _Xz:
    def __init__(self, level: int | None) -> None:
        self._obj = lzma.LZMACompressor(
            format=lzma.FORMAT_XZ, preset=level if level is not None else 3
        )

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def _zlib_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    """gzip (wbits 47: a gzip header, checked): decompress(data, max_length) leaves
    what it could not expand yet in unconsumed_tail."""
    dec = zlib.decompressobj(47)
    for chunk in chunks:
        data = chunk
        while True:
            out = _library_call("gzip", dec.decompress, data, out_max)
            if out:
                yield out
            data = dec.unconsumed_tail
            if dec.eof or (not data and len(out) < out_max):
                break
    if tail := _library_call("gzip", dec.flush):
        yield tail


def _bz2_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    return _max_length_stream("bzip2", bz2.BZ2Decompressor(), chunks, out_max)


def _xz_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    # The header names the dictionary size; cap what a crafted one may make liblzma
    # allocate (preset 9, the largest xz and Barman write, needs 65 MiB).
    return _max_length_stream("xz", lzma.LZMADecompressor(memlimit=XZ_MEMLIMIT), chunks, out_max)


def _identity_stream(chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    for chunk in chunks:
        for i in range(0, len(chunk), out_max):
            yield chunk[i : i + out_max]


def _max_length_stream(name: str, dec, chunks: Iterator[bytes], out_max: int) -> Iterator[bytes]:
    """bz2, lzma and lz4.frame share one shape: decompress(data, max_length) buffers
    the rest and clears needs_input until it has been drained with b''."""
    for chunk in chunks:
        out = _library_call(name, dec.decompress, chunk, out_max)
        if out:
            yield out
        while not dec.eof and not dec.needs_input:
            out = _library_call(name, dec.decompress, b"", out_max)
            if not out:
                break
            yield out


def _library_call(name: str, fn, *args):
    """Call a codec library; its own error type for corrupt input becomes DecompressionError.

    Only the library call is wrapped, so errors of the input (a failed read) keep their type."""
    try:
        return fn(*args)
    except (
        Exception
    ) as exc:  # zlib.error, OSError (bz2, snappy), LZMAError, EOFError, RuntimeError (lz4)
        raise DecompressionError(f"{name} content is corrupt: {exc}") from None


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("none", "", b"", None, None, None, lambda _l: _Identity(), _identity_stream),
        Codec("bzip2", ".bz2", b"BZh", 1, 9, 5, lambda lv: bz2.BZ2Compressor(lv or 5), _bz2_stream),
        Codec("gzip", ".gz", b"\x1f\x8b\x08", 1, 9, 6, _Gzip, _zlib_stream),
        Codec("lz4", ".lz4", b"\x04\x22\x4d\x18", 0, 16, 0, _Lz4, _lz4_stream),
        Codec(
            "snappy",
            ".snappy",
            b"\xff\x06\x00\x00\x73\x4e\x61\x50\x70\x59",
            None,
            None,
            None,
            _Snappy,
            _snappy_stream,
        ),
        Codec("xz", ".xz", b"\xfd7zXZ\x00", 0, 9, 3, _Xz, _xz_stream),
        Codec("zstd", ".zst", b"\x28\xb5\x2f\xfd", -22, 22, 3, _Zstd, _zstd_stream),
    )
}
CODEC_NAMES = tuple(CODECS)
EXTENSIONS = {c.extension: c.name for c in CODECS.values() if c.extension}


def get_codec(name: str | None) -> Codec:
    try:
        return CODECS[name or "none"]
    except KeyError:
        raise ConfigError(
            f"unknown compression {clip(name)}; allowed: {', '.join(CODEC_NAMES)}"
        ) from None


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


def compress_chunks(
    chunks: Iterable[bytes], codec: str, level: int | None = None
) -> Iterator[bytes]:
    """Compress a stream of chunks, yielding compressed pieces (empty ones skipped)."""
    c = get_codec(codec)
    comp = c.make_compressor(c.level(level))
    for chunk in chunks:
        if out := comp.compress(chunk):
            yield out
    if tail := comp.flush():
        yield tail


def decompress_chunks(
    chunks: Iterable[bytes], codec: str, limit: int | None = None
) -> Iterator[bytes]:
    """Decompress a stream of chunks into plain pieces of at most CHUNK_SIZE bytes.

    Memory stays bounded by the chunk size whatever the compression ratio (a few KB
    of zstd can stand for gigabytes of zeros), and DecompressionError is raised as
    soon as the output passes ``limit`` bytes or the input turns out corrupt.
    """
    c = get_codec(codec)
    total = 0
    for piece in c.decompress_stream(iter(chunks), CHUNK_SIZE):
        total += len(piece)
        if limit is not None and total > limit:
            what = "content" if c.name == "none" else f"{c.name} content"
            raise DecompressionError(f"{what} expands beyond {limit} bytes, more than it may hold")
        yield piece
