"""The steps of archiving one WAL, each a plain function of its WalJob.

``prepare`` (validate + checksum + compress into the spool) is CPU work and
runs in a process pool or a Celery prefork worker; ``encrypt`` likewise;
``store`` and ``commit`` are I/O and run under the server's fenced lock. The
embedded archiver and the Celery tasks call exactly these functions, passing
one WalJob (names and spool paths, never payloads) from each to the next.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from walq.archive.identity import adopt_identity
from walq.archive.job import WalJob
from walq.archive.scan import move_to_errors
from walq.catalog.base import ArchivedInfo, Catalog, WalRecord, WalState
from walq.checksums import algorithm_of, new_hasher
from walq.chunks import Checksum, read_chunks
from walq.codecs import (
    CHUNK_SIZE,
    DETECT_BYTES,
    DecompressionError,
    compress_chunks,
    decompress_chunks,
    detect,
    get_codec,
)
from walq.config import ServerConfig
from walq.errors import (
    AlreadyStoredError,
    DuplicateWalError,
    InvalidWalError,
    StorageError,
    TransientError,
)
from walq.fsutil import fsync_dir, make_owned_dir, make_private, open_private
from walq.storage.base import PutRequest, Storage, StoredObject
from walq.storage.readback import plain_chunks
from walq.wal import (
    LONG_HEADER_SIZE,
    MAX_SEG_SIZE,
    MAX_TEXT_SIZE,
    PageHeader,
    WalKind,
    parse_wal_name,
    validate_backup_label,
    validate_history,
    validate_segment_header,
)

MAX_TEXT_WAL = MAX_TEXT_SIZE  # history and backup files are small text


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one WAL, for progress output and exit codes."""

    name: str
    status: str  # archived | duplicate | rejected | failed | skipped
    message: str = ""
    size: int = 0
    stored_size: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("archived", "duplicate", "skipped")


