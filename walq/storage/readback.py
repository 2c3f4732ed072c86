"""Turn a stored object back into the original WAL bytes: decrypt, then decompress.

Used by get-wal, verify and the duplicate check. The codec comes from the
catalog when known, else from the object's magic bytes (as Barman's get-wal
does); encryption from the catalog, else from the OpenPGP packet tag.
"""

from __future__ import annotations

from collections.abc import Iterator

from walq.chunks import read_chunks
from walq.codecs import DETECT_BYTES, decompress_chunks, detect
from walq.config import ServerConfig
from walq.storage.base import Storage, StoredObject
from walq.wal import max_plain_size

READ_CHUNK = 256 << 10  # small reads bound decompression output per step

# First byte of a public-key-encrypted session key packet (old and new formats).
PGP_FIRST_BYTES = {0x84, 0x85, 0xC1}


def looks_encrypted(head: bytes) -> bool:
    return bool(head) and head[0] in PGP_FIRST_BYTES and detect(head[:DETECT_BYTES]) is None


def plain_chunks(
    storage: Storage,
    obj: StoredObject,
    server: ServerConfig,
    *,
    codec: str | None = None,
    encrypted: bool | None = None,
    limit: int | None = None,
) -> Iterator[bytes]:
    """Yield the uncompressed, decrypted bytes of a stored WAL in bounded pieces.

    More than ``limit`` bytes (default: the most a WAL of that name can hold)
    raises DecompressionError before they are yielded: a small object must not
    expand into gigabytes on disk or in memory."""
    if limit is None:
        limit = max_plain_size(obj.name)
    with storage.open(obj) as stream:
        head = stream.read(READ_CHUNK)
        enc = obj.encrypted if encrypted is None else encrypted
        if enc is None:
            enc = looks_encrypted(head)
        raw: Iterator[bytes] = read_chunks(stream, READ_CHUNK, first=head)
        if enc:
            # imported here: only encrypted objects need gpg's plumbing
            from walq.crypto import decrypt_chunks

            raw = decrypt_chunks(raw, server)
            first = next(raw, b"")
            raw = _prepend(first, raw)
            head = first
        use_codec = codec or obj.codec
        if use_codec is None:
            use_codec = detect(head[:DETECT_BYTES]) or "none"
        yield from decompress_chunks(raw, use_codec, limit)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


__all__ = ["looks_encrypted", "plain_chunks"]
