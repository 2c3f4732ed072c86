"""Fleet mode without Celery: what each task does, in plain functions.

The Celery tasks in ``workers/`` only validate their JSON arguments with the
models below, call one of these stage functions, and turn the exception type
into retry (TransientError) or park (PermanentError) — design.md's rule that
everything testable without a broker lives in ``walq/``.

A WAL's trip: ``scan_server`` claims it in the catalog and returns a job;
``compress`` → ``encrypt`` → ``store`` → ``commit`` pass spool paths and names,
never payloads. Every stage first pushes the claim's deadline forward, so a
scan re-enqueues a WAL only when its chain stalled (a lost message, a killed
host), never one that is progressing. Commit runs under the server's fenced
lock and the catalog refuses a stale token.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from walq.archiver import prepare_job
from walq.catalog import Catalog, WalRecord, WalState, open_catalog
from walq.codecs import CODEC_NAMES, get_codec
from walq.config import Config, ServerConfig
from walq.errors import (
    ConfigError,
    DuplicateWalError,
    FencedError,
    InvalidWalError,
    LockBusyError,
    PermanentError,
    StorageKeyError,
    TransientError,
    WalqError,
    clip,
)
from walq.fsutil import (
    incoming_mode,
    is_owned,
    make_owned_dir,
    makedirs_durable,
    remove_owned_tree,
    spool_leftover,
)
from walq.locks import RedisLock, ServerLock, open_lock
from walq.pipeline import (
    Outcome,
    Prepared,
    PrepareJob,
    check_identity,
    commit,
    encrypt,
    handle_already_archived,
    prepare,
    reject,
    store,
)
from walq.scan import Candidate, scan
from walq.storage import Storage, StoredObject, open_storage
from walq.wal import MAX_SEG_SIZE, MIN_SEG_SIZE, parse_wal_name

COMMIT_LOCK_WAIT = 10.0  # seconds a commit polls for the lock before requeueing itself


MAX_STORED_SIZE = 2 * MAX_SEG_SIZE  # a stored payload: a segment, compressed or not, plus gpg's overhead
MAX_ERRORS_SHOWN = 5  # a refusal names this many problems, then counts the rest
MAX_MESSAGE = 800  # characters: a refusal is stored in the result backend and logged


class TaskArgumentError(ConfigError):
    """A task was called with arguments that do not name a real server/WAL/path, or
    that storage contradicts (commit's check of the stored object).

    Nothing has been touched when this is raised; it is never retried. The message
    is bounded: it goes to the result backend and the worker log."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}…({len(message)} characters)"
        super().__init__(message)


# -- per-process state ---------------------------------------------------------


@dataclass
class Runtime:
    """Clients one worker process reuses: built lazily, after the fork, never before."""

    config: Config
    _catalog: Catalog | None = None
    _redis: Any = None
    _storages: dict[str, Storage] = field(default_factory=dict)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.config)
        return self._catalog

    @property
    def redis(self) -> Any:
        if self._redis is None and self.config.effective_lock_url:
            import redis

            self._redis = redis.Redis.from_url(
                self.config.effective_lock_url, socket_timeout=10, socket_connect_timeout=10,
                health_check_interval=30,
            )
        return self._redis

    def storage(self, server: ServerConfig) -> Storage:
        if server.name not in self._storages:
            self._storages[server.name] = open_storage(server)
        return self._storages[server.name]

    def lock(self, server: str, purpose: str) -> ServerLock:
        return open_lock(self.config, server, purpose, client=self.redis)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
        self._catalog, self._redis, self._storages = None, None, {}


# -- task arguments -------------------------------------------------------------


def _config(info: ValidationInfo) -> Config:
    assert info.context and "config" in info.context, "validate with context={'config': config}"
    return info.context["config"]


def _wal_name(value: str) -> str:
    try:
        parse_wal_name(value)
    except WalqError as exc:
        raise ValueError(str(exc)) from None
    return value


WalName = Annotated[str, AfterValidator(_wal_name)]


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
        raise ValueError("must be a sha256: 64 lowercase hex digits")
    return value


def _seg_size(value: int | None) -> int | None:
    if value is not None and (value & (value - 1) or not MIN_SEG_SIZE <= value <= MAX_SEG_SIZE):
        raise ValueError(f"must be a power of two from {MIN_SEG_SIZE} to {MAX_SEG_SIZE}")
    return value


