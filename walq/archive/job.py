"""WalJob: the one shape a WAL has from scan to commit, in both modes.

The scan creates it (which WAL, where it lies, how to prepare it); ``prepare``
adds the payload and what it learned from the bytes; ``encrypt`` replaces the
payload; ``store`` adds where the object went; ``commit`` reads it all. Stages
add fields with ``model_copy(update=...)``; nothing is declared twice.

In fleet mode the job *is* the task argument (``job.wire()``), so a task
invented in Flower is validated here, once, with the config in the validation
context: the source must be this WAL in the server's incoming/ or streaming/
directory, the payload in this chain's spool, the key this WAL's key in this
archive, and every size, codec and checksum bounded. Echoes are clipped. The
embedded archiver builds the same model without that context (it found the
files itself), which skips only the config-dependent checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from walq.archive.identity import server_identity
from walq.catalog.base import Catalog
from walq.checksums import ChecksumName
from walq.codecs import CODEC_NAMES, get_codec
from walq.config import Config, ServerConfig
from walq.errors import ConfigError, WalqError, clip
from walq.storage import open_storage
from walq.wal import MAX_SEG_SIZE, MIN_SEG_SIZE, is_seg_size, parse_wal_name

MAX_STORED_SIZE = (
    2 * MAX_SEG_SIZE
)  # a stored payload: a segment, compressed or not, plus gpg's overhead


# -- field types -----------------------------------------------------------------------


def _wal_name(value: str) -> str:
    try:
        parse_wal_name(value)
    except WalqError as exc:
        raise ValueError(str(exc)) from None
    return value


def _plain_path(value: str) -> Path:
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts or os.path.normpath(value) != value:
        raise ValueError(f"{clip(value)} is not a normalized absolute path")
    return path


def _codec(value: str) -> str:
    if value not in CODEC_NAMES:
        raise ValueError(f"{clip(value)} is not a codec (allowed: {', '.join(CODEC_NAMES)})")
    return value


def _checksum(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("must be a checksum: 64 lowercase hex digits")
    return value


def _chain(value: str) -> str:
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("chain must be 32 lowercase hex digits")
    return value


def _seg_size(value: int | None) -> int | None:
    if value is not None and not is_seg_size(value):
        raise ValueError(f"must be a power of two from {MIN_SEG_SIZE} to {MAX_SEG_SIZE}")
    return value


WalName = Annotated[str, AfterValidator(_wal_name)]
CodecName = Annotated[str, AfterValidator(_codec)]
Checksum = Annotated[str, AfterValidator(_checksum)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
SegSize = Annotated[int | None, AfterValidator(_seg_size)]
SysId = Annotated[int, Field(strict=True, ge=0, lt=1 << 64)]


def _config(info: ValidationInfo) -> Config | None:
    """The config a task argument is checked against; None when walq built the job itself."""
    return info.context.get("config") if info.context else None


def _known_server(value: str, info: ValidationInfo) -> str:
    config = _config(info)
    if config is not None:
        try:
            config.server(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


ServerName = Annotated[str, AfterValidator(_known_server)]


# -- the job --------------------------------------------------------------------------------


class WalJob(BaseModel):
    """One WAL on its way from a source directory to storage and the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # -- the scan: which WAL, where it lies, how to prepare it
    server: ServerName
    wal: WalName
    source: str
    origin: Literal["incoming", "streaming"]
    chain: Annotated[str, AfterValidator(_chain)] | None = None  # fleet: this chain's spool dir
    claimed: Seconds | None = None  # fleet: when the claim's deadline was last pushed (epoch)
    spool_dir: str | None = Field(
        default=None, exclude=True
    )  # where prepare writes (never on the wire)
    level: int | None = Field(default=None, exclude=True)  # compression level (never on the wire)
    codec: CodecName | None = None  # asked for before prepare; what the payload holds after
    seg_size: SegSize = None  # expected before prepare; read from the header after
    sysid: SysId | None = None  # likewise: the cluster's system identifier
    # -- prepare (and encrypt)
    payload: str | None = None
    encrypted: bool = False
    size: Annotated[int, Field(strict=True, ge=0, le=MAX_SEG_SIZE)] | None = None
    checksum: Checksum | None = None
    # asked for before prepare (the server's ``checksum``); what took ``checksum`` after.
    # Absent from a task argument of an older walq: sha256 (walq.checksums.algorithm_of).
    checksum_algorithm: ChecksumName | None = None
    mtime: Seconds | None = None
    prepare_seconds: Seconds = 0.0
    # -- store
    key: str | None = None
    stored_size: Annotated[int, Field(strict=True, ge=0, le=MAX_STORED_SIZE)] = 0
    stored_codec: CodecName | None = (
        None  # what storage holds (an adopted copy may predate a codec change)
    )
    stored_encrypted: bool | None = None
    adopted: bool = False
    store_seconds: Seconds = 0.0
    already_archived: bool = False

    @model_validator(mode="after")
    def _paths_of_this_wal(self, info: ValidationInfo) -> WalJob:
        """Source, payload and key are this WAL's, in this server's directories.

        A task invented in Flower cannot make a worker read, delete or record
        anything else. Checked only against a config (task arguments)."""
        config = _config(info)
        if config is None:
            return self
        server = config.server(self.server)
        source = _plain_path(self.source)
        home = server.incoming_dir if self.origin == "incoming" else server.streaming_dir
        if source.parent != home or source.name != self.wal:
            raise ValueError(
                f"source {clip(self.source)} is not {self.wal} in {self.server}'s {self.origin} directory"
            )
        if self.payload is not None:
            payload = _plain_path(self.payload)
            if payload.parent != self.spool(config) or payload.name != self.payload_name():
                raise ValueError(
                    f"payload {clip(self.payload)} is outside this WAL's spool directory"
                )
        if self.key is not None:
            try:
                open_storage(server).validate_key(self.wal, self.key)
            except WalqError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def payload_path(self) -> Path:
        """The payload in the spool; only asked of a prepared job."""
        assert self.payload is not None, f"{self.wal} is not prepared"
        return Path(self.payload)

    def spool(self, config: Config) -> Path:
        """``{spool_dir}/{server}/{chain}`` (the server's spool itself for a chainless job)."""
        root = config.spool_dir / self.server
        return root / self.chain if self.chain else root

    def payload_name(self) -> str:
        """What prepare names the payload, plus ``.gpg`` once encrypted."""
        ext = get_codec(self.codec or "none").extension or ".none"
        return f"{self.wal}.{self.origin}{ext}" + (".gpg" if self.encrypted else "")

    def wire(self) -> dict[str, Any]:
        """The task argument: the fields a stage has set, as JSON."""
        return self.model_dump(mode="json", exclude_unset=True)