def _open_source(source: str) -> tuple[int, os.stat_result]:
    """Open without following symlinks and insist on a regular file."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the name is a symlink
            raise InvalidWalError(f"{source} is a symlink; walq never follows links") from None
        raise TransientError(f"cannot read {source}: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InvalidWalError(f"{source} is not a regular file")
    return fd, st


def spool_path(spool_dir: str, name: str, suffix: str) -> Path:
    return Path(spool_dir) / f"{name}{suffix}"


def prepare(job: WalJob) -> WalJob:
    """Validate, checksum and compress one WAL into the spool, reading it once.

    Takes the scan's job (spool_dir, codec, level, expected seg_size/sysid) and
    returns it with the payload and what the bytes said."""
    assert job.spool_dir is not None and job.codec is not None, "a job's prepare settings are set"
    started = time.perf_counter()
    wal = parse_wal_name(job.wal)
    try:
        make_owned_dir(job.spool_dir)  # walq's own: the only kind of directory it ever removes
    except OSError as exc:
        raise TransientError(f"cannot create spool {job.spool_dir}: {exc.strerror}") from exc
    fd, st = _open_source(job.source)
    with os.fdopen(fd, "rb") as src:
        first = src.read(CHUNK_SIZE)
        in_codec = detect(first[:DETECT_BYTES])
        if in_codec is None and wal.kind in (WalKind.SEGMENT, WalKind.PARTIAL):
            # Plain segment: reject before spending CPU on compression.
            if st.st_size == 0:
                raise InvalidWalError("empty file (0 bytes)")
            validate_segment_header(
                first[:LONG_HEADER_SIZE],
                wal,
                st.st_size,
                expected_seg_size=job.seg_size,
                system_identifier=job.sysid,
            )
        out_codec = in_codec or job.codec
        # The origin is part of the spool name: the same WAL from streaming/ and incoming/
        # can be prepared at the same time (wal-reference 9.10) and must not share a file.
        final = spool_path(
            job.spool_dir, f"{job.wal}.{job.origin}", get_codec(out_codec).extension or ".none"
        )
        part = final.with_name(f".{final.name}.part")
        algorithm = algorithm_of(job.checksum_algorithm)
        hasher = new_hasher(algorithm)
        size = 0
        head = b""
        text = bytearray()
        limit = _plain_limit(wal.kind, job.seg_size)

        def accounted(pieces):
            nonlocal size, head, text, limit
            for piece in pieces:
                hasher.update(piece)
                had_head = len(head) >= LONG_HEADER_SIZE
                size, head, text = _account(piece, size, head, text, wal.kind)
                if not had_head and len(head) >= LONG_HEADER_SIZE and not job.seg_size:
                    limit = _header_limit(head, wal.kind, limit)
                if size > limit:
                    raise InvalidWalError(
                        f"content is larger than {limit} bytes, more than this {wal.kind} can hold"
                    )
                yield piece

        def written(chunks, out):
            for chunk in chunks:
                out.write(chunk)
                yield chunk

        try:
            if in_codec is None and out_codec == "none":
                # Stored as it is: checksum and validate, then link the very inode we
                # read into the spool instead of writing a second copy of it.
                for _ in accounted(read_chunks(src, CHUNK_SIZE, first=first)):
                    pass
                _link_or_copy(src, job.source, part)
            else:
                with os.fdopen(open_private(part), "wb") as out:
                    if in_codec:
                        # Already compressed by the producer: keep its bytes as they are
                        # (Barman's rule); decompress only to checksum and validate.
                        plain = decompress_chunks(
                            written(read_chunks(src, CHUNK_SIZE, first=first), out), in_codec, limit
                        )
                        for _ in accounted(plain):
                            pass
                    else:
                        for piece in compress_chunks(
                            accounted(read_chunks(src, CHUNK_SIZE, first=first)),
                            out_codec,
                            job.level,
                        ):
                            out.write(piece)
        except InvalidWalError:
            part.unlink(missing_ok=True)
            raise
        except DecompressionError as exc:  # corrupt, or a bomb: more than a WAL can hold
            part.unlink(missing_ok=True)
            raise InvalidWalError(str(exc)) from None
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise TransientError(f"cannot prepare {job.wal}: {exc}") from exc
        except Exception as exc:  # corrupt compressed input surfaces as codec errors
            part.unlink(missing_ok=True)
            raise InvalidWalError(f"cannot decompress {in_codec} content: {exc}") from exc

    sysid = seg_size = None
    try:
        if wal.kind in (WalKind.SEGMENT, WalKind.PARTIAL):
            hdr = validate_segment_header(
                head, wal, size, expected_seg_size=job.seg_size, system_identifier=job.sysid
            )
            sysid, seg_size = hdr.sysid, hdr.seg_size
        elif wal.kind is WalKind.HISTORY:
            validate_history(bytes(text))
        else:
            validate_backup_label(bytes(text))
    except InvalidWalError:
        part.unlink(missing_ok=True)
        raise
    os.rename(part, final)
    return job.model_copy(
        update={
            "payload": str(final),
            "codec": out_codec,
            "encrypted": False,
            "size": size,
            "checksum": hasher.hexdigest(),
            "checksum_algorithm": algorithm,
            "mtime": st.st_mtime,
            "sysid": sysid,
            "seg_size": seg_size,
            "prepare_seconds": time.perf_counter() - started,
        }
    )


def _plain_limit(kind: WalKind, seg_size: int | None) -> int:
    """The most uncompressed bytes a WAL of this kind may hold (the bound for decompression)."""
    if kind in (WalKind.HISTORY, WalKind.BACKUP):
        return MAX_TEXT_WAL
    return seg_size or MAX_SEG_SIZE


def _header_limit(head: bytes, kind: WalKind, limit: int) -> int:
    """Tighten the bound to the segment size the page header declares, when plausible
    (validate_segment_header judges the header itself once the stream is read)."""
    if kind not in (WalKind.SEGMENT, WalKind.PARTIAL):
        return limit
    declared = PageHeader.unpack(head).seg_size
    if 0 < declared <= limit and declared & (declared - 1) == 0:
        return declared
    return limit


def _link_or_copy(src, source: str, part: Path) -> None:
    """Hard-link the file we read at ``part``; copy it from the same descriptor when
    linking is impossible (another file system) or the name no longer points at the
    inode we read. A stale ``part`` is removed first, never opened: it may be a link."""
    part.unlink(missing_ok=True)
    opened = os.fstat(src.fileno())
    try:
        os.link(source, part, follow_symlinks=False)
    except OSError:
        pass
    else:
        linked = os.lstat(part)
        if (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino):
            return
        part.unlink()
    src.seek(0)
    with os.fdopen(
        open_private(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb"
    ) as out:  # never an existing file
        for chunk in read_chunks(src, CHUNK_SIZE):
            out.write(chunk)


def _account(piece: bytes, size: int, head: bytes, text: bytearray, kind: WalKind):
    if len(head) < LONG_HEADER_SIZE:
        head += piece[: LONG_HEADER_SIZE - len(head)]
    if kind in (WalKind.HISTORY, WalKind.BACKUP):
        if len(text) + len(piece) > MAX_TEXT_WAL:
            raise InvalidWalError(
                f"a {kind} file larger than {MAX_TEXT_WAL} bytes is not plausible"
            )
        text += piece
    return size + len(piece), head, text


def encrypted_payload(plain: Path) -> Path:
    """Where the encrypt step writes a spool payload's encrypted copy."""
    return plain.with_name(plain.name + ".gpg")