CodecName = Annotated[str, AfterValidator(_codec)]
Sha256 = Annotated[str, AfterValidator(_checksum)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ServerArgs(BaseModel):
    """``walq.scan_server`` / ``walq.retry_failed``: a configured server."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    server: str

    @field_validator("server")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        try:
            _config(info).server(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class WalArgs(ServerArgs):
    """``walq.retry_wal``: a configured server and a WAL name."""

    wal: WalName


class StageArgs(WalArgs):
    """What every stage receives: the WAL, its source file and the chain's spool.

    The source must sit directly in the server's incoming/ or streaming/ dir under
    its own name, and the spool under ``{spool_dir}/{server}/{chain}``: a task
    invented in Flower cannot make a worker read or delete anything else."""

    source: str
    origin: Literal["incoming", "streaming"]
    chain: str

    @field_validator("chain")
    @classmethod
    def _hex(cls, value: str) -> str:
        if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("chain must be 32 lowercase hex digits")
        return value

    @model_validator(mode="after")
    def _inside_server_dirs(self, info: ValidationInfo) -> StageArgs:
        server = _config(info).server(self.server)
        source = _plain_path(self.source)
        home = server.incoming_dir if self.origin == "incoming" else server.streaming_dir
        if source.parent != home or source.name != self.wal:
            raise ValueError(f"source {clip(self.source)} is not {self.wal} in {self.server}'s {self.origin} directory")
        return self

    def spool(self, config: Config) -> Path:
        return config.spool_dir / self.server / self.chain  # type: ignore[operator]


class PreparedArgs(StageArgs):
    """compress/encrypt output: the Prepared fields; the payload must be in the chain's spool."""

    payload: str
    codec: CodecName
    encrypted: bool
    size: Annotated[int, Field(strict=True, ge=0, le=MAX_SEG_SIZE)]
    checksum: Sha256
    mtime: Seconds
    sysid: Annotated[int, Field(strict=True, ge=0, lt=1 << 64)] | None = None
    seg_size: Annotated[int | None, AfterValidator(_seg_size)] = None
    prepare_seconds: Seconds = 0.0

    @model_validator(mode="after")
    def _payload_in_spool(self, info: ValidationInfo) -> PreparedArgs:
        """The payload is the file compress/encrypt wrote for this WAL in this chain's spool."""
        payload = _plain_path(self.payload)
        if payload.parent != self.spool(_config(info)) or payload.name != self.payload_name():
            raise ValueError(f"payload {clip(self.payload)} is outside this WAL's spool directory")
        return self

    def payload_name(self) -> str:
        """What compress names it (``pipeline.prepare``), plus ``.gpg`` once encrypted."""
        ext = get_codec(self.codec).extension or ".none"
        return f"{self.wal}.{self.origin}{ext}" + (".gpg" if self.encrypted else "")

    def prepared(self) -> Prepared:
        return Prepared(
            server=self.server, name=self.wal, source=self.source, origin=self.origin,
            payload=self.payload, codec=self.codec, encrypted=self.encrypted, size=self.size,
            checksum=self.checksum, mtime=self.mtime, sysid=self.sysid, seg_size=self.seg_size,
            prepare_seconds=self.prepare_seconds,
        )


class StoredArgs(PreparedArgs):
    """store output: where the payload went, and whether an identical copy was adopted."""

    key: str | None = None
    stored_size: Annotated[int, Field(strict=True, ge=0, le=MAX_STORED_SIZE)] = 0
    stored_codec: CodecName | None = None  # what storage holds (an adopted copy may predate a codec change)
    stored_encrypted: bool | None = None
    adopted: bool = False
    store_seconds: Seconds = 0.0
    already_archived: bool = False

    @model_validator(mode="after")
    def _key_of_this_wal(self, info: ValidationInfo) -> StoredArgs:
        """The key is where this WAL lives in this server's archive (the storage
        backend's own validate_key, which get-wal and verify use too)."""
        if self.key is not None:
            storage = open_storage(_config(info).server(self.server))
            try:
                storage.validate_key(self.wal, self.key)
            except WalqError as exc:
                raise ValueError(str(exc)) from None
        return self


def parse_args(model: type[BaseModel], config: Config, data: Any) -> Any:
    """Validate a task's JSON argument; one clear line on failure, nothing touched."""
    if not isinstance(data, dict):
        raise TaskArgumentError(f"refused: {model.__name__} expects a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data, context={"config": config})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        parts = []
        for err in errors[:MAX_ERRORS_SHOWN]:
            loc = ".".join(_loc_part(p) for p in err["loc"]) or "arguments"
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {'unknown argument' if err['type'] == 'extra_forbidden' else msg}")
        if len(errors) > MAX_ERRORS_SHOWN:
            parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
        raise TaskArgumentError("refused: " + "; ".join(parts)) from None


def _loc_part(part: str | int) -> str:
    """A field name as it is; an argument name someone made up, clipped."""
    text = str(part)
    return text if len(text) <= 40 and text.isascii() and text.replace("_", "a").isalnum() else clip(text)


def _dump(args: BaseModel, **update: Any) -> dict[str, Any]:
    return {**args.model_dump(mode="json"), **update}


# -- fault injection for tests ---------------------------------------------------


def fault_point(stage: str) -> None:
    """Tests only (WALQ_FAULT_DIR): freeze this process at ``stage`` once, with a real SIGSTOP.

    A real part cannot be told "stop exactly between store and commit", so the
    first process reaching a stage named by a file in the fault directory writes
    its pid and stops itself; the test then SIGKILLs or SIGCONTs that pid."""
    fault_dir = os.environ.get("WALQ_FAULT_DIR")
    if not fault_dir:
        return
    trigger = Path(fault_dir) / stage
    taken = Path(fault_dir) / f"{stage}.taken"
    try:
        os.rename(trigger, taken)  # exactly one process wins
    except FileNotFoundError:
        return
    tmp = Path(fault_dir) / f".{stage}.pid"
    tmp.write_text(str(os.getpid()))
    os.rename(tmp, Path(fault_dir) / f"{stage}.pid")
    os.kill(os.getpid(), signal.SIGSTOP)


# -- scan ---------------------------------------------------------------------------


def new_job(config: Config, server: ServerConfig, wal: Candidate) -> dict[str, Any]:
    return {
        "server": server.name, "wal": wal.name, "source": str(wal.path), "origin": wal.origin,
        "chain": uuid.uuid4().hex,
    }


def scan_server(rt: Runtime, server_name: str) -> list[dict[str, Any]]:
    """List the server's directories, claim new or stalled WALs, return one job each.

    One scan per server at a time (a Redis lock); a second beat's scan finds it
    busy and returns nothing. Claims are atomic in the catalog, so even two scans
    that did run at once could not enqueue one WAL twice."""
    config = rt.config
    server = parse_args(ServerArgs, config, {"server": server_name})
    server = config.server(server.server)
    lock = rt.lock(server.name, "scan")
    try:
        lock.acquire()
    except LockBusyError:
        return []
    try:
        _ensure_dirs(config, server)
        _sweep_spool(config, server)
        if server.conninfo and not server.system_identifier and not rt.catalog.get_meta(server.name, "system_identifier"):
            from walq.postgres.client import learn_identity

            learn_identity(rt.catalog, server)  # until known: the first WAL is checked too
        batch = scan(server)
        jobs, leftovers = [], []
        for wal in batch.wals:
            if rt.catalog.claim(server.name, wal.name, str(wal.path), config.claim_timeout):
                jobs.append(new_job(config, server, wal))
                continue
            record = rt.catalog.get(server.name, wal.name)
            if record is not None and record.state is WalState.ARCHIVED:
                leftovers.append(wal)
        if leftovers:
            settle_leftovers(rt, server, leftovers)
        return jobs
    finally:
        lock.release()


def _ensure_dirs(config: Config, server: ServerConfig) -> None:
    """The source, errors and spool dirs (storage is the store stage's business: an
    unwritable archive must fail that WAL's store, visibly, not every scan)."""
    for key, path in (("incoming_dir", server.incoming_dir), ("streaming_dir", server.streaming_dir),
                      ("errors_dir", server.errors_dir), ("spool_dir", config.spool_dir)):
        try:
            makedirs_durable(path, incoming_mode() if key == "incoming_dir" else None)  # type: ignore[arg-type]
        except OSError as exc:
            raise TransientError(f"servers.{server.name}.{key}: cannot create {path}: {exc.strerror}") from None
    try:
        make_owned_dir(config.spool_dir / server.name, spool_leftover)  # type: ignore[operator]
    except OSError as exc:
        raise TransientError(f"spool_dir: cannot create {config.spool_dir}/{server.name}: {exc.strerror}") from None


def _sweep_spool(config: Config, server: ServerConfig) -> None:
    """Remove chain spool dirs nobody touched for two claim timeouts (killed chains).

    Only inside the server's spool that walq created and marked, and only chain
    directories carrying walq's marker: anything else there is reported, never removed."""
    root = config.spool_dir / server.name  # type: ignore[operator]
    if not is_owned(root):
        if root.exists() or root.is_symlink():
            print(f"walq: warning: {root} was not created by walq; its spool is not swept", file=sys.stderr)
        return
    cutoff = time.time() - 2 * config.claim_timeout
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                remove_owned_tree(entry.path)
        except FileNotFoundError:
            continue


def settle_leftovers(rt: Runtime, server: ServerConfig, wals: list[Candidate]) -> None:
    """Sources of already-archived WALs (a crash after the catalog commit, or a second
    copy): checksum and drop, or park if different — under the commit lock, so the
    xlogdb line is never written twice."""
    lock = rt.lock(server.name, "commit")
    try:
        _acquire(lock, COMMIT_LOCK_WAIT)
    except LockBusyError:
        return
    try:
        for wal in wals:
            record = rt.catalog.get(server.name, wal.name)
            if record is not None and record.state is WalState.ARCHIVED:
                settle_source(rt, server, wal, record)
    finally:
        lock.release()


def settle_source(rt: Runtime, server: ServerConfig, wal: Candidate, record: WalRecord) -> Outcome | None:
    """A source of an already-archived WAL, judged by its own checksum (prepared here
    from the file, never taken from a task's arguments): dropped if identical, parked
    if not. None when the source is already gone. The caller holds the commit lock."""
    if not wal.path.exists():
        return None
    job = prepare_job(rt.config, server, rt.catalog, wal)
    job = PrepareJob(**{**_job_dict(job), "spool_dir": str(rt.config.spool_dir / server.name / uuid.uuid4().hex)})  # type: ignore[operator]
    try:
        prepared = prepare(job)
    except InvalidWalError as exc:
        return reject(rt.catalog, server, wal.name, str(wal.path), str(exc))
    try:
        return handle_already_archived(rt.catalog, rt.storage(server), server, prepared, record)
    finally:
        remove_owned_tree(job.spool_dir)


def _job_dict(job: PrepareJob) -> dict[str, Any]:
    return {f: getattr(job, f) for f in job.__slots__}  # type: ignore[attr-defined]


def _acquire(lock: ServerLock, wait: float) -> int:
    if isinstance(lock, RedisLock):
        return lock.acquire_within(wait)
    return lock.acquire()


# -- the stages ------------------------------------------------------------------------


def compress_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """Validate, checksum and compress the source into the chain's spool (CPU)."""
    args: StageArgs = parse_args(StageArgs, rt.config, data)
    server = rt.config.server(args.server)
    rt.catalog.extend(server.name, args.wal, rt.config.claim_timeout)
    candidate = Candidate(args.wal, Path(args.source), args.origin, parse_wal_name(args.wal).kind)
    job = prepare_job(rt.config, server, rt.catalog, candidate)
    job = PrepareJob(**{**_job_dict(job), "spool_dir": str(args.spool(rt.config))})
    if not Path(args.source).exists():
        record = rt.catalog.get(server.name, args.wal)
        if record is not None and record.state is WalState.ARCHIVED:
            raise AlreadyDone(f"{args.wal} is already archived and its source is gone")
    prepared = prepare(job)
    fault_point("compress")
    return _dump(args, **_prepared_fields(prepared))


def encrypt_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """Encrypt the spool payload when the server asks for it (CPU)."""
    args: PreparedArgs = parse_args(PreparedArgs, rt.config, data)
    server = rt.config.server(args.server)
    _payload_present(args)
    rt.catalog.extend(server.name, args.wal, rt.config.claim_timeout)
    prepared = encrypt(args.prepared(), server)
    fault_point("encrypt")
    return _dump(args, **_prepared_fields(prepared))


def store_stage(rt: Runtime, data: Any) -> dict[str, Any]:
    """Conditional write to storage; an identical copy already there is adopted (I/O)."""
    args: PreparedArgs = parse_args(PreparedArgs, rt.config, data)
    server = rt.config.server(args.server)
    rt.catalog.extend(server.name, args.wal, rt.config.claim_timeout)
    record = rt.catalog.get(server.name, args.wal)
    if record is not None and record.state is WalState.ARCHIVED:
        return _dump(args, already_archived=True)  # commit drops or parks the copy
    _require_claim(args, record)
    _payload_present(args)
    prepared = args.prepared()
    check_identity(rt.catalog, server, prepared)
    started = time.perf_counter()
    obj, adopted = store(rt.storage(server), prepared)
    fault_point("store")
    return _dump(args, key=obj.key, stored_size=obj.size, stored_codec=obj.codec,
                 stored_encrypted=obj.encrypted, adopted=adopted,
                 store_seconds=time.perf_counter() - started)


def commit_stage(rt: Runtime, data: Any) -> Outcome:
    """Under the fenced lock: record the WAL as archived, xlogdb line, remove the source."""
    args: StoredArgs = parse_args(StoredArgs, rt.config, data)
    server = rt.config.server(args.server)
    storage = rt.storage(server)
    prepared = args.prepared()
    lock = rt.lock(server.name, "commit")
    token = _acquire(lock, COMMIT_LOCK_WAIT)
    try:
        record = rt.catalog.get(server.name, args.wal)
        if record is not None and record.state is WalState.ARCHIVED:
            Path(args.payload).unlink(missing_ok=True)
            candidate = Candidate(args.wal, Path(args.source), args.origin, parse_wal_name(args.wal).kind)
            outcome = settle_source(rt, server, candidate, record) or Outcome(
                args.wal, "duplicate", "already archived; its source is already gone", args.size)
        elif record is not None and record.state is WalState.FAILED:
            raise AlreadyDone(f"{args.wal} was marked failed meanwhile; an operator retry re-drives it")
        else:
            _require_claim(args, record)
            if args.key is None:
                raise TransientError(f"{args.wal}: nothing stored yet")
            obj = verify_stored(storage, args)
            lock.extend()  # still ours? (the fence below is what makes it safe anyway)
            fault_point("commit")
            commit(rt.catalog, storage, server, prepared, obj, adopted=args.adopted, fence=token,
                   store_seconds=args.store_seconds)
            outcome = Outcome(args.wal, "archived", "recovered" if args.adopted else "", args.size, obj.size)
    finally:
        lock.release()
    remove_owned_tree(args.spool(rt.config))
    return outcome


def _require_claim(args: StageArgs, record: WalRecord | None) -> None:
    """Every chain starts from a scan's claim: a store or commit for a WAL with no
    catalog row was made up, and is refused before it writes anything."""
    if record is None:
        raise TaskArgumentError(f"refused: {args.server}/{args.wal} was never claimed by a scan; nothing was touched")


def verify_stored(storage: Storage, args: StoredArgs) -> StoredObject:
    """Before a source is removed: storage holds this WAL at the task's key, with the
    task's size, and (unless adopted, which commit checks by checksum) it is the
    object this chain wrote. Otherwise refuse, having touched nothing."""
    assert args.key is not None
    found = storage.find(args.wal)
    if found is None or found.key != args.key or found.size != args.stored_size:
        held = "nothing" if found is None else f"{clip(found.key)} ({found.size} bytes)"
        raise TaskArgumentError(
            f"refused: {args.server}/{args.wal}: storage holds {held}, not {clip(args.key)} "
            f"({args.stored_size} bytes); nothing was touched"
        )
    try:
        storage.validate_key(args.wal, found.key)  # local: it resolves inside wals/ too
    except StorageKeyError as exc:
        raise TaskArgumentError(f"refused: {exc}; nothing was touched") from None
    if found.codec is not None and (found.codec, found.encrypted) != (args.stored_codec, args.stored_encrypted):
        raise TaskArgumentError(f"refused: {args.server}/{args.wal}: {clip(found.key)} is not a "
                                f"{args.stored_codec} object; nothing was touched")
    _payload_present(args)  # a swept spool: a newer chain owns the WAL (it will adopt this object)
    if not args.adopted and not storage.written_from(found, Path(args.payload), args.checksum):
        raise TaskArgumentError(
            f"refused: {args.server}/{args.wal}: {clip(found.key)} was not written from this chain's "
            f"payload; nothing was touched"
        )
    return StoredObject(args.wal, found.key, found.size, args.stored_codec, args.stored_encrypted)


def _payload_present(args: PreparedArgs) -> None:
    """A chain whose spool was swept (it stalled for two claim timeouts) has been
    superseded by a re-enqueued one: stop it quietly rather than fail the WAL."""
    if not Path(args.payload).exists():
        raise AlreadyDone(f"{args.wal}: spool payload {args.payload} is gone; a newer chain owns this WAL")


def _prepared_fields(prepared: Prepared) -> dict[str, Any]:
    data = prepared.to_dict()
    for key in ("server", "name", "source", "origin"):
        data.pop(key)
    return data


class AlreadyDone(WalqError):
    """The chain has nothing left to do (the WAL was settled by another chain)."""


# -- failure handling (called by the tasks) ---------------------------------------------


def park(rt: Runtime, data: Any, exc: BaseException) -> Outcome:
    """A permanent failure: bad content goes to errors/, anything else is marked failed."""
    args = _loose_args(rt.config, data)
    if args is None:
        return Outcome("?", "failed", str(exc))
    server = rt.config.server(args.server)
    remove_owned_tree(args.spool(rt.config))
    if isinstance(exc, DuplicateWalError):
        return reject(rt.catalog, server, args.wal, args.source, str(exc), "duplicate")
    if isinstance(exc, InvalidWalError):
        return reject(rt.catalog, server, args.wal, args.source, str(exc), "error")
    rt.catalog.mark_failed(server.name, args.wal, str(exc), args.source)
    return Outcome(args.wal, "failed", str(exc))


def give_up(rt: Runtime, data: Any, exc: BaseException, attempts: int) -> Outcome:
    """Transient errors that outlasted every retry: mark the WAL failed with the reason."""
    return park(rt, data, PermanentError(f"gave up after {attempts} attempts: {exc}"))


def _loose_args(config: Config, data: Any) -> StageArgs | None:
    try:
        base = {k: data[k] for k in ("server", "wal", "source", "origin", "chain")}
        return parse_args(StageArgs, config, base)
    except (KeyError, TypeError, TaskArgumentError):
        return None


def is_transient(exc: BaseException) -> bool:
    """The task-side decision: retry (True) or park (False)."""
    # A fenced commit is not the WAL's fault: the next attempt takes a fresh token.
    return isinstance(exc, (TransientError, OSError, FencedError)) or not isinstance(exc, WalqError)


# -- operator retries ------------------------------------------------------------------


def retry_wal(rt: Runtime, server_name: str, wal: str) -> dict[str, Any] | None:
    """Make one failed WAL claimable again and return its job (None if nothing to do)."""
    from walq.retry import reset_failed

    args: WalArgs = parse_args(WalArgs, rt.config, {"server": server_name, "wal": wal})
    reset_failed(rt.config, args.server, [args.wal])
    return _claim_existing(rt, args.server, args.wal)


def retry_failed(rt: Runtime, server_name: str) -> list[dict[str, Any]]:
    """Every failed WAL of a server back in play; returns the jobs to enqueue."""
    from walq.retry import reset_failed

    args: ServerArgs = parse_args(ServerArgs, rt.config, {"server": server_name})
    jobs = []
    for name in reset_failed(rt.config, args.server, None):
        job = _claim_existing(rt, args.server, name)
        if job is not None:
            jobs.append(job)
    return jobs


def _claim_existing(rt: Runtime, server_name: str, wal: str) -> dict[str, Any] | None:
    server = rt.config.server(server_name)
    for origin, directory in (("streaming", server.streaming_dir), ("incoming", server.incoming_dir)):
        path = directory / wal  # type: ignore[operator]
        if path.is_file() and not path.is_symlink():
            if not rt.catalog.claim(server.name, wal, str(path), rt.config.claim_timeout):
                return None
            return new_job(rt.config, server, Candidate(wal, path, origin, parse_wal_name(wal).kind))
    return None