# -- a new job and how to prepare it -------------------------------------------------


def new_job(
    server: str,
    wal: str,
    source: str,
    origin: str,
    spool_dir: str | None = None,
    codec: str | None = None,
    level: int | None = None,
    seg_size: int | None = None,
    sysid: int | None = None,
    chain: str | None = None,
) -> WalJob:
    """A scanned WAL as a job (walq found the file itself: no task-argument context)."""
    fields = {
        "server": server,
        "wal": wal,
        "source": source,
        "origin": origin,
        "chain": chain,
        "spool_dir": spool_dir,
        "codec": codec,
        "level": level,
        "seg_size": seg_size,
        "sysid": sysid,
    }
    return WalJob.model_validate({k: v for k, v in fields.items() if v is not None})


def with_settings(
    job: WalJob,
    spool_dir: str | None,
    codec: str | None,
    level: int | None,
    seg_size: int | None,
    sysid: int | None,
    checksum_algorithm: str | None = None,
) -> WalJob:
    """How to prepare it: never taken from a task argument, always from config and catalog."""
    return job.model_copy(
        update={
            "checksum_algorithm": checksum_algorithm,
            "spool_dir": spool_dir,
            "codec": codec,
            "level": level,
            "seg_size": seg_size,
            "sysid": sysid,
        }
    )


def prepare_settings(
    config: Config, server: ServerConfig, catalog: Catalog, job: WalJob, spool: Path
) -> WalJob:
    """The job with this server's codec, level and expected identity, writing into ``spool``."""
    sysid, seg = server_identity(catalog, server)
    return with_settings(
        job, str(spool), server.compression, server.compression_level, seg, sysid, server.checksum
    )
