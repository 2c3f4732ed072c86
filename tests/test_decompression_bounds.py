"""Decompression is bounded: no codec yields more than a WAL can hold, memory stays
at the chunk size, and a corrupt stream is one clear error (issue 10, D4 and D7).

The bombs are real compressed streams of zeros made by each codec's own library,
built in a streaming way so the tests themselves stay small in memory. The CLI
cases measure the real ``walq`` process: its peak RSS (wait4's ru_maxrss) and,
through RLIMIT_FSIZE, that it never writes a file larger than the limit.
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.homes import WalqHome
from walq import codecs
from walq.catalog import open_catalog
from walq.codecs import CHUNK_SIZE, CODEC_NAMES, CODECS, compress_chunks, decompress_chunks
from walq.errors import IntegrityError

MiB = 1 << 20
RSS_BOUND_KB = 200 * 1024  # a walq process that streams stays far below this


def zeros(mib: int) -> Iterator[bytes]:
    block = bytes(MiB)
    for _ in range(mib):
        yield block


def bomb(codec: str, mib: int) -> bytes:
    """``mib`` MiB of zeros compressed by the codec's library, one MiB at a time."""
    return b"".join(compress_chunks(zeros(mib), codec))


def pieces(data: bytes, size: int = 256 << 10) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_no_codec_yields_more_than_the_limit(codec: str) -> None:
    packed = bomb(codec, 4 if codec == "none" else 64)
    seen = 0
    with pytest.raises(codecs.DecompressionError, match="expands beyond 1048576 bytes"):
        for piece in decompress_chunks(pieces(packed), codec, limit=MiB):
            assert len(piece) <= CHUNK_SIZE
            seen += len(piece)
    assert seen <= MiB
    assert issubclass(codecs.DecompressionError, IntegrityError)


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_memory_is_bounded_by_the_chunk_size_without_a_limit(codec: str) -> None:
    """Every piece is at most CHUNK_SIZE whatever the ratio (a zstd RLE block of a few
    bytes stands for 128 KiB); before the fix one 256 KiB read became one huge piece."""
    packed = bomb(codec, 4 if codec == "none" else 64)
    total = 0
    for piece in decompress_chunks(pieces(packed), codec):
        assert len(piece) <= CHUNK_SIZE
        total += len(piece)
    assert total == (4 if codec == "none" else 64) * MiB


@pytest.mark.parametrize("codec", [c for c in CODEC_NAMES if c != "none"])
def test_corrupt_header_is_a_decompression_error_never_a_library_error(codec: str) -> None:
    """Flip each byte right after the magic: the result is either some bytes (the
    checksum judges them) or DecompressionError, never ZstdError, OSError, LZMAError..."""
    data = os.urandom(50_000) + bytes(200_000)
    packed = bomb_of(data, codec)
    start = len(CODECS[codec].magic)
    for offset in range(start, start + 8):
        flipped = bytearray(packed)
        flipped[offset] ^= 0xFF
        try:
            b"".join(decompress_chunks(pieces(bytes(flipped), 4096), codec))
        except codecs.DecompressionError as exc:
            assert f"{codec} content is corrupt" in str(exc) and "\n" not in str(exc)


def bomb_of(data: bytes, codec: str) -> bytes:
    return b"".join(compress_chunks(pieces(data), codec))


def run_measured(home: WalqHome, *args: str, fsize_limit: int) -> tuple[int, str, int]:
    """Run the real walq CLI; return (exit code, stderr, peak RSS in KiB of that process).

    RLIMIT_FSIZE makes any write past ``fsize_limit`` fail (SIGXFSZ kills the
    process), so a passing run proves no file that large was written."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    err_path = home.root / f"stderr-{os.getpid()}-{len(args)}"
    with open(err_path, "wb") as err, open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            home.command(*args),
            stdout=out,
            stderr=err,
            preexec_fn=limit_file_size,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err_path.read_text(), usage.ru_maxrss


def test_get_wal_of_a_zstd_bomb_stays_small(walq_home: WalqHome, wal_corpus, workdir: Path) -> None:
    """A 1 MiB segment's stored object replaced by 512 MiB of zeros in zstd (~16 KB):
    get-wal stops at the catalog's recorded size, writes at most that, exits 2."""
    name = wal_corpus.segments[0]
    stored = walq_home.archive_for_tampering(wal_corpus.path(name))
    catalog = open_catalog(walq_home.config)
    try:
        assert catalog.get("pg1", name).size == MiB
    finally:
        catalog.close()
    with open(stored, "wb") as f:
        for piece in compress_chunks(zeros(512), "zstd"):
            f.write(piece)
    assert stored.stat().st_size < 100_000
    dest = workdir / "restored"
    code, stderr, rss_kb = run_measured(
        walq_home, "get-wal", "pg1", name, str(dest), fsize_limit=4 * MiB
    )
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert name in stderr and "1048576" in stderr
    assert rss_kb < RSS_BOUND_KB, f"peak RSS {rss_kb} KiB"
    assert not dest.exists() and not list(workdir.glob(".restored.*"))


@pytest.mark.parametrize("codec", ["zstd", "gzip", "xz"])
def test_archive_of_a_bomb_in_incoming_stays_small(codec: str, make_home, wal_corpus) -> None:
    """The same kind of bomb dropped in incoming/ under a segment's name: the archiver
    stops at the server's segment size and parks the file in errors/."""
    home: WalqHome = make_home({"pg1": {"compression": "zstd"}}, archive_workers=1)
    good, bad = wal_corpus.segments[0], wal_corpus.segments[1]
    wal_corpus.copy_into(home.incoming(), [good])
    home.run("archive", check=True)  # the catalog now knows the 1 MiB segment size
    with open(home.incoming() / bad, "wb") as f:
        for piece in compress_chunks(zeros(512 if codec == "zstd" else 128), codec):
            f.write(piece)
    code, stderr, rss_kb = run_measured(home, "archive", fsize_limit=16 * MiB)
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert rss_kb < RSS_BOUND_KB, f"peak RSS {rss_kb} KiB"
    parked = [p for p in os.listdir(home.errors()) if p.startswith(bad)]
    assert len(parked) == 1 and parked[0].endswith(".error")
    catalog = open_catalog(home.config)
    try:
        row = catalog.get("pg1", bad)
        assert row is not None and "1048576" in (row.last_error or "")
    finally:
        catalog.close()


def test_get_wal_of_a_corrupt_zstd_object_is_one_line_exit_2(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    """A stored zstd object with a flipped header byte (ZstdError before the fix)."""
    name = wal_corpus.segments[0]
    stored = walq_home.archive_for_tampering(wal_corpus.path(name))
    data = bytearray(stored.read_bytes())
    data[4] ^= 0xFF  # the frame header descriptor
    stored.write_bytes(bytes(data))
    dest = workdir / "restored"
    res = walq_home.run("get-wal", "pg1", name, str(dest))
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert name in res.stderr and "corrupt" in res.stderr
    assert not dest.exists() and not list(workdir.glob(".restored.*"))


def test_xz_header_asking_for_a_huge_dictionary_is_refused() -> None:
    """liblzma allocates what the header names; walq caps it (preset 9 needs 65 MiB)."""
    import lzma

    huge = lzma.compress(
        b"x", format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 30}]
    )
    with pytest.raises(codecs.DecompressionError, match="xz content"):
        b"".join(decompress_chunks([huge], "xz"))
    preset9 = b"".join(compress_chunks([os.urandom(100_000)], "xz", 9))
    assert len(b"".join(decompress_chunks([preset9], "xz"))) == 100_000