def encrypt(job: WalJob, server: ServerConfig) -> WalJob:
    """Encrypt the spool payload when the server asks for it; pass through otherwise."""
    if server.encryption != "gpg":
        return job
    from walq.crypto import encrypt_file  # gpg plumbing, only for servers that encrypt

    src = job.payload_path
    dst = encrypted_payload(src)
    if not src.exists() and dst.exists():
        # A redelivered hop whose first run finished (killed before its message was acked):
        # ``dst`` only ever appears whole, by the rename below.
        return job.model_copy(update={"payload": str(dst), "encrypted": True})
    part = dst.with_name(dst.name + ".part")
    part.unlink(missing_ok=True)  # a run killed inside gpg left it half written
    encrypt_file(src, part, server)
    make_private(part)  # gpg creates its output with the umask's mode
    os.replace(part, dst)
    src.unlink(missing_ok=True)
    return job.model_copy(update={"payload": str(dst), "encrypted": True})


def check_identity(catalog: Catalog, server: ServerConfig, job: WalJob) -> None:
    """Enforce (and on first sight learn) the cluster's system identifier and segment size."""
    if job.sysid is None:
        return
    known = adopt_identity(catalog, server, job.sysid, job.seg_size)
    if known is not None:
        raise InvalidWalError(
            f"system identifier {job.sysid} differs from this server's {known} (WAL from another cluster)"
        )


def stored_checksum(
    storage: Storage,
    obj: StoredObject,
    server: ServerConfig,
    record: WalRecord | None,
    algorithm: str | None,
) -> str:
    """The ``algorithm`` checksum of the uncompressed bytes of a stored object: the
    catalog's if it took the same one, else the backend's metadata if kept, else read back."""
    algorithm = algorithm_of(algorithm)
    if (
        record is not None
        and record.checksum
        and record.state is WalState.ARCHIVED
        and algorithm_of(record.checksum_algorithm) == algorithm
    ):
        return record.checksum
    if kept := storage.stored_checksum(obj, algorithm):
        return kept
    return Checksum(algorithm).of(plain_chunks(storage, obj, server)).hexdigest()


def source_checksum(job: WalJob, algorithm: str) -> str:
    """The ``algorithm`` checksum of the source's plain bytes, read again: how a copy
    prepared with one algorithm is compared with a row that recorded another."""
    limit = job.size if job.size is not None else MAX_SEG_SIZE
    fd, _ = _open_source(job.source)
    with os.fdopen(fd, "rb") as src:
        first = src.read(CHUNK_SIZE)
        codec = detect(first[:DETECT_BYTES])
        chunks = read_chunks(src, CHUNK_SIZE, first=first)
        try:
            plain = decompress_chunks(chunks, codec, limit) if codec else chunks
            return Checksum(algorithm).of(plain).hexdigest()
        except DecompressionError as exc:
            raise InvalidWalError(str(exc)) from None


def put_request(job: WalJob) -> PutRequest:
    """What storage is handed for this job (the one place a PutRequest is built)."""
    assert job.codec is not None and job.checksum is not None
    return PutRequest(
        name=job.wal,
        payload=job.payload_path,
        codec=job.codec,
        encrypted=job.encrypted,
        mtime=job.mtime or 0.0,
        checksum=job.checksum,
        checksum_algorithm=algorithm_of(job.checksum_algorithm),
    )


def stored_object(job: WalJob) -> StoredObject:
    """The object store recorded for this job (the one place a StoredObject is built from it)."""
    assert job.key is not None
    return StoredObject(job.wal, job.key, job.stored_size, job.stored_codec, job.stored_encrypted)


def store(storage: Storage, job: WalJob) -> WalJob:
    """Conditional write; the job comes back with where it went. ``adopted`` means an
    identical copy was already stored (a crash between store and commit), so nothing
    new was written."""
    started = time.perf_counter()
    try:
        obj, adopted = storage.put(put_request(job)), False
    except AlreadyStoredError:
        existing = storage.find(job.wal)
        if existing is None:
            raise StorageError(f"{job.wal} reported present but cannot be found") from None
        obj, adopted = existing, True
    return job.model_copy(
        update={
            "key": obj.key,
            "stored_size": obj.size,
            "stored_codec": obj.codec,
            "stored_encrypted": obj.encrypted,
            "adopted": adopted,
            "store_seconds": time.perf_counter() - started,
        }
    )


def archived_info(storage: Storage, server: ServerConfig, job: WalJob) -> ArchivedInfo:
    """What the catalog records of a stored job; an adopted copy must hold the same bytes
    (DuplicateWalError otherwise) and its own codec may predate a codec change."""
    assert job.checksum is not None and job.codec is not None
    obj = stored_object(job)
    algorithm = algorithm_of(job.checksum_algorithm)
    if job.adopted:
        existing = stored_checksum(storage, obj, server, None, algorithm)
        if existing != job.checksum:
            raise DuplicateWalError(
                f"{job.wal} is already stored with different content ({algorithm} {existing[:12]}… vs {job.checksum[:12]}…)"
            )
    # An adopted object may predate a codec change (S3 keys say which codec it is).
    codec = obj.codec if job.adopted and obj.codec else job.codec
    encrypted = obj.encrypted if job.adopted and obj.encrypted is not None else job.encrypted
    storage.validate_key(job.wal, obj.key)  # the catalog never records a key get-wal would refuse
    return ArchivedInfo(
        size=job.size or 0,
        stored_size=obj.size,
        codec=codec,
        encryption="gpg" if encrypted else "none",
        checksum=job.checksum,
        checksum_algorithm=algorithm,
        storage_key=obj.key,
        mtime=job.mtime or 0.0,
        prepare_seconds=job.prepare_seconds,
        store_seconds=job.store_seconds,
    )


def commit(
    catalog: Catalog, storage: Storage, server: ServerConfig, job: WalJob, *, fence: int | None
) -> None:
    """Record the WAL as archived (fenced), write Barman's xlogdb line, then remove the source."""
    assert job.codec is not None
    obj = stored_object(job)
    info = archived_info(storage, server, job)
    catalog.mark_archived(server.name, job.wal, info, fence)
    if not (job.adopted and storage.has_commit_record(job.wal)):
        storage.record_commit(obj, job.mtime or 0.0, job.codec, job.encrypted)
    remove_source(Path(job.source))
    job.payload_path.unlink(missing_ok=True)


def remove_source(path: Path) -> None:
    """Unlink the source and make the removal durable (only ever after a commit)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def handle_already_archived(
    catalog: Catalog, storage: Storage, server: ServerConfig, job: WalJob, record: WalRecord
) -> Outcome:
    """Barman's duplicate rules, decided by the checksum of the uncompressed bytes (taken
    again with the row's algorithm when the copy was prepared with another)."""
    job.payload_path.unlink(missing_ok=True)
    recorded = algorithm_of(record.checksum_algorithm)
    if recorded == algorithm_of(job.checksum_algorithm):
        checksum = job.checksum
    else:
        checksum = source_checksum(job, recorded)
    if record.checksum == checksum:
        if not storage.has_commit_record(job.wal):
            obj = storage.find(job.wal)
            if obj is not None:  # a crash between catalog commit and xlogdb append
                storage.record_commit(
                    obj,
                    record.mtime or job.mtime or 0.0,
                    record.codec or "none",
                    record.encryption == "gpg",
                )
        remove_source(Path(job.source))
        return Outcome(
            job.wal, "duplicate", "identical copy already archived; source removed", job.size or 0
        )
    target = move_to_errors(Path(job.source), server.errors_dir, "duplicate")
    return Outcome(
        job.wal, "rejected", f"different copy of an archived WAL moved to {target}", job.size or 0
    )
